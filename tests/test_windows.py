"""Unit tests for :mod:`simpang.windows`: pane-built tumbling/hopping windows, interval-end
labelling, grace and late readings, idle watermark advance, replay dedupe and partitions.

Expected values are worked out by hand in the comments, and a property test compares every
emitted metric with a brute-force computation over the raw readings.
"""

from __future__ import annotations

import copy
import itertools
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simpang.records import ApproachMetrics, NormalisedReading, ReadingsBatch
from simpang.vehicles import PcuFactors, VehicleClass
from simpang.windows import WindowedAggregator, WindowSpec, add_seq

T0_DT = datetime(2026, 11, 24, 7, 0, tzinfo=UTC)
T0 = int(T0_DT.timestamp() * 1000)  # 07:00:00 in epoch ms; a multiple of every pane used
MIN = 60_000
SEC = 1_000

MC, CAR, BUS, TRUCK = (
    VehicleClass.MOTORCYCLE,
    VehicleClass.CAR,
    VehicleClass.BUS,
    VehicleClass.TRUCK,
)

MetricKey = tuple[str, datetime, str, str, str | None]


def at(ms: int) -> datetime:
    """Epoch ms → aware datetime, the type of ``window_start``/``window_end``."""
    return datetime.fromtimestamp(ms / 1000, UTC)


def reading(
    ts_ms: int,
    counts: dict[VehicleClass, int] | None = None,
    *,
    lane: str = "n1",
    approach: str = "n",
    intersection: str = "smd",
    interval_s: float = 60,
    occupancy_pct: float | None = None,
    speed_kmh: float | None = None,
) -> NormalisedReading:
    return NormalisedReading(
        intersection=intersection,
        approach=approach,
        lane=lane,
        device_id=f"{lane}-loop",
        ts_ms=ts_ms,
        interval_s=interval_s,
        counts=counts if counts is not None else {CAR: 1},
        occupancy_pct=occupancy_pct,
        speed_kmh=speed_kmh,
    )


def batch(offset: int, *readings: NormalisedReading, source_partition: int = 0) -> ReadingsBatch:
    return ReadingsBatch(
        source_partition=source_partition, source_offset=offset, readings=list(readings)
    )


def aggregator(
    *specs: str,
    grace_s: float = 5,
    protection: dict[tuple[str, str], bool] | None = None,
    idle_advance: bool = True,
) -> WindowedAggregator:
    return WindowedAggregator(
        "test-site",
        [WindowSpec.parse(s) for s in specs or ("60",)],
        grace_s=grace_s,
        pcu=PcuFactors(),
        protection=protection,
        idle_advance=idle_advance,
    )


def by_window_lane(metrics: list[ApproachMetrics]) -> dict[tuple[datetime, str | None], Any]:
    """Index metrics by (window start, lane), insisting that no window/lane appears twice."""
    out = {(m.window_start, m.lane): m for m in metrics}
    assert len(out) == len(metrics), "a window/lane was emitted more than once"
    return out


def total(m: ApproachMetrics) -> int:
    return sum(m.counts.values())


# --- WindowSpec ---------------------------------------------------------------------------


def test_parse_tumbling() -> None:
    spec = WindowSpec.parse("60")
    assert (spec.size_s, spec.step_s) == (60, 60)
    assert spec.label == "60s"


def test_parse_hopping() -> None:
    spec = WindowSpec.parse("300/60")
    assert (spec.size_s, spec.step_s) == (300, 60)
    assert spec.label == "300s-every-60s"


def test_explicit_equal_step_is_tumbling() -> None:
    assert WindowSpec.parse("120/120") == WindowSpec(120, 120)
    assert WindowSpec.parse("120/120").label == "120s"


@pytest.mark.parametrize(
    "text",
    [
        "60/120",  # step > size
        "300/70",  # size not a multiple of step
        "0",  # zero size
        "60/0",  # zero step
        "-60",  # negative
        "abc",  # not a number
    ],
)
def test_parse_rejects_invalid(text: str) -> None:
    with pytest.raises(ValueError):
        WindowSpec.parse(text)


def test_aggregator_needs_a_window() -> None:
    with pytest.raises(ValueError, match="at least one window"):
        WindowedAggregator("s", [], grace_s=5, pcu=PcuFactors())


# --- Exact values of one tumbling window -----------------------------------------------------


def test_tumbling_60s_exact_lane_and_approach_values() -> None:
    # Approach "n" is opposed (motorcycle 0.4 PCU); "s" is not in the map, so protected (0.2).
    agg = aggregator("60", grace_s=10, protection={("smd", "n"): False})
    store: dict[str, Any] = {}
    end = T0 + MIN  # every reading below is stamped 07:01:00 or earlier → window [07:00, 07:01)
    readings = [
        reading(T0 + 30 * SEC, {MC: 20, CAR: 4}, lane="n1", interval_s=30,
                occupancy_pct=10, speed_kmh=30),
        reading(end, {MC: 10, CAR: 2, BUS: 1}, lane="n1", interval_s=30,
                occupancy_pct=20, speed_kmh=36),
        reading(end, {CAR: 6, TRUCK: 1}, lane="n2", occupancy_pct=30, speed_kmh=50),
        reading(end, {MC: 30, CAR: 5}, lane="s1", approach="s", occupancy_pct=12, speed_kmh=40),
        # Speed only, no counts: weighs 1 in the mean speed, adds no occupancy time.
        reading(end, {}, lane="s2", approach="s", speed_kmh=20),
    ]
    out = agg.on_batch(store, 0, batch(0, *readings), arrival_ms=end)
    assert out.metrics == [] and out.late == []
    # Fires at end + grace = 07:01:10, not a millisecond before.
    assert agg.on_tick(store, 0, arrival_ms=end + 10 * SEC - 1).metrics == []
    metrics = agg.on_tick(store, 0, arrival_ms=end + 10 * SEC).metrics

    # Lane rows sorted, then approach rows (lane None).
    assert [(m.approach, m.lane) for m in metrics] == [
        ("n", "n1"), ("n", "n2"), ("s", "s1"), ("s", "s2"), ("n", None), ("s", None),
    ]
    for m in metrics:
        assert (m.site, m.intersection, m.window) == ("test-site", "smd", "60s")
        assert (m.window_start, m.window_end) == (T0_DT, T0_DT + timedelta(minutes=1))
    n1, n2, s1, s2, n, s = metrics

    # n1: 37 veh × 60/h = 2220; PCU 30×0.4 + 6×1 + 1×1.3 = 19.3 → ×60 = 1158.
    # Occupancy weighted by interval: (10×30 + 20×30) / 60 = 15.
    # Speed weighted by vehicles: (30×24 + 36×13) / 37 = 1188/37.
    assert n1.counts == {MC: 30, CAR: 6, BUS: 1}
    assert n1.flow_veh_per_hour == pytest.approx(2220.0)
    assert n1.flow_pcu_per_hour == pytest.approx(1158.0)
    assert n1.occupancy_pct == pytest.approx(15.0)
    assert n1.mean_speed_kmh == pytest.approx(1188 / 37)
    assert n1.readings == 2

    # n2: 7 veh → 420/h; PCU 6 + 1.3 = 7.3 → 438/h.
    assert n2.counts == {CAR: 6, TRUCK: 1}
    assert n2.flow_veh_per_hour == pytest.approx(420.0)
    assert n2.flow_pcu_per_hour == pytest.approx(438.0)
    assert (n2.occupancy_pct, n2.mean_speed_kmh, n2.readings) == (30.0, 50.0, 1)

    # Approach n: 44 veh → 2640/h; PCU 12 + 12 + 1.3 + 1.3 = 26.6 → 1596/h.
    # Occupancy (300 + 600 + 30×60) / 120 = 22.5; speed (720 + 468 + 50×7) / 44 = 1538/44.
    assert n.counts == {MC: 30, CAR: 12, BUS: 1, TRUCK: 1}
    assert n.flow_veh_per_hour == pytest.approx(2640.0)
    assert n.flow_pcu_per_hour == pytest.approx(1596.0)
    assert n.occupancy_pct == pytest.approx(22.5)
    assert n.mean_speed_kmh == pytest.approx(1538 / 44)
    assert n.readings == 3

    # s1 (protected): 35 veh → 2100/h; PCU 30×0.2 + 5 = 11 → 660/h.
    assert s1.counts == {MC: 30, CAR: 5}
    assert s1.flow_veh_per_hour == pytest.approx(2100.0)
    assert s1.flow_pcu_per_hour == pytest.approx(660.0)
    assert (s1.occupancy_pct, s1.mean_speed_kmh, s1.readings) == (12.0, 40.0, 1)

    # s2: nothing counted, no occupancy, speed of its single unit-weight reading.
    assert s2.counts == {}
    assert (s2.flow_veh_per_hour, s2.flow_pcu_per_hour) == (0.0, 0.0)
    assert (s2.occupancy_pct, s2.mean_speed_kmh, s2.readings) == (None, 20.0, 1)

    # Approach s: occupancy only from s1 (12); speed (40×35 + 20×1) / 36 = 1420/36.
    assert s.counts == {MC: 30, CAR: 5}
    assert s.flow_veh_per_hour == pytest.approx(2100.0)
    assert s.flow_pcu_per_hour == pytest.approx(660.0)
    assert s.occupancy_pct == pytest.approx(12.0)
    assert s.mean_speed_kmh == pytest.approx(1420 / 36)
    assert s.readings == 2


def test_occupancy_and_speed_none_without_data() -> None:
    agg = aggregator("60")
    store: dict[str, Any] = {}
    agg.on_batch(store, 0, batch(0, reading(T0 + MIN, {CAR: 3})), arrival_ms=T0 + MIN)
    lane, approach = agg.on_tick(store, 0, arrival_ms=T0 + 2 * MIN).metrics
    for m in (lane, approach):
        assert (m.occupancy_pct, m.mean_speed_kmh) == (None, None)
        assert m.flow_veh_per_hour == pytest.approx(180.0)  # 3 × 60


# --- Interval-end labelling ------------------------------------------------------------------


def test_readings_labelled_by_interval_end() -> None:
    agg = aggregator("60")
    store: dict[str, Any] = {}
    readings = [
        reading(T0, {CAR: 1}),  # 07:00:00 ends the interval [06:59, 07:00)
        reading(T0 + 1, {CAR: 2}),  # 07:00:00.001 → [07:00, 07:01)
        reading(T0 + MIN, {CAR: 4}),  # 07:01:00 → [07:00, 07:01), not [07:01, 07:02)
        reading(T0 + MIN + 1, {CAR: 8}),  # 07:01:00.001 → [07:01, 07:02)
    ]
    # Arrival 07:01:00.001 already closes [06:59, 07:00) (watermark − grace ≥ 07:00).
    emitted = agg.on_batch(store, 0, batch(0, *readings), arrival_ms=T0 + MIN + 1).metrics
    emitted += agg.on_tick(store, 0, arrival_ms=T0 + 10 * MIN).metrics
    got = by_window_lane(emitted)
    lanes = {start: total(m) for (start, lane), m in got.items() if lane == "n1"}
    assert lanes == {
        T0_DT - timedelta(minutes=1): 1,
        T0_DT: 6,
        T0_DT + timedelta(minutes=1): 8,
    }


# --- Grace, late readings, firing once -------------------------------------------------------


def test_out_of_order_within_grace_counted_late_reading_returned() -> None:
    agg = aggregator("60", grace_s=30)
    store: dict[str, Any] = {}
    assert agg.on_batch(store, 0, batch(0, reading(T0 + MIN, {CAR: 1})),
                        arrival_ms=T0 + MIN).metrics == []
    # Watermark 07:02:00 → windows ending by 07:01:30 fire: only [07:00, 07:01).
    first = agg.on_batch(store, 0, batch(1, reading(T0 + 2 * MIN, {CAR: 2})),
                         arrival_ms=T0 + 2 * MIN).metrics
    assert [(m.window_start, m.lane, total(m)) for m in first] == [
        (T0_DT, "n1", 1), (T0_DT, None, 1),
    ]
    # Out of order (07:01:30 after 07:02:00) but the watermark is only 07:02:05 < 07:02:30.
    out = agg.on_batch(store, 0, batch(2, reading(T0 + MIN + 30 * SEC, {CAR: 4})),
                       arrival_ms=T0 + 2 * MIN + 5 * SEC)
    assert out.late == [] and out.metrics == []
    second = agg.on_tick(store, 0, arrival_ms=T0 + 2 * MIN + 30 * SEC).metrics
    minute1 = T0_DT + timedelta(minutes=1)
    assert [(m.window_start, m.lane, total(m)) for m in second] == [
        (minute1, "n1", 6), (minute1, None, 6),
    ]
    assert second[0].flow_veh_per_hour == pytest.approx(360.0)

    # Both windows have fired: readings for them now come back as late, with a reason.
    late_a = reading(T0 + MIN + 45 * SEC, {CAR: 8})
    late_b = reading(T0 + 30 * SEC, {CAR: 16})
    on_time = reading(T0 + 3 * MIN, {CAR: 32})
    out = agg.on_batch(store, 0, batch(3, late_a, late_b, on_time),
                       arrival_ms=T0 + 2 * MIN + 40 * SEC)
    assert [r for r, _ in out.late] == [late_a, late_b]
    for _, reason in out.late:
        assert "window closed" in reason
        assert "grace 30 s" in reason
    # Nothing about the fired windows changes, and they are not emitted again.
    rest = agg.on_tick(store, 0, arrival_ms=T0 + 30 * MIN).metrics
    assert [(m.window_start, m.lane, total(m)) for m in rest] == [
        (T0_DT + timedelta(minutes=2), "n1", 32), (T0_DT + timedelta(minutes=2), None, 32),
    ]


def test_window_fires_exactly_once() -> None:
    agg = aggregator("60", grace_s=5)
    store: dict[str, Any] = {}
    emitted: list[ApproachMetrics] = []
    emitted += agg.on_batch(store, 0, batch(0, reading(T0 + MIN, {CAR: 2})),
                            arrival_ms=T0 + MIN).metrics
    for arrival in (T0 + MIN + 5 * SEC, T0 + MIN + 5 * SEC, T0 + MIN + 6 * SEC, T0 + 5 * MIN):
        emitted += agg.on_tick(store, 0, arrival_ms=arrival).metrics
    # A later reading in a new window must not re-emit the earlier one either.
    emitted += agg.on_batch(store, 0, batch(1, reading(T0 + 7 * MIN, {CAR: 3})),
                            arrival_ms=T0 + 7 * MIN).metrics
    for arrival in (T0 + 8 * MIN, T0 + 9 * MIN):
        emitted += agg.on_tick(store, 0, arrival_ms=arrival).metrics
    got = by_window_lane(emitted)  # asserts no duplicates
    assert {k: total(m) for k, m in got.items()} == {
        (T0_DT, "n1"): 2,
        (T0_DT, None): 2,
        (T0_DT + timedelta(minutes=6), "n1"): 3,
        (T0_DT + timedelta(minutes=6), None): 3,
    }


def test_fired_rows_wait_in_the_store_until_marked_delivered() -> None:
    # A worker dies after the close reached the store (its changelog) but before the rows
    # reached Kafka: the next worker, with the same store, finds them and sends them.
    agg = aggregator("60", grace_s=5)
    store: dict[str, Any] = {}
    agg.on_batch(store, 0, batch(0, reading(T0 + MIN, {CAR: 2})), arrival_ms=T0 + MIN)
    fired = agg.on_tick(store, 0, arrival_ms=T0 + MIN + 5 * SEC).metrics
    assert len(fired) == 2
    restarted = aggregator("60", grace_s=5)
    assert restarted.unsent(copy.deepcopy(store), 0) == fired
    assert restarted.unsent(store, 1) == []  # another partition's close is its own
    # Nothing new fires on the next tick; what was left is still there, and stays once.
    assert restarted.on_tick(store, 0, arrival_ms=T0 + MIN + 6 * SEC).metrics == []
    assert restarted.unsent(store, 0) == fired
    restarted.mark_sent(store, 0)
    assert restarted.unsent(store, 0) == []
    # The next close brings only its own rows.
    restarted.on_batch(store, 0, batch(1, reading(T0 + 2 * MIN, {CAR: 1})),
                       arrival_ms=T0 + 2 * MIN)
    second = restarted.on_tick(store, 0, arrival_ms=T0 + 2 * MIN + 5 * SEC).metrics
    assert restarted.unsent(store, 0) == second and {total(m) for m in second} == {1}


def test_a_restart_tick_keeps_held_time_from_counting_as_idle() -> None:
    # Data up to 07:00:30, then the worker held its ticks for a minute (a broker outage) and
    # sends a restart tick at 07:01:30: idle time counts from there. The device's buffered
    # reading for [07:00, 07:01), arriving 4 s later, still counts; with a plain tick instead
    # the window would have closed at once, without it.
    def run(first_tick_restarts: bool) -> tuple[list[Any], list[ApproachMetrics]]:
        agg = aggregator("60", grace_s=5)
        store: dict[str, Any] = {}
        agg.on_batch(store, 0, batch(0, reading(T0 + 30 * SEC, {CAR: 2}, interval_s=30)),
                     arrival_ms=T0 + 30 * SEC)
        fired = agg.on_tick(store, 0, arrival_ms=T0 + 90 * SEC,
                            restart_idle=first_tick_restarts).metrics
        late = agg.on_batch(store, 0, batch(1, reading(T0 + MIN, {CAR: 1}, interval_s=30,
                                                       lane="n2")),
                            arrival_ms=T0 + 94 * SEC).late
        fired += agg.on_tick(store, 0, arrival_ms=T0 + 100 * SEC).metrics
        return late, fired

    late, fired = run(first_tick_restarts=True)
    assert late == []
    assert {(m.lane, total(m)) for m in fired} == {("n1", 2), ("n2", 1), (None, 3)}
    late, fired = run(first_tick_restarts=False)
    assert len(late) == 1
    assert {(m.lane, total(m)) for m in fired} == {("n1", 2), (None, 2)}


def test_data_after_an_outage_moves_event_time_by_its_stamps_only() -> None:
    # A worker takes over from one that died after absorbing junction a's reading of
    # 07:00:50 but not junction b's, stamped the same. b's arrives 40 s later, then a's
    # backlog. Were the 40 s idle time, b's batch would close [07:00, 07:01) and a's backlog
    # would be late; only a tick (held while readings wait upstream) adds idle time.
    agg = aggregator("60", grace_s=5)
    store: dict[str, Any] = {}
    agg.on_batch(store, 0, batch(0, reading(T0 + 50 * SEC, interval_s=10, intersection="a")),
                 arrival_ms=T0 + 50 * SEC)
    out = agg.on_batch(store, 0, batch(1, reading(T0 + 50 * SEC, interval_s=10,
                                                  intersection="b")),
                       arrival_ms=T0 + 90 * SEC)
    assert out.metrics == []
    out = agg.on_batch(store, 0, batch(2, reading(T0 + MIN, interval_s=10, intersection="a")),
                       arrival_ms=T0 + 90 * SEC + 100)
    assert (out.late, out.metrics) == ([], [])
    fired = agg.on_tick(store, 0, arrival_ms=T0 + 95 * SEC + 100).metrics
    assert {(m.intersection, m.lane, total(m)) for m in fired} == {
        ("a", "n1", 2), ("a", None, 2), ("b", "n1", 1), ("b", None, 1)}


def test_closed_panes_are_dropped_from_store() -> None:
    # State must not grow without bound: once every window using a pane fired, it is gone.
    agg = aggregator("60")
    store: dict[str, Any] = {}
    agg.on_batch(store, 0, batch(0, reading(T0 + MIN)), arrival_ms=T0 + MIN)
    assert sum(k.startswith("pane|") for k in store) == 1
    agg.on_tick(store, 0, arrival_ms=T0 + 2 * MIN)
    assert [k for k in store if k.startswith("pane|")] == []


# --- Watermark -------------------------------------------------------------------------------


def test_watermark_advances_with_arrival_time_while_idle() -> None:
    agg = aggregator("60", grace_s=5)
    store: dict[str, Any] = {}
    # The device clock is 2 min behind the broker: the reading of 07:01:00 arrives at 07:03:00.
    agg.on_batch(store, 0, batch(0, reading(T0 + MIN, {CAR: 4})), arrival_ms=T0 + 3 * MIN)
    # Watermark = 07:01:00 + (arrival − 07:03:00); the window fires at watermark 07:01:05.
    assert agg.on_tick(store, 0, arrival_ms=T0 + 3 * MIN + 5 * SEC - 1).metrics == []
    fired = agg.on_tick(store, 0, arrival_ms=T0 + 3 * MIN + 5 * SEC).metrics
    assert [(m.window_start, m.lane, total(m)) for m in fired] == [
        (T0_DT, "n1", 4), (T0_DT, None, 4),
    ]


def test_without_idle_advance_only_readings_move_the_watermark() -> None:
    agg = aggregator("60", grace_s=5, idle_advance=False)
    store: dict[str, Any] = {}
    agg.on_batch(store, 0, batch(0, reading(T0 + MIN, {CAR: 4})), arrival_ms=T0 + MIN)
    assert agg.on_tick(store, 0, arrival_ms=T0 + 60 * MIN).metrics == []
    out = agg.on_batch(store, 0, batch(1, reading(T0 + MIN + 5 * SEC, {CAR: 1})),
                       arrival_ms=T0 + 60 * MIN)
    assert [(m.window_start, m.lane, total(m)) for m in out.metrics] == [
        (T0_DT, "n1", 4), (T0_DT, None, 4),
    ]


def test_tick_on_empty_partition_emits_nothing() -> None:
    agg = aggregator("60")
    store: dict[str, Any] = {}
    assert agg.on_tick(store, 0, arrival_ms=T0).metrics == []
    assert store == {}


# --- Hopping ---------------------------------------------------------------------------------


def test_hopping_300s_every_60s_sums_the_right_panes() -> None:
    agg = aggregator("300/60", grace_s=0)
    store: dict[str, Any] = {}
    readings = [
        reading(T0 + 1 * MIN, {CAR: 1}),  # pane 07:00
        reading(T0 + 2 * MIN, {CAR: 2}),  # pane 07:01
        reading(T0 + 4 * MIN, {CAR: 4}),  # pane 07:03
        reading(T0 + 7 * MIN, {CAR: 8}),  # pane 07:06
    ]
    # With no grace the batch itself fires every window ending by 07:07; the tick the rest.
    metrics = agg.on_batch(store, 0, batch(0, *readings), arrival_ms=T0 + 7 * MIN).metrics
    assert max(m.window_end for m in metrics) == T0_DT + timedelta(minutes=7)
    metrics += agg.on_tick(store, 0, arrival_ms=T0 + 20 * MIN).metrics
    got = by_window_lane(metrics)
    lane = {start: m for (start, ln), m in got.items() if ln == "n1"}
    # Window [start, start + 5 min) sums the panes start … start + 4 min. Flow = veh × 12/h.
    expected_vehicles = {
        -4: 1,  # [06:56, 07:01): 07:00
        -3: 3,  # [06:57, 07:02): 07:00, 07:01
        -2: 3,  # [06:58, 07:03): 07:00, 07:01
        -1: 7,  # [06:59, 07:04): 07:00, 07:01, 07:03
        0: 7,  # [07:00, 07:05): 07:00, 07:01, 07:03
        1: 6,  # [07:01, 07:06): 07:01, 07:03
        2: 12,  # [07:02, 07:07): 07:03, 07:06
        3: 12,  # [07:03, 07:08): 07:03, 07:06
        4: 8,  # [07:04, 07:09): 07:06
        5: 8,  # [07:05, 07:10): 07:06
        6: 8,  # [07:06, 07:11): 07:06; [07:07, 07:12) on has no reading, so no row
    }
    assert {
        int((start - T0_DT).total_seconds() // 60): total(m) for start, m in lane.items()
    } == expected_vehicles
    for start, m in lane.items():
        assert m.window == "300s-every-60s"
        assert m.window_end - start == timedelta(minutes=5)
        assert m.flow_veh_per_hour == pytest.approx(total(m) * 12.0)
        assert got[(start, None)].flow_veh_per_hour == pytest.approx(total(m) * 12.0)
    # Windows come out in order of their end.
    assert [m.window_end for m in metrics if m.lane] == sorted(m.window_end for m in lane.values())
    assert lane[T0_DT - timedelta(minutes=1)].readings == 3


def test_tumbling_and_hopping_share_panes() -> None:
    agg = aggregator("60", "300/60", grace_s=0)
    store: dict[str, Any] = {}
    b = batch(0, reading(T0 + MIN, {CAR: 2}), reading(T0 + 3 * MIN, {CAR: 3}))
    metrics = agg.on_batch(store, 0, b, arrival_ms=T0 + 3 * MIN).metrics
    metrics += agg.on_tick(store, 0, arrival_ms=T0 + 20 * MIN).metrics
    tumbling = {m.window_start: total(m) for m in metrics if m.window == "60s" and m.lane}
    hopping = {m.window_start: total(m) for m in metrics
               if m.window == "300s-every-60s" and m.lane}
    minute = timedelta(minutes=1)
    assert tumbling == {T0_DT: 2, T0_DT + 2 * minute: 3}
    assert hopping == {
        T0_DT - 4 * minute: 2,
        T0_DT - 3 * minute: 2,
        T0_DT - 2 * minute: 5,
        T0_DT - minute: 5,
        T0_DT: 5,
        T0_DT + minute: 3,
        T0_DT + 2 * minute: 3,
    }


# --- Replay ----------------------------------------------------------------------------------


def test_replayed_batch_applied_once() -> None:
    agg = aggregator("60")
    store: dict[str, Any] = {}
    b = batch(7, reading(T0 + MIN, {CAR: 5}), reading(T0 + MIN, {MC: 3}, lane="n2"))
    assert agg.on_batch(store, 0, b, arrival_ms=T0 + MIN).replayed is False
    again = agg.on_batch(store, 0, b, arrival_ms=T0 + MIN)
    assert again.replayed is True
    assert (again.metrics, again.late) == ([], [])
    # An older offset of the same source partition is a replay too.
    older = batch(6, reading(T0 + MIN, {CAR: 100}))
    assert agg.on_batch(store, 0, older, arrival_ms=T0 + MIN).replayed is True
    # The same offset from another source partition is a different message.
    other = batch(7, reading(T0 + MIN, {CAR: 1}), source_partition=1)
    assert agg.on_batch(store, 0, other, arrival_ms=T0 + MIN).replayed is False
    got = by_window_lane(agg.on_tick(store, 0, arrival_ms=T0 + 10 * MIN).metrics)
    assert got[(T0_DT, "n1")].counts == {CAR: 6}
    assert got[(T0_DT, "n2")].counts == {MC: 3}
    assert got[(T0_DT, None)].counts == {CAR: 6, MC: 3}
    assert got[(T0_DT, None)].readings == 3


def test_a_resent_reading_counts_once_whatever_message_brings_it() -> None:
    agg = aggregator("60")
    store: dict[str, Any] = {}
    n1 = reading(T0 + MIN, {CAR: 5}).model_copy(update={"seq": 41})
    n2 = reading(T0 + MIN, {MC: 3}, lane="n2").model_copy(update={"seq": 41})  # another device
    assert agg.on_batch(store, 0, batch(7, n1, n2), arrival_ms=T0 + MIN).resent == 0
    # The same (device, seq) in a new message (another worker took the re-send, or a device
    # posted straight to Kafka) and again from another source partition: left out.
    again = agg.on_batch(store, 0, batch(8, n1), arrival_ms=T0 + MIN)
    assert (again.replayed, again.resent) == (False, 1)
    elsewhere = batch(3, n1, source_partition=1)
    assert agg.on_batch(store, 0, elsewhere, arrival_ms=T0 + MIN).resent == 1
    # A new seq of the same device counts; so does a reading without seq, every time.
    fresh = n1.model_copy(update={"seq": 42, "counts": {CAR: 2}})
    no_seq = reading(T0 + MIN, {BUS: 1})
    out = agg.on_batch(store, 0, batch(9, fresh, no_seq, no_seq), arrival_ms=T0 + MIN)
    assert out.resent == 0
    got = by_window_lane(agg.on_tick(store, 0, arrival_ms=T0 + 10 * MIN).metrics)
    assert got[(T0_DT, "n1")].counts == {CAR: 7, BUS: 2}
    assert got[(T0_DT, "n1")].readings == 4
    assert got[(T0_DT, "n2")].counts == {MC: 3}


def test_pane_records_keep_sequence_numbers_as_ranges() -> None:
    agg = aggregator("60")
    store: dict[str, Any] = {}
    readings = [reading(T0 + MIN, {CAR: 1}).model_copy(update={"seq": n})
                for n in (*range(100, 160), 170)]
    agg.on_batch(store, 0, batch(0, *readings), arrival_ms=T0 + MIN)
    [pane] = [v for k, v in store.items() if k.startswith("pane|")]
    assert pane["seq"] == {"n1-loop": [[100, 159], [170, 170]]}


@given(st.lists(st.integers(0, 40), max_size=60))
def test_add_seq_keeps_exactly_the_numbers_added(numbers: list[int]) -> None:
    ranges: list[list[int]] = []
    seen: set[int] = set()
    for n in numbers:
        assert add_seq(ranges, n) is (n not in seen)
        seen.add(n)
    assert {n for lo, hi in ranges for n in range(lo, hi + 1)} == seen
    assert all(a[1] + 1 < b[0] for a, b in itertools.pairwise(ranges)), ranges


def test_replay_after_partial_write_does_not_double_count() -> None:
    # A crash after the pane writes but before the partition state is written: the replay
    # passes the partition check and must be stopped by the offsets each pane remembers.
    agg = aggregator("60")
    store: dict[str, Any] = {}
    agg.on_batch(store, 0, batch(0, reading(T0 + MIN, {CAR: 1})), arrival_ms=T0 + MIN)
    state_before = copy.deepcopy(store["state|0"])
    b = batch(1, reading(T0 + MIN, {CAR: 2}), reading(T0 + MIN, {CAR: 4}, lane="n2"))
    agg.on_batch(store, 0, b, arrival_ms=T0 + MIN)
    store["state|0"] = state_before  # the lost state write
    assert agg.on_batch(store, 0, b, arrival_ms=T0 + MIN).replayed is False
    got = by_window_lane(agg.on_tick(store, 0, arrival_ms=T0 + 10 * MIN).metrics)
    assert got[(T0_DT, "n1")].counts == {CAR: 3}
    assert got[(T0_DT, "n2")].counts == {CAR: 4}
    assert got[(T0_DT, None)].readings == 3


class _Crash(Exception):
    pass


class _CrashOnStateWrite(dict[str, Any]):
    """A store in which each write is durable on its own, and the next partition-state write
    fails once (the process dies there)."""

    armed = False

    def __setitem__(self, key: str, value: Any) -> None:
        if self.armed and key.startswith("state|"):
            self.armed = False
            raise _Crash
        super().__setitem__(key, value)


def test_replay_after_crash_before_state_write_keeps_fired_window() -> None:
    agg = aggregator("60", grace_s=5)
    store = _CrashOnStateWrite()
    agg.on_batch(store, 0, batch(0, reading(T0 + MIN, {CAR: 3})), arrival_ms=T0 + MIN)
    b = batch(1, reading(T0 + 2 * MIN + 10 * SEC, {CAR: 1}))
    store.armed = True
    with pytest.raises(_Crash):  # fires [07:00, 07:01), then dies writing the state
        agg.on_batch(store, 0, b, arrival_ms=T0 + 2 * MIN + 10 * SEC)
    replayed = agg.on_batch(store, 0, b, arrival_ms=T0 + 2 * MIN + 10 * SEC).metrics
    replayed += agg.on_tick(store, 0, arrival_ms=T0 + 30 * MIN).metrics
    got = by_window_lane(replayed)
    assert (T0_DT, "n1") in got, "window [07:00, 07:01) was never emitted after the replay"
    assert got[(T0_DT, "n1")].counts == {CAR: 3}


# --- Partitions ------------------------------------------------------------------------------


def test_partitions_are_independent() -> None:
    # 1 and 11 share a textual prefix: their keys must still not mix.
    agg = aggregator("60", grace_s=5)
    store: dict[str, Any] = {}
    agg.on_batch(store, 1, batch(0, reading(T0 + MIN, {CAR: 1})), arrival_ms=T0 + MIN)
    # Same source offset, other partition: not a replay.
    out = agg.on_batch(store, 11, batch(0, reading(T0 + MIN, {CAR: 10})), arrival_ms=T0 + MIN)
    assert out.replayed is False
    # Partition 11 moves on in event time; partition 1 stays open.
    out = agg.on_batch(store, 11, batch(1, reading(T0 + 5 * MIN, {CAR: 20}, lane="n2")),
                       arrival_ms=T0 + MIN)
    assert [(m.window_start, m.lane, total(m)) for m in out.metrics] == [
        (T0_DT, "n1", 10), (T0_DT, None, 10),
    ]
    assert agg.on_tick(store, 1, arrival_ms=T0 + MIN + 4 * SEC).metrics == []
    # A reading in partition 1 for a window partition 11 already fired is not late.
    out = agg.on_batch(store, 1, batch(2, reading(T0 + 30 * SEC, {CAR: 2})),
                       arrival_ms=T0 + MIN + 4 * SEC)
    assert out.late == [] and out.metrics == []
    fired = agg.on_tick(store, 1, arrival_ms=T0 + MIN + 5 * SEC).metrics
    assert [(m.window_start, m.lane, total(m)) for m in fired] == [
        (T0_DT, "n1", 3), (T0_DT, None, 3),
    ]
    # The other way round: partition 1 fires [07:04, 07:05) while partition 11's pane of the
    # same window (20 cars) is still open; neither may see the other's counts.
    minute4 = T0_DT + timedelta(minutes=4)
    agg.on_batch(store, 1, batch(3, reading(T0 + 5 * MIN, {CAR: 4})), arrival_ms=T0 + 5 * MIN)
    fired = agg.on_tick(store, 1, arrival_ms=T0 + 5 * MIN + 5 * SEC).metrics
    assert [(m.window_start, m.lane, total(m)) for m in fired] == [
        (minute4, "n1", 4), (minute4, None, 4),
    ]
    fired = agg.on_tick(store, 11, arrival_ms=T0 + 5 * MIN + 5 * SEC).metrics
    assert [(m.window_start, m.lane, total(m)) for m in fired] == [
        (minute4, "n2", 20), (minute4, None, 20),
    ]


# --- The first readings of a partition close nothing before the watermark passes them ---------


def test_earlier_reading_after_first_batch_within_grace_is_counted() -> None:
    agg = aggregator("60", grace_s=120)
    store: dict[str, Any] = {}
    agg.on_batch(store, 0, batch(0, reading(T0 + 2 * MIN, {CAR: 1})), arrival_ms=T0 + 2 * MIN)
    # Watermark 07:02:01; window [07:00, 07:01) may fire only at 07:03:00.
    out = agg.on_batch(store, 0, batch(1, reading(T0 + MIN, {CAR: 5})),
                       arrival_ms=T0 + 2 * MIN + SEC)
    assert out.late == []
    got = by_window_lane(agg.on_tick(store, 0, arrival_ms=T0 + 30 * MIN).metrics)
    assert got[(T0_DT, "n1")].counts == {CAR: 5}


# --- Property: every metric equals a brute-force computation ---------------------------------

LANES = [("smd", "n", "n1"), ("smd", "n", "n2"), ("smd", "s", "s1"), ("ktb", "e", "e1")]
SPEC_SETS = [["60"], ["300/60"], ["60", "300/60"], ["120/60", "180"], ["90/30"]]
GRACE_S = 3600  # larger than the whole data span, so no reading is ever late


@st.composite
def readings_st(draw: st.DrawFn) -> NormalisedReading:
    intersection, approach, lane = draw(st.sampled_from(LANES))
    return NormalisedReading(
        intersection=intersection,
        approach=approach,
        lane=lane,
        device_id=lane,
        ts_ms=T0 + draw(st.integers(0, 40)) * 15 * SEC,  # 07:00:00 … 07:10:00 every 15 s
        interval_s=draw(st.sampled_from([15, 30, 60])),
        counts=draw(st.dictionaries(st.sampled_from(list(VehicleClass)), st.integers(1, 30),
                                    max_size=3)),
        occupancy_pct=draw(st.none() | st.integers(0, 100).map(float)),
        speed_kmh=draw(st.none() | st.integers(0, 120).map(float)),
    )


def brute_force(
    specs: list[WindowSpec], readings: list[NormalisedReading], pcu: PcuFactors,
    protection: dict[tuple[str, str], bool],
) -> dict[MetricKey, dict[str, Any]]:
    """Expected metrics from first principles: a window [start, end) holds the readings with
    start < ts <= end (interval-end labelling); one row per lane and per approach."""
    groups: dict[MetricKey, list[NormalisedReading]] = defaultdict(list)
    for spec in specs:
        size, step = spec.size_s * 1000, spec.step_s * 1000
        for r in readings:
            end = -(-r.ts_ms // step) * step  # first window end at or after ts
            while end - size < r.ts_ms:
                start = at(end - size)
                groups[(spec.label, start, r.intersection, r.approach, r.lane)].append(r)
                groups[(spec.label, start, r.intersection, r.approach, None)].append(r)
                end += step
    size_by_label = {s.label: s.size_s for s in specs}
    expected: dict[MetricKey, dict[str, Any]] = {}
    for key, rs in groups.items():
        label, _, intersection, approach, _ = key
        counts: dict[VehicleClass, int] = defaultdict(int)
        for r in rs:
            for cls, n in r.counts.items():
                counts[cls] += n
        per_hour = 3600 / size_by_label[label]
        protected = protection[(intersection, approach)]
        pcu_total = sum(pcu.for_class(c, protected=protected) * n for c, n in counts.items())
        occ = [(r.occupancy_pct, r.interval_s) for r in rs if r.occupancy_pct is not None]
        spd = [(r.speed_kmh, sum(r.counts.values()) if r.counts else 1)
               for r in rs if r.speed_kmh is not None]
        occ_time = sum(t for _, t in occ)
        spd_weight = sum(w for _, w in spd)
        expected[key] = {
            "counts": dict(counts),
            "flow_veh_per_hour": sum(counts.values()) * per_hour,
            "flow_pcu_per_hour": pcu_total * per_hour,
            "occupancy_pct": sum(o * t for o, t in occ) / occ_time if occ_time else None,
            "mean_speed_kmh": sum(v * w for v, w in spd) / spd_weight if spd_weight else None,
            "readings": len(rs),
        }
    return expected


@settings(max_examples=50, deadline=None)
@given(
    readings=st.lists(readings_st(), min_size=1, max_size=30),
    spec_texts=st.sampled_from(SPEC_SETS),
    opposed=st.sets(st.sampled_from(sorted({(i, a) for i, a, _ in LANES}))),
    data=st.data(),
)
def test_metrics_match_brute_force(
    readings: list[NormalisedReading],
    spec_texts: list[str],
    opposed: set[tuple[str, str]],
    data: st.DataObject,
) -> None:
    specs = [WindowSpec.parse(t) for t in spec_texts]
    protection = {(i, a): (i, a) not in opposed for i, a, _ in LANES}
    pcu = PcuFactors()
    agg = WindowedAggregator("prop", specs, grace_s=GRACE_S, pcu=pcu, protection=protection)
    store: dict[str, Any] = {}

    order = data.draw(st.permutations(readings), label="arrival order")
    cuts = sorted(data.draw(st.sets(st.integers(1, len(order) - 1)), label="batch cuts")
                  ) if len(order) > 1 else []
    bounds = [0, *cuts, len(order)]
    emitted: list[ApproachMetrics] = []
    for offset, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        out = agg.on_batch(store, 0, batch(offset, *order[lo:hi]), arrival_ms=T0 + offset)
        assert out.late == []
        emitted += out.metrics
    assert emitted == []  # the grace outlasts the data, so nothing fires before the tick
    # Far enough for the last window of every spec, close enough to iterate quickly.
    emitted += agg.on_tick(store, 0, arrival_ms=T0 + GRACE_S * 1000 + 60 * MIN).metrics

    got: dict[MetricKey, ApproachMetrics] = {
        (m.window, m.window_start, m.intersection, m.approach, m.lane): m for m in emitted
    }
    assert len(got) == len(emitted), "a window/lane was emitted more than once"
    expected = brute_force(specs, readings, pcu, protection)
    assert set(got) == set(expected)
    for key, want in expected.items():
        m = got[key]
        spec = next(s for s in specs if s.label == key[0])
        assert m.window_end - m.window_start == timedelta(seconds=spec.size_s)
        assert m.counts == want["counts"]
        assert m.readings == want["readings"]
        assert m.flow_veh_per_hour == pytest.approx(want["flow_veh_per_hour"])
        assert m.flow_pcu_per_hour == pytest.approx(want["flow_pcu_per_hour"])
        assert m.occupancy_pct == pytest.approx(want["occupancy_pct"])
        assert m.mean_speed_kmh == pytest.approx(want["mean_speed_kmh"])
    assert [k for k in store if k.startswith("pane|")] == []  # all state released


def test_camera_counts_aggregate_beside_field_counts_not_into_them() -> None:
    agg = WindowedAggregator("s", [WindowSpec(60, 60)], grace_s=5, pcu=PcuFactors())
    store: dict[str, Any] = {}
    loop = NormalisedReading(intersection="x", approach="n", lane="n1", device_id="loop",
                             ts_ms=T0 + MIN, interval_s=60, counts={CAR: 10})
    camera = NormalisedReading(intersection="x", approach="n", lane="n1",
                               device_id="cam:n1-count", ts_ms=T0 + MIN, interval_s=60,
                               counts={CAR: 9, MC: 3}, source="camera")
    agg.on_batch(store, 0, ReadingsBatch(source_partition=0, source_offset=0,
                                         readings=[loop]), arrival_ms=T0 + MIN)
    agg.on_batch(store, 0, ReadingsBatch(source_topic="camera-frames", source_partition=0,
                                         source_offset=0, readings=[camera]),
                 arrival_ms=T0 + MIN)
    out = agg.on_tick(store, 0, arrival_ms=T0 + 2 * MIN)
    by_key = {(m.source, m.lane): m.counts for m in out.metrics}
    assert by_key == {("field", "n1"): {CAR: 10}, ("field", None): {CAR: 10},
                      ("camera", "n1"): {CAR: 9, MC: 3}, ("camera", None): {CAR: 9, MC: 3}}
