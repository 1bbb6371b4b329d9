"""The emulated field devices of simulator/emulator.py."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from simpang.records import RejectReason
from simpang.settings import DEMO_SITE_FILE
from simpang.site import Site
from simpang.site_file import load_site
from simulator.emulator import CLASS_MIX, FieldDeviceEmulator, demand_factor
from simulator.faults import DeviceMessage
from streams.ingest import ReadingValidator

MALFORMED = b'{"device_id": "'
UNREGISTERED = "unregistered-device"
# Local time is Asia/Makassar (UTC+8): 07:15 local is 23:15 UTC the day before.
MORNING_PEAK_UTC = datetime(2026, 11, 23, 23, 15, tzinfo=UTC)
NIGHT_UTC = datetime(2026, 11, 23, 19, 0, tzinfo=UTC)  # 03:00 local


@pytest.fixture(scope="module")
def site() -> Site:
    return load_site(DEMO_SITE_FILE)


def run(emulator: FieldDeviceEmulator, start: datetime, intervals: int,
        step_s: float = 30) -> list[tuple[datetime, DeviceMessage]]:
    out: list[tuple[datetime, DeviceMessage]] = []
    for i in range(intervals):
        ts = start + timedelta(seconds=step_s * i)
        out.extend((ts, m) for m in emulator.messages_at(ts))
    return out


def readings_of(messages: list[tuple[datetime, DeviceMessage]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for _, message in messages:
        if message.payload != MALFORMED:
            out.extend(json.loads(message.payload))
    return out


def vehicles(messages: list[tuple[datetime, DeviceMessage]]) -> int:
    return sum(sum(r["counts"].values()) for r in readings_of(messages))


def test_doc_example(site: Site) -> None:
    emulator = FieldDeviceEmulator(site, seed=1, bad_fraction=0)
    messages = emulator.messages_at(datetime(2026, 11, 24, 0, 0, 30, tzinfo=UTC))
    assert [m.key for m in messages] == [
        "smd-lembuswana", "smd-air-hitam", "bpn-muara-rapak", "bpn-gunung-malang"
    ]
    assert [m.readings for m in messages] == [8, 8, 5, 8]


def test_same_seed_gives_identical_messages(site: Site) -> None:
    start = datetime(2026, 11, 24, 0, 0, tzinfo=UTC)
    first = run(FieldDeviceEmulator(site, seed=42, bad_fraction=0.05), start, 60)
    second = run(FieldDeviceEmulator(site, seed=42, bad_fraction=0.05), start, 60)
    assert first == second
    assert len(first) >= 60 * 4
    other = run(FieldDeviceEmulator(site, seed=43, bad_fraction=0.05), start, 60)
    assert [m.payload for _, m in other] != [m.payload for _, m in first]


def test_clean_messages_are_well_formed_readings_of_site_devices(site: Site) -> None:
    locations = site.sensor_locations()
    start = datetime(2026, 11, 24, 1, 0, tzinfo=UTC)
    messages = run(FieldDeviceEmulator(site, seed=5, bad_fraction=0), start, 20)
    assert len(messages) == 20 * 4
    seen: set[str] = set()
    for ts, message in messages:
        batch = json.loads(message.payload)
        assert message.readings == len(batch)
        for r in batch:
            location = locations[r["device_id"]]
            assert location.intersection == message.key
            assert r["kind"] == location.kind
            assert r["ts"] == ts.isoformat()
            assert datetime.fromisoformat(r["ts"]) == ts
            assert r["interval_s"] == 30.0
            assert set(r["counts"]) <= {c.value for c in CLASS_MIX}
            assert all(n > 0 for n in r["counts"].values())
            assert 0 <= r["occupancy_pct"] <= 100
            assert r["speed_kmh"] is None or 5.0 <= r["speed_kmh"] <= 250
            seen.add(r["device_id"])
    assert seen == set(locations)


def test_clean_messages_all_pass_the_validator(site: Site) -> None:
    validator = ReadingValidator(site, max_future_skew_s=0)
    messages = run(FieldDeviceEmulator(site, seed=9, bad_fraction=0),
                   datetime(2026, 11, 23, 22, 0, tzinfo=UTC), 40, step_s=60)
    accepted = 0
    for ts, message in messages:
        result = validator.validate(message.payload, source="emulator", message_id="m",
                                    received_at=ts)
        assert result.dead_letters == []
        assert list(result.by_intersection) == [message.key]
        accepted += result.accepted
    assert accepted == 40 * 29


def test_bad_messages_are_few_but_present_and_all_rejected(site: Site) -> None:
    """About bad_fraction (1 %) of readings are broken on purpose: a truncated JSON message,
    an unregistered device, occupancy 140 %, no ts, or a negative count."""
    locations = site.sensor_locations()
    emulator = FieldDeviceEmulator(site, seed=11)  # default bad_fraction=0.01
    assert emulator.bad_fraction == 0.01
    messages = run(emulator, datetime(2026, 11, 24, 0, 0, tzinfo=UTC), 600)
    total = sum(m.readings for _, m in messages)
    assert total == 600 * 29

    faults: Counter[str] = Counter()
    faults["malformed"] = sum(m.payload == MALFORMED for _, m in messages)
    for r in readings_of(messages):
        if r["device_id"] == UNREGISTERED:
            faults["unregistered"] += 1
        else:
            assert r["device_id"] in locations
        faults["occupancy"] += r.get("occupancy_pct") == 140.0
        faults["no_ts"] += "ts" not in r
        faults["negative"] += r.get("count") == -3
    bad = sum(faults.values())
    assert all(faults[kind] > 0 for kind in
               ("malformed", "unregistered", "occupancy", "no_ts", "negative")), faults
    assert 0.005 < bad / total < 0.015, (bad, total)

    # Every deliberate fault becomes a dead letter and nothing else does.
    validator = ReadingValidator(site, max_future_skew_s=120)
    codes: Counter[RejectReason] = Counter()
    accepted = 0
    for ts, message in messages:
        result = validator.validate(message.payload, source="emulator", message_id="m",
                                    received_at=ts)
        accepted += result.accepted
        codes.update(d.reason_code for d in result.dead_letters)
    assert accepted == total - bad
    assert codes == {
        RejectReason.MALFORMED: faults["malformed"],
        RejectReason.UNKNOWN_DEVICE: faults["unregistered"],
        RejectReason.INVALID: faults["occupancy"] + faults["no_ts"] + faults["negative"],
    }


def test_no_bad_messages_when_bad_fraction_is_zero(site: Site) -> None:
    messages = run(FieldDeviceEmulator(site, seed=11, bad_fraction=0),
                   datetime(2026, 11, 24, 0, 0, tzinfo=UTC), 200)
    assert all(m.payload != MALFORMED for _, m in messages)
    assert all(r["device_id"] != UNREGISTERED and "ts" in r and "count" not in r
               for r in readings_of(messages))


def test_demand_factor_shape() -> None:
    assert demand_factor(3.0) == pytest.approx(0.126, abs=1e-3)
    assert demand_factor(7.25) == pytest.approx(1.861, abs=1e-3)
    assert demand_factor(17.25) == pytest.approx(2.100, abs=1e-3)
    assert demand_factor(12.0) == pytest.approx(0.663, abs=1e-3)
    assert demand_factor(7.25) > 10 * demand_factor(3.0)
    assert demand_factor(17.25) > demand_factor(7.25) > demand_factor(12.0) > demand_factor(0)


def test_peak_hour_demand_is_higher_than_night(site: Site) -> None:
    peak = run(FieldDeviceEmulator(site, seed=3, bad_fraction=0), MORNING_PEAK_UTC, 10)
    night = run(FieldDeviceEmulator(site, seed=3, bad_fraction=0), NIGHT_UTC, 10)
    peak_vehicles, night_vehicles = vehicles(peak), vehicles(night)
    # Means: 520 veh/h × 30 s × 29 lanes × 10 intervals × factor = 1257 × factor.
    assert 1900 < peak_vehicles < 2800  # factor 1.86 → 2340
    assert 60 < night_vehicles < 300  # factor 0.126 → 158
    peak_speed = [r["speed_kmh"] for r in readings_of(peak) if r["speed_kmh"] is not None]
    night_speed = [r["speed_kmh"] for r in readings_of(night) if r["speed_kmh"] is not None]
    assert sum(peak_speed) / len(peak_speed) < sum(night_speed) / len(night_speed) - 8
    peak_occupancy = sum(r["occupancy_pct"] for r in readings_of(peak))
    night_occupancy = sum(r["occupancy_pct"] for r in readings_of(night))
    assert peak_occupancy > 5 * night_occupancy


def test_peaks_follow_the_site_timezone(site: Site) -> None:
    """23:15 UTC is the morning peak in Asia/Makassar but night in a site on UTC."""
    utc_site = site.model_copy(update={"timezone": "UTC"})
    local = vehicles(run(FieldDeviceEmulator(site, seed=4, bad_fraction=0),
                         MORNING_PEAK_UTC, 10))
    utc = vehicles(run(FieldDeviceEmulator(utc_site, seed=4, bad_fraction=0),
                       MORNING_PEAK_UTC, 10))
    assert local > 5 * utc


def test_urban_mix_is_mostly_motorcycles(site: Site) -> None:
    messages = run(FieldDeviceEmulator(site, seed=8, bad_fraction=0), MORNING_PEAK_UTC, 20)
    by_class: Counter[str] = Counter()
    for r in readings_of(messages):
        by_class.update(r["counts"])
    total = sum(by_class.values())
    assert 0.64 < by_class["motorcycle"] / total < 0.72
    assert 0.20 < by_class["car"] / total < 0.28
    assert by_class["motorcycle"] > by_class["car"] > by_class["truck"]
    assert "unclassified" not in by_class
