"""The real path: Tansu → worker process → InfluxDB 1.6 (through the v2 write forwarder),
read back with InfluxQL. Expected values are worked out by hand in the comments."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.conftest import Pipeline

pytestmark = pytest.mark.integration

N1 = "smd-lembuswana-n1-loop"  # approach north, lane n1
N2 = "smd-lembuswana-n2-loop"  # approach north, lane n2
KEY = "smd-lembuswana"


def reading(device: str, ts: datetime, interval_s: float, counts: dict[str, int],
            occupancy_pct: float, speed_kmh: float) -> dict[str, Any]:
    return {"device_id": device, "kind": "loop", "ts": ts.isoformat(), "interval_s": interval_s,
            "counts": counts, "occupancy_pct": occupancy_pct, "speed_kmh": speed_kmh}


def ns(ts: datetime) -> int:
    return int(ts.timestamp()) * 1_000_000_000


def test_windows_exact_values_late_and_invalid_readings(
    pipeline_factory: Callable[..., Pipeline],
) -> None:
    pipeline = pipeline_factory(SIMPANG_WINDOWS__GRACE_S="3")
    t0 = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)
    s = timedelta(seconds=1)
    pipeline.send([
        # Window 1 [t0, t0+60): n1 twice (30 s intervals), n2 once (60 s interval).
        (KEY, [
            reading(N1, t0 + 30 * s, 30, {"motorcycle": 12, "car": 6}, 10, 30),
            reading(N1, t0 + 60 * s, 30, {"motorcycle": 8, "car": 4, "bus": 1}, 20, 20),
            reading(N2, t0 + 60 * s, 60, {"car": 10}, 15, 40),
        ]),
        # Window 2 [t0+60, t0+120): the later reading first; it moves event time to t0+120,
        # which closes window 1 (t0+60 + 3 s grace), but not window 2.
        (KEY, reading(N1, t0 + 120 * s, 30, {"motorcycle": 5}, 5, 35)),
        # Out of order, inside the grace period: still counted in window 2.
        (KEY, reading(N1, t0 + 90 * s, 30, {"motorcycle": 7, "truck": 1}, 9, 25)),
    ])
    # Window 2 closes when event time (advanced by wall time while quiet) passes t0+123.
    rows = pipeline.wait_rows(
        "SELECT * FROM approach_metrics WHERE \"window\" = '60s'", lambda r: len(r) >= 5
    )
    by_key = {(r["level"], r["lane"], r["time"]): r for r in rows}
    # Window 1: lanes n1, n2 and approach north; window 2: lane n1 and approach north.
    assert len(rows) == 5, rows

    n1_w1 = by_key[("lane", "n1", ns(t0 + 60 * s))]
    # 20 motorcycles + 10 cars + 1 bus = 31 vehicles in 60 s → 1860 veh/h;
    # PCU 20×0.2 + 10×1.0 + 1×1.3 = 15.3 → 918 PCU/h (PKJI, protected approach);
    # occupancy (10×30 + 20×30)/60 = 15 %; speed (30×18 + 20×13)/31 km/h.
    assert n1_w1["count_motorcycle"] == 20 and n1_w1["count_car"] == 10
    assert n1_w1["count_bus"] == 1 and n1_w1["count_truck"] == 0
    assert n1_w1["flow_veh_per_hour"] == pytest.approx(1860)
    assert n1_w1["flow_pcu_per_hour"] == pytest.approx(918)
    assert n1_w1["occupancy_pct"] == pytest.approx(15)
    assert n1_w1["mean_speed_kmh"] == pytest.approx(800 / 31)
    assert n1_w1["readings"] == 2

    north_w1 = by_key[("approach", None, ns(t0 + 60 * s))]
    # n1 + n2: 20 MC, 20 cars, 1 bus = 41 veh → 2460 veh/h; PCU 25.3 → 1518 PCU/h;
    # occupancy (300 + 600 + 15×60)/(60 + 60) = 15 %; speed (800 + 40×10)/41.
    assert north_w1["flow_veh_per_hour"] == pytest.approx(2460)
    assert north_w1["flow_pcu_per_hour"] == pytest.approx(1518)
    assert north_w1["occupancy_pct"] == pytest.approx(15)
    assert north_w1["mean_speed_kmh"] == pytest.approx(1200 / 41)
    assert north_w1["readings"] == 3

    n1_w2 = by_key[("lane", "n1", ns(t0 + 120 * s))]
    # The late-but-in-grace reading is in: 12 MC + 1 truck = 13 veh → 780 veh/h;
    # PCU 12×0.2 + 1.3 = 3.7 → 222 PCU/h; occupancy (5×30 + 9×30)/60 = 7 %.
    assert n1_w2["count_motorcycle"] == 12 and n1_w2["count_truck"] == 1
    assert n1_w2["flow_veh_per_hour"] == pytest.approx(780)
    assert n1_w2["flow_pcu_per_hour"] == pytest.approx(222)
    assert n1_w2["occupancy_pct"] == pytest.approx(7)
    assert n1_w2["readings"] == 2

    # Hopping 300 s every 60 s, window ending t0+60 holds only window-1 data: 41 veh/300 s.
    hopping = pipeline.wait_rows(
        "SELECT flow_veh_per_hour FROM approach_metrics WHERE \"window\" = '300s-every-60s' "
        f"AND level = 'approach' AND time = {ns(t0 + 60 * s)}", lambda r: len(r) == 1,
    )
    assert hopping[0]["flow_veh_per_hour"] == pytest.approx(41 * 12)

    # Too late (window 1 is closed) and invalid input: dead letters with reasons.
    pipeline.send([
        (KEY, reading(N1, t0 + 45 * s, 15, {"car": 3}, 4, 30)),
        (KEY, b"{this is not json"),
        (KEY, [reading("no-such-device", t0 + 150 * s, 30, {"car": 1}, 1, 30),
               {**reading(N2, t0 + 150 * s, 30, {"car": 1}, 1, 30), "count": -3},
               {**reading(N2, t0 + 150 * s, 30, {"car": 1}, 1, 30), "ts": "2026-01-01T00:00"}]),
    ])
    dead = pipeline.read_topic("dead-letters", count=5)
    reasons = {d["reason_code"]: d for d in dead}
    assert sorted(reasons) == ["invalid", "late", "malformed", "unknown_device"]
    assert sum(1 for d in dead if d["reason_code"] == "invalid") == 2
    assert "after its window closed" in reasons["late"]["reason"]
    assert reasons["late"]["device_id"] == N1
    assert "not valid JSON" in reasons["malformed"]["reason"]
    assert reasons["malformed"]["raw"] == "{this is not json"
    assert reasons["unknown_device"]["reason"].startswith("[0].device_id:")
    invalid = sorted(d["reason"] for d in dead if d["reason_code"] == "invalid")
    assert invalid[0].startswith("[1].count: Input should be greater than or equal to 0")
    assert invalid[1].startswith("[2].ts: Input should have timezone info")
    # The late reading did not change window 1.
    assert pipeline.db.rows(
        "SELECT readings FROM approach_metrics WHERE level = 'lane' AND lane = 'n1' "
        f"AND \"window\" = '60s' AND time = {ns(t0 + 60 * s)}"
    )[0]["readings"] == 2

    counted = pipeline.wait_rows(
        "SELECT sum(\"count\") AS n FROM dead_letters GROUP BY reason_code",
        lambda r: sum(row["n"] for row in r) == 5,
    )
    assert {row["reason_code"]: row["n"] for row in counted} == {
        "invalid": 2, "late": 1, "malformed": 1, "unknown_device": 1
    }
    health = pipeline.wait_rows(
        "SELECT last(readings_in) AS readings_in, last(dead_letters) AS dead FROM pipeline_health",
        lambda r: bool(r) and r[0]["readings_in"] == 10 and r[0]["dead"] == 5,
    )
    assert health[0]["readings_in"] == 10


def test_influxdb_outage_delays_but_loses_nothing(
    pipeline_factory: Callable[..., Pipeline], influx_forwarder: Any,
) -> None:
    from tests.influx_v2_forwarder import InfluxV2WriteForwarder

    gateway = InfluxV2WriteForwarder(influx_forwarder.target_url).start()
    pipeline = pipeline_factory(write_url=gateway.url, SIMPANG_WINDOWS__GRACE_S="1")
    t0 = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=2)
    gateway.stop()
    minutes = 6
    pipeline.send([
        (KEY, reading(N1, t0 + timedelta(minutes=m + 1), 60, {"car": m + 1}, 5, 30))
        for m in range(minutes)
    ])
    pipeline.wait_log("sink write failed, retrying")
    time.sleep(3)  # a few more retries against the closed port
    pipeline.assert_worker_alive()
    assert pipeline.db.rows("SELECT count(readings) FROM approach_metrics") == []
    gateway.start()
    try:
        rows = pipeline.wait_rows(
            "SELECT count_car FROM approach_metrics WHERE level = 'lane' AND \"window\" = '60s'",
            lambda r: len(r) == minutes,
        )
        assert [r["count_car"] for r in rows] == list(range(1, minutes + 1))
        errors = pipeline.db.rows("SELECT max(sink_write_errors) AS e FROM pipeline_health")
        assert errors and errors[0]["e"] >= 1
    finally:
        gateway.close()


def test_a_reading_resent_in_another_message_is_counted_once(
    pipeline_factory: Callable[..., Pipeline],
) -> None:
    """A gateway re-sends a batch as a new Kafka message (it missed the acknowledgement), and
    one reading a third time: the worker sees new messages, its windows see re-sends (device
    + seq) and count each reading once, whichever worker or path brought the copy."""
    pipeline = pipeline_factory(SIMPANG_WINDOWS__GRACE_S="3")
    t0 = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)
    first = [{**reading(N1, t0 + timedelta(seconds=30), 30, {"car": 4}, 10, 30), "seq": 7},
             {**reading(N1, t0 + timedelta(seconds=60), 30, {"car": 2}, 10, 30), "seq": 8},
             {**reading(N2, t0 + timedelta(seconds=60), 60, {"bus": 1}, 10, 30), "seq": 7}]
    pipeline.send([(KEY, first), (KEY, first), (KEY, first[1]),
                   # a later reading moves event time on, so the first window closes
                   (KEY, {**reading(N1, t0 + timedelta(seconds=150), 30, {"car": 1}, 1, 30),
                          "seq": 9})])
    rows = pipeline.wait_rows(
        "SELECT * FROM approach_metrics WHERE \"window\" = '60s' AND level = 'lane' "
        f"AND time = {ns(t0 + timedelta(seconds=60))}", lambda r: len(r) == 2)
    by_lane = {r["lane"]: r for r in rows}
    assert (by_lane["n1"]["readings"], by_lane["n1"]["flow_veh_per_hour"]) == (2, 6 * 60)
    assert (by_lane["n2"]["readings"], by_lane["n2"]["flow_veh_per_hour"]) == (1, 60)
    health = pipeline.wait_rows(
        "SELECT last(readings_in) AS n, last(readings_resent) AS resent, "
        "last(readings_windowed) AS windowed FROM pipeline_health",
        lambda r: bool(r) and r[0]["n"] == 8 and r[0]["resent"] == 4)
    assert health[0]["windowed"] == 4
    assert pipeline.read_topic("dead-letters", count=1, timeout_s=3) == []
