"""Who may push readings: device tokens (stored hashed), their scopes, rate limits, and the
de-duplication of re-sent readings.

A *devices file* lists one entry per token. A token belongs to one device or to a gateway
writing several; it may write only the devices (and, if given, intersections) its patterns
match. The token itself is shown once, when made (``simpang devices token``); the file keeps
its SHA-256 (tokens are 256 random bits, so a fast hash is enough and a slow one would only
cost every request).

>>> token, entry = issue_token("lembuswana-loops", devices=["smd-lembuswana-*"])
>>> registry = TokenRegistry(DevicesFile(tokens=[entry]))
>>> grant = registry.authenticate(token)
>>> grant is not None and grant.may_write("smd-lembuswana-n1-loop", "smd-lembuswana")
True
>>> registry.authenticate("not-a-token") is None
True
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

TOKEN_PREFIX = "spg_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class DeviceToken(BaseModel):
    """One entry of the devices file."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Who holds the token (a device or a gateway).")
    token_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    devices: list[str] = Field(min_length=1, description=(
        "Device ids it may write; shell-style patterns (`smd-lembuswana-*`)."))
    intersections: list[str] | None = Field(None, description=(
        "If given, only devices at these intersections (patterns)."))
    max_readings_per_s: float = Field(200.0, gt=0, description="Sustained rate.")
    burst_readings: int = Field(2000, gt=0, description="Readings it may send at once.")

    def may_write(self, device_id: str, intersection: str) -> bool:
        if not any(fnmatchcase(device_id, pattern) for pattern in self.devices):
            return False
        return self.intersections is None or any(
            fnmatchcase(intersection, pattern) for pattern in self.intersections)


class DevicesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tokens: list[DeviceToken] = Field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> DevicesFile:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        return cls.model_validate(loaded)


def issue_token(name: str, *, devices: list[str], intersections: list[str] | None = None,
                max_readings_per_s: float = 200.0, burst_readings: int = 2000
                ) -> tuple[str, DeviceToken]:
    """A new token (shown once) and the entry that goes into the devices file."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    return token, DeviceToken(name=name, token_sha256=hash_token(token), devices=devices,
                              intersections=intersections,
                              max_readings_per_s=max_readings_per_s,
                              burst_readings=burst_readings)


class TokenRegistry:
    def __init__(self, devices: DevicesFile) -> None:
        self._by_hash = {entry.token_sha256: entry for entry in devices.tokens}
        if len(self._by_hash) != len(devices.tokens):
            raise ValueError("two entries of the devices file have the same token")

    def __len__(self) -> int:
        return len(self._by_hash)

    def authenticate(self, token: str) -> DeviceToken | None:
        digest = hash_token(token)
        entry = self._by_hash.get(digest)
        # The lookup is by digest; compare again in constant time for good measure.
        if entry is not None and hmac.compare_digest(entry.token_sha256, digest):
            return entry
        return None


@dataclass
class RateLimiter:
    """Token buckets, one per key: ``rate`` readings per second, up to ``burst`` at once.

    >>> limiter = RateLimiter()
    >>> limiter.take("gw", 150, rate=100, burst=200, now_s=0.0)
    0.0
    >>> limiter.take("gw", 100, rate=100, burst=200, now_s=0.0)  # 50 left: wait 0.5 s
    0.5
    >>> limiter.take("gw", 100, rate=100, burst=200, now_s=0.5)
    0.0
    """

    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)

    def take(self, key: str, cost: int, *, rate: float, burst: int, now_s: float) -> float:
        """Take ``cost`` readings' worth; 0 when allowed, else the seconds to wait."""
        level, last = self._buckets.get(key, (float(burst), now_s))
        level = min(float(burst), level + (now_s - last) * rate)
        if cost > burst:
            self._buckets[key] = (level, now_s)
            return max(1.0, (cost - level) / rate)
        if cost > level:
            self._buckets[key] = (level, now_s)
            return (cost - level) / rate
        self._buckets[key] = (level - cost, now_s)
        return 0.0


@dataclass
class _DeviceSeqs:
    known: set[int] = field(default_factory=set)
    order: deque[int] = field(default_factory=deque)
    forgotten_up_to: int = -1


@dataclass
class SeqDeduplicator:
    """Remembers the ``seq`` numbers of each device's recent readings.

    A reading whose (device, seq) was accepted before is a re-send. Each device keeps its
    last ``per_device`` sequence numbers; a seq at or below the highest one forgotten counts
    as a re-send too (devices count upwards). ``max_devices`` devices at most, the least
    recently heard forgotten first.

    >>> seen = SeqDeduplicator(per_device=3)
    >>> [seen.first_time("d", s) for s in (1, 2, 2, 3, 4, 5, 1)]
    [True, True, False, True, True, True, False]
    """

    per_device: int = 10_000
    max_devices: int = 100_000
    _seen: OrderedDict[str, _DeviceSeqs] = field(default_factory=OrderedDict)

    def first_time(self, device_id: str, seq: int) -> bool:
        entry = self._seen.get(device_id)
        if entry is None:
            entry = self._seen[device_id] = _DeviceSeqs()
            if len(self._seen) > self.max_devices:
                self._seen.popitem(last=False)
        else:
            self._seen.move_to_end(device_id)
        if seq in entry.known or seq <= entry.forgotten_up_to:
            return False
        entry.known.add(seq)
        entry.order.append(seq)
        if len(entry.order) > self.per_device:
            oldest = entry.order.popleft()
            entry.known.discard(oldest)
            entry.forgotten_up_to = max(entry.forgotten_up_to, oldest)
        return True

    def forget(self, device_id: str, seq: int) -> None:
        """Undo ``first_time`` for a reading that could not be stored after all."""
        entry = self._seen.get(device_id)
        if entry is not None and seq in entry.known:
            entry.known.discard(seq)
            entry.order.remove(seq)
