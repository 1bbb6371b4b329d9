"""Validation and normalisation of raw sensor messages, shared by every ingest path.

A message is one reading (JSON object) or a batch (JSON array). Each reading is judged on
its own: good ones are resolved to their lane through the site file, bad ones become dead
letters whose reason names the JSON path of every problem.

>>> from simpang.site_file import load_site
>>> from simpang.settings import DEMO_SITE_FILE
>>> validator = ReadingValidator(load_site(DEMO_SITE_FILE), max_future_skew_s=60)
>>> result = validator.validate(b'[{"device_id": "nope", "kind": "loop"}]', source="doc",
...                             message_id="m1", received_at=datetime.now(UTC))
>>> [(d.reason_code.value, d.reason) for d in result.dead_letters]
[('invalid', '[0].ts: Field required; [0].interval_s: Field required')]
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from simpang.records import DeadLetter, NormalisedReading, RejectReason, SensorReading
from simpang.site import Site
from simpang.site_file import format_location

MAX_MESSAGE_BYTES = 1024 * 1024
MAX_READINGS_PER_MESSAGE = 10_000


@dataclass
class IngestResult:
    by_intersection: dict[str, list[NormalisedReading]] = field(default_factory=dict)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    readings_in: int = 0

    @property
    def accepted(self) -> int:
        return sum(len(readings) for readings in self.by_intersection.values())


class ReadingValidator:
    def __init__(self, site: Site, *, max_future_skew_s: float) -> None:
        self.site = site
        self.locations = site.sensor_locations()
        self.max_future_skew = timedelta(seconds=max_future_skew_s)

    def validate(
        self, raw: bytes, *, source: str, message_id: str, received_at: datetime
    ) -> IngestResult:
        result = IngestResult()

        def reject(
            index: int | None, code: RejectReason, reason: str, payload: bytes | str,
            device_id: str | None = None,
        ) -> None:
            suffix = "" if index is None else f":{index}"
            result.dead_letters.append(
                DeadLetter.of(
                    id=f"{message_id}{suffix}", source=source, reason_code=code, reason=reason,
                    raw=payload, device_id=device_id, ts=received_at,
                )
            )

        if len(raw) > MAX_MESSAGE_BYTES:
            result.readings_in = 1
            reject(None, RejectReason.TOO_LARGE,
                   f"message of {len(raw)} bytes exceeds {MAX_MESSAGE_BYTES}", raw)
            return result
        try:
            document = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            result.readings_in = 1
            reject(None, RejectReason.MALFORMED, f"not valid JSON: {exc}", raw)
            return result
        is_batch = isinstance(document, list)
        items: list[Any] = document if is_batch else [document]
        if not is_batch and not isinstance(document, dict):
            result.readings_in = 1
            reject(None, RejectReason.MALFORMED,
                   "expected a reading (JSON object) or a batch (JSON array)", raw)
            return result
        if len(items) > MAX_READINGS_PER_MESSAGE:
            result.readings_in = len(items)
            reject(None, RejectReason.TOO_LARGE,
                   f"batch of {len(items)} readings exceeds {MAX_READINGS_PER_MESSAGE}", raw)
            return result
        result.readings_in = len(items)
        grouped: dict[str, list[NormalisedReading]] = defaultdict(list)
        for index, item in enumerate(items):
            position = index if is_batch else None
            outcome = self._one(item, () if position is None else (position,), received_at)
            if isinstance(outcome, NormalisedReading):
                grouped[outcome.intersection].append(outcome)
            else:
                code, reason = outcome
                device = item.get("device_id") if isinstance(item, dict) else None
                reject(position, code, reason, _dump(item),
                       device if isinstance(device, str) else None)
        result.by_intersection = dict(grouped)
        return result

    def _one(
        self, item: Any, at: tuple[int, ...], received_at: datetime
    ) -> NormalisedReading | tuple[RejectReason, str]:
        def path(*loc: int | str) -> str:
            return format_location((*at, *loc))

        if not isinstance(item, dict):
            return RejectReason.MALFORMED, f"{path()}: expected a JSON object"
        if item.get("v", 1) != 1:
            return (RejectReason.UNSUPPORTED_VERSION,
                    f"{path('v')}: version {item.get('v')!r} is not supported (expected 1)")
        try:
            reading = SensorReading.model_validate(item)
        except ValidationError as exc:
            return RejectReason.INVALID, "; ".join(
                f"{path(*err['loc'])}: {err['msg'].removeprefix('Value error, ')}"
                for err in exc.errors()
            )
        location = self.locations.get(reading.device_id)
        if location is None:
            return (RejectReason.UNKNOWN_DEVICE,
                    f"{path('device_id')}: {reading.device_id!r} is not in site {self.site.id!r}")
        claimed = {
            "intersection": reading.intersection, "approach": reading.approach, "lane": reading.lane
        }
        for name, value in claimed.items():
            expected = getattr(location, name)
            if value is not None and value != expected:
                return (RejectReason.LOCATION_MISMATCH,
                        f"{path(name)}: {value!r} but device {reading.device_id!r} is at "
                        f"{name} {expected!r} in the site file")
        if reading.kind != location.kind:
            return (RejectReason.INVALID,
                    f"{path('kind')}: {reading.kind!r} but device {reading.device_id!r} is a "
                    f"{location.kind!r} in the site file")
        if reading.ts - received_at > self.max_future_skew:
            return (RejectReason.FUTURE_TIMESTAMP,
                    f"{path('ts')}: {reading.ts.isoformat()} is more than "
                    f"{self.max_future_skew.total_seconds():g} s ahead of the receiver's clock "
                    f"({received_at.astimezone(UTC).isoformat()})")
        return NormalisedReading(
            intersection=location.intersection,
            approach=location.approach,
            lane=location.lane,
            device_id=reading.device_id,
            ts_ms=round(reading.ts.timestamp() * 1000),
            interval_s=reading.interval_s,
            counts=reading.class_counts(),
            occupancy_pct=reading.occupancy_pct,
            speed_kmh=reading.speed_kmh,
        )


def _dump(item: Any) -> str:
    try:
        return json.dumps(item, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(item)
