"""Deliberately broken device messages, so the dead-letter path is exercised wherever data is
made up (the field-device emulator, the SUMO demo): a truncated JSON message, an unregistered
device, an occupancy of 140 %, a reading with no timestamp, a negative count.

>>> import json
>>> clean = DeviceMessage("j1", json.dumps([{"device_id": "a", "ts": "t"}]).encode(), 1)
>>> FaultInjector(fraction=0.0, seed=1).apply([clean]) == [clean]
True
>>> broken = FaultInjector(fraction=1.0, seed=1).apply([clean])
>>> [m.readings for m in broken]
[1]
>>> injector = FaultInjector(fraction=1.0, seed=1)
>>> _ = injector.apply([clean, clean])
>>> injector.injected
2
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

TRUNCATED_PAYLOAD = b'{"device_id": "'
UNREGISTERED_DEVICE = "unregistered-device"
# Of the readings chosen to break, this share is sent as a truncated message of its own.
TRUNCATED_SHARE = 0.25


@dataclass(frozen=True)
class DeviceMessage:
    """One Kafka message: a batch for one intersection (or a deliberately broken payload)."""

    key: str
    payload: bytes
    readings: int


class FaultInjector:
    """Breaks about ``fraction`` of the readings passing through, reproducibly for a seed (or
    a shared generator); ``injected`` counts the readings it broke."""

    def __init__(self, *, fraction: float, seed: int | np.random.Generator) -> None:
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fault fraction must be within [0, 1], not {fraction}")
        self.fraction = fraction
        self.rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        self.injected = 0

    def apply(self, messages: list[DeviceMessage]) -> list[DeviceMessage]:
        """``messages`` with some readings broken; each batch keeps its key."""
        if self.fraction == 0.0:
            return messages
        out = []
        for message in messages:
            batch: list[dict[str, Any]] = []
            for reading in json.loads(message.payload):
                if self.rng.random() < self.fraction:
                    self.injected += 1
                    if self.rng.random() < TRUNCATED_SHARE:
                        out.append(DeviceMessage(message.key, TRUNCATED_PAYLOAD, 1))
                        continue
                    reading = self.corrupt(reading)
                batch.append(reading)
            if batch:
                payload = json.dumps(batch, separators=(",", ":")).encode()
                out.append(DeviceMessage(message.key, payload, len(batch)))
        return out

    def corrupt(self, reading: dict[str, Any]) -> dict[str, Any]:
        """One of four faults a validator must catch, chosen at random."""
        fault = int(self.rng.integers(0, 4))
        if fault == 0:
            return {**reading, "device_id": UNREGISTERED_DEVICE}
        if fault == 1:
            return {**reading, "occupancy_pct": 140.0}
        if fault == 2:
            return {k: v for k, v in reading.items() if k != "ts"}
        return {**reading, "count": -3}
