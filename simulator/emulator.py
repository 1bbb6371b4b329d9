"""Emulated field devices for a site: each sensor reports counts by class, occupancy and speed
every interval, with an Indonesian urban mix (motorcycles well over half), morning and evening
peaks in the site's local time, and a small, seeded share of faulty messages so the
dead-letter path is always exercised.

>>> from simpang.site_file import load_site
>>> from simpang.settings import DEMO_SITE_FILE
>>> emulator = FieldDeviceEmulator(load_site(DEMO_SITE_FILE), seed=1, bad_fraction=0)
>>> messages = emulator.messages_at(datetime(2026, 11, 24, 0, 0, 30, tzinfo=UTC))
>>> sorted(m.key for m in messages)[:2]
['bpn-gunung-malang', 'bpn-muara-rapak']
>>> sum(m.readings for m in messages)
29
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import numpy as np

from simpang.site import Site
from simpang.vehicles import VehicleClass
from simulator.faults import DeviceMessage, FaultInjector

CLASS_MIX = {
    VehicleClass.MOTORCYCLE: 0.68,
    VehicleClass.CAR: 0.24,
    VehicleClass.BUS: 0.02,
    VehicleClass.TRUCK: 0.04,
    VehicleClass.BICYCLE: 0.02,
}
VEHICLE_LENGTH_M = {
    VehicleClass.MOTORCYCLE: 2.0,
    VehicleClass.CAR: 4.5,
    VehicleClass.BUS: 12.0,
    VehicleClass.TRUCK: 10.0,
    VehicleClass.BICYCLE: 1.8,
}
LOOP_LENGTH_M = 2.0


def demand_factor(local_hour: float) -> float:
    """Relative demand by local time of day: night trough, 07:15 and 17:15 peaks."""
    morning = 1.6 * math.exp(-(((local_hour - 7.25) / 1.1) ** 2))
    evening = 1.8 * math.exp(-(((local_hour - 17.25) / 1.3) ** 2))
    daytime = 0.55 * math.exp(-(((local_hour - 12.5) / 4.5) ** 2))
    return 0.12 + daytime + morning + evening


class FieldDeviceEmulator:
    def __init__(
        self,
        site: Site,
        *,
        seed: int,
        interval_s: float = 30.0,
        base_flow_veh_per_hour_per_lane: float = 520.0,
        bad_fraction: float = 0.01,
    ) -> None:
        self.site = site
        self.interval_s = interval_s
        self.base_flow = base_flow_veh_per_hour_per_lane
        self.bad_fraction = bad_fraction
        self.rng = np.random.default_rng(seed)
        self.faults = FaultInjector(fraction=bad_fraction, seed=self.rng)
        self.zone = ZoneInfo(site.timezone)
        self.classes = list(CLASS_MIX)
        self.mix = np.array([CLASS_MIX[c] for c in self.classes])

    def messages_at(self, ts_end: datetime) -> list[DeviceMessage]:
        """Every device's reading for the interval ending at ``ts_end``."""
        local = ts_end.astimezone(self.zone)
        factor = demand_factor(local.hour + local.minute / 60 + local.second / 3600)
        messages = []
        for intersection in self.site.intersections:
            batch = [self._reading(sensor.device_id, sensor.kind, ts_end, factor)
                     for sensor in intersection.sensors]
            if batch:
                payload = json.dumps(batch, separators=(",", ":")).encode()
                messages.append(DeviceMessage(intersection.id, payload, len(batch)))
        return self.faults.apply(messages)

    def _reading(
        self, device_id: str, kind: str, ts_end: datetime, factor: float
    ) -> dict[str, object]:
        mean_vehicles = self.base_flow * factor * self.interval_s / 3600.0
        total = int(self.rng.poisson(mean_vehicles))
        by_class = self.rng.multinomial(total, self.mix)
        counts = {c.value: int(n) for c, n in zip(self.classes, by_class, strict=True) if n}
        congestion = min(factor / 2.5, 1.0)
        speed_kmh = float(max(5.0, self.rng.normal(38.0 - 20.0 * congestion, 4.0)))
        occupied_m = sum(
            (VEHICLE_LENGTH_M[c] + LOOP_LENGTH_M) * n
            for c, n in zip(self.classes, by_class, strict=True)
        )
        occupancy_pct = min(100.0, 100.0 * occupied_m / (speed_kmh / 3.6) / self.interval_s)
        return {
            "device_id": device_id,
            "kind": kind,
            "ts": ts_end.astimezone(UTC).isoformat(),
            "interval_s": self.interval_s,
            "counts": counts,
            "occupancy_pct": round(occupancy_pct, 2),
            "speed_kmh": round(speed_kmh, 1) if total else None,
        }
