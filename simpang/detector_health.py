"""Field-detector diagnostics: which loops and radars are dead (silent) or stuck.

A control room needs to know that a lane's flow is zero because its loop is broken, not
because the road is empty. Three faults, as loop-detector diagnostics usually define them:

* **dead**: no reading received for ``dead_after_s`` of wall-clock time;
* **stuck on**: occupancy at or above ``stuck_on_occupancy_pct`` without a break for
  ``stuck_on_after_s`` of measured time (a loop that reports a vehicle over it forever);
* **stuck off**: zero vehicles for ``stuck_off_after_s`` of measured time while another
  detector of the same intersection counted vehicles in that time (the road was not empty).

A monitor sees the readings of the intersections its worker owns (readings are partitioned
by intersection), and reports every sensor of those intersections, seen or not.

>>> from datetime import UTC, datetime
>>> from simpang.records import NormalisedReading
>>> from simpang.site_file import load_site
>>> from simpang.settings import DEMO_SITE_FILE
>>> site = load_site(DEMO_SITE_FILE)
>>> monitor = DetectorMonitor(site, DetectorThresholds(dead_after_s=60))
>>> sensor = site.intersections[0].sensors[0]
>>> reading = NormalisedReading(intersection=site.intersections[0].id, approach=sensor.approach,
...     lane=sensor.lane, device_id=sensor.device_id, ts_ms=0, interval_s=30, counts={})
>>> monitor.observe(reading, wall_s=1000.0)
>>> health = monitor.sample(worker="w1", wall_s=1090.0)
>>> [(h.device_id == sensor.device_id, h.dead) for h in health][:1]
[(True, True)]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from simpang.records import DetectorHealth, NormalisedReading
from simpang.site import Site


@dataclass(frozen=True)
class DetectorThresholds:
    dead_after_s: float = 300.0
    stuck_on_occupancy_pct: float = 95.0
    stuck_on_after_s: float = 300.0
    stuck_off_after_s: float = 1800.0


@dataclass
class _SensorState:
    readings_since_sample: int = 0
    last_wall_s: float | None = None
    last_reading_ms: int | None = None
    high_occupancy_since_ms: int | None = None
    zero_count_since_ms: int | None = None


@dataclass
class DetectorMonitor:
    site: Site
    thresholds: DetectorThresholds = field(default_factory=DetectorThresholds)
    _states: dict[str, _SensorState] = field(default_factory=dict, init=False)
    _first_seen_wall_s: dict[str, float] = field(default_factory=dict, init=False)
    _last_vehicle_ms: dict[str, int] = field(default_factory=dict, init=False)

    def observe(self, reading: NormalisedReading, *, wall_s: float) -> None:
        """Take one field reading (camera readings have their own health)."""
        if reading.source != "field":
            return
        self._first_seen_wall_s.setdefault(reading.intersection, wall_s)
        state = self._states.setdefault(reading.device_id, _SensorState())
        state.readings_since_sample += 1
        state.last_wall_s = wall_s
        if state.last_reading_ms is not None and reading.ts_ms <= state.last_reading_ms:
            return  # a replay or an out-of-order reading says nothing new about the run
        start_ms = reading.ts_ms - round(reading.interval_s * 1000)
        state.last_reading_ms = reading.ts_ms
        if (reading.occupancy_pct is not None
                and reading.occupancy_pct >= self.thresholds.stuck_on_occupancy_pct):
            if state.high_occupancy_since_ms is None:
                state.high_occupancy_since_ms = start_ms
        else:
            state.high_occupancy_since_ms = None
        if reading.counts:
            vehicles = sum(reading.counts.values())
            if vehicles > 0:
                state.zero_count_since_ms = None
                latest = self._last_vehicle_ms.get(reading.intersection, reading.ts_ms)
                self._last_vehicle_ms[reading.intersection] = max(latest, reading.ts_ms)
            elif state.zero_count_since_ms is None:
                state.zero_count_since_ms = start_ms

    def sample(self, *, worker: str, wall_s: float) -> list[DetectorHealth]:
        """Every sensor of the intersections seen so far, and reset the interval counts."""
        limits = self.thresholds
        out: list[DetectorHealth] = []
        for intersection in self.site.intersections:
            first_seen = self._first_seen_wall_s.get(intersection.id)
            if first_seen is None:
                continue
            for sensor in intersection.sensors:
                state = self._states.setdefault(sensor.device_id, _SensorState())
                silent_since = state.last_wall_s if state.last_wall_s is not None else first_seen
                silent_s = max(0.0, wall_s - silent_since)
                stuck_on = (state.high_occupancy_since_ms is not None
                            and state.last_reading_ms is not None
                            and state.last_reading_ms - state.high_occupancy_since_ms
                            >= limits.stuck_on_after_s * 1000)
                others_counted = self._last_vehicle_ms.get(intersection.id)
                stuck_off = (state.zero_count_since_ms is not None
                             and state.last_reading_ms is not None
                             and state.last_reading_ms - state.zero_count_since_ms
                             >= limits.stuck_off_after_s * 1000
                             and others_counted is not None
                             and others_counted > state.zero_count_since_ms)
                out.append(DetectorHealth(
                    site=self.site.id, intersection=intersection.id,
                    approach=sensor.approach, lane=sensor.lane, device_id=sensor.device_id,
                    kind=sensor.kind, worker=worker,
                    ts=datetime.fromtimestamp(wall_s, UTC),
                    readings=state.readings_since_sample,
                    silent_s=silent_s,
                    last_reading_ts=(None if state.last_reading_ms is None else
                                     datetime.fromtimestamp(state.last_reading_ms / 1000, UTC)),
                    dead=silent_s >= limits.dead_after_s,
                    stuck_on=stuck_on, stuck_off=stuck_off,
                ))
                state.readings_since_sample = 0
        return out

    def forget(self) -> None:
        """Drop everything (the worker's partitions moved to another worker)."""
        self._states.clear()
        self._first_seen_wall_s.clear()
        self._last_vehicle_ms.clear()
