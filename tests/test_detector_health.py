"""Detector diagnostics: dead, stuck on and stuck off, each from the readings that show it."""

from __future__ import annotations

import pytest

from simpang.detector_health import DetectorMonitor, DetectorThresholds
from simpang.records import DetectorHealth, NormalisedReading
from simpang.settings import DEMO_SITE_FILE
from simpang.site import Intersection, Site
from simpang.site_file import load_site
from simpang.vehicles import VehicleClass

INTERVAL_S = 30


@pytest.fixture(scope="module")
def site() -> Site:
    return load_site(DEMO_SITE_FILE)


def reading(intersection: Intersection, index: int, at_s: int, *, cars: int | None = 3,
            occupancy_pct: float | None = 10.0, source: str = "field") -> NormalisedReading:
    sensor = intersection.sensors[index]
    return NormalisedReading(
        intersection=intersection.id, approach=sensor.approach, lane=sensor.lane,
        device_id=sensor.device_id, ts_ms=at_s * 1000, interval_s=INTERVAL_S,
        counts={} if cars is None else {VehicleClass.CAR: cars},
        occupancy_pct=occupancy_pct, source=source,  # type: ignore[arg-type]
    )


def by_device(samples: list[DetectorHealth]) -> dict[str, DetectorHealth]:
    return {s.device_id: s for s in samples}


def test_only_intersections_seen_are_reported_and_silent_sensors_go_dead(site: Site) -> None:
    monitor = DetectorMonitor(site, DetectorThresholds(dead_after_s=120))
    first = site.intersections[0]
    assert len(first.sensors) >= 2
    assert monitor.sample(worker="w", wall_s=0.0) == []
    monitor.observe(reading(first, 0, 30), wall_s=1000.0)
    health = by_device(monitor.sample(worker="w", wall_s=1060.0))
    assert set(health) == {s.device_id for s in first.sensors}
    talking, silent = first.sensors[0].device_id, first.sensors[1].device_id
    assert health[talking].readings == 1 and not health[talking].dead
    assert health[talking].silent_s == pytest.approx(60.0)
    assert health[silent].readings == 0 and health[silent].last_reading_ts is None
    assert not health[silent].dead  # silent only 60 s since its intersection was first seen
    health = by_device(monitor.sample(worker="w", wall_s=1130.0))
    assert health[talking].dead and health[silent].dead
    assert health[talking].readings == 0  # counts are per sample interval
    assert health[talking].site == site.id and health[talking].intersection == first.id


def test_pinned_occupancy_is_stuck_on_only_after_the_threshold(site: Site) -> None:
    monitor = DetectorMonitor(site, DetectorThresholds(stuck_on_after_s=300))
    first = site.intersections[0]
    device = first.sensors[0].device_id
    for step in range(1, 10):  # 9 intervals of 30 s = 270 s pinned
        monitor.observe(reading(first, 0, step * INTERVAL_S, occupancy_pct=100.0), wall_s=step)
    assert not by_device(monitor.sample(worker="w", wall_s=10.0))[device].stuck_on
    monitor.observe(reading(first, 0, 10 * INTERVAL_S, occupancy_pct=98.0), wall_s=11.0)
    assert by_device(monitor.sample(worker="w", wall_s=11.0))[device].stuck_on
    monitor.observe(reading(first, 0, 11 * INTERVAL_S, occupancy_pct=40.0), wall_s=12.0)
    assert not by_device(monitor.sample(worker="w", wall_s=12.0))[device].stuck_on


def test_zero_counts_are_stuck_off_only_while_the_others_count(site: Site) -> None:
    thresholds = DetectorThresholds(stuck_off_after_s=600)
    first = site.intersections[0]
    device = first.sensors[0].device_id

    empty_road = DetectorMonitor(site, thresholds)
    for step in range(1, 40):
        for index in range(len(first.sensors)):
            empty_road.observe(reading(first, index, step * INTERVAL_S, cars=0), wall_s=step)
    assert not any(h.stuck_off for h in empty_road.sample(worker="w", wall_s=40.0))

    broken = DetectorMonitor(site, thresholds)
    for step in range(1, 40):
        broken.observe(reading(first, 0, step * INTERVAL_S, cars=0), wall_s=step)
        broken.observe(reading(first, 1, step * INTERVAL_S, cars=5), wall_s=step)
    health = by_device(broken.sample(worker="w", wall_s=40.0))
    assert health[device].stuck_off
    assert not health[first.sensors[1].device_id].stuck_off
    broken.observe(reading(first, 0, 40 * INTERVAL_S, cars=1), wall_s=41.0)
    assert not by_device(broken.sample(worker="w", wall_s=41.0))[device].stuck_off


def test_replays_and_camera_readings_do_not_change_the_diagnosis(site: Site) -> None:
    monitor = DetectorMonitor(site, DetectorThresholds(stuck_on_after_s=60))
    first = site.intersections[0]
    device = first.sensors[0].device_id
    monitor.observe(reading(first, 0, 300, occupancy_pct=100.0), wall_s=1.0)
    monitor.observe(reading(first, 0, 30, occupancy_pct=100.0), wall_s=2.0)  # an old replay
    assert not by_device(monitor.sample(worker="w", wall_s=3.0))[device].stuck_on
    cameras_only = DetectorMonitor(site)
    cameras_only.observe(reading(first, 0, 30, source="camera"), wall_s=1.0)
    assert cameras_only.sample(worker="w", wall_s=2.0) == []
    monitor.forget()
    assert monitor.sample(worker="w", wall_s=4.0) == []
