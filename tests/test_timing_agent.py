"""The timing agent in a real worker (Tansu, InfluxDB 1.6): loop readings in, recommendations
out, the same as the closed-loop evaluator's path makes from the same metrics; stale data
keeps the running plan and says so."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from simpang.recommend import LaneDemand, plan_of, recommend
from simpang.records import METRICS_LIST, TimingRecommendation
from simpang.settings import DEMO_SITE_FILE
from simpang.site_file import load_site
from simpang.timing_safety import check_plan
from streams.timing import TimingService
from tests.conftest import Pipeline

pytestmark = pytest.mark.integration

KEY = "smd-lembuswana"
WINDOW = "300s-every-60s"


def minute_of_readings(ts: datetime, flows: dict[str, int]) -> list[dict[str, Any]]:
    """One minute of every loop of the intersection: ``flows`` cars and motorcycles per
    approach letter (n, e, s, w), on each of its two lanes."""
    out = []
    for approach, cars in flows.items():
        for lane in (1, 2):
            out.append({"device_id": f"{KEY}-{approach}{lane}-loop", "kind": "loop",
                        "ts": ts.isoformat(), "interval_s": 60,
                        "counts": {"car": cars, "motorcycle": 2 * cars},
                        "occupancy_pct": 20.0, "speed_kmh": 30.0})
    return out


def test_timing_agent_recommends_like_the_evaluator_and_falls_back_when_stale(
    pipeline_factory: Callable[..., Pipeline],
) -> None:
    pipeline = pipeline_factory(
        SIMPANG_WINDOWS__GRACE_S="1", SIMPANG_TIMING__EVERY_CYCLES="1",
        SIMPANG_TIMING__MAX_AGE_S="150", SIMPANG_TIMING__CHECK_INTERVAL_S="1")
    # Seven minutes ending 90 s ago: the north-south road carries three times the east-west.
    end = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(seconds=90)
    start = end - timedelta(minutes=7)
    minutes = [start + timedelta(minutes=m + 1) for m in range(7)]
    pipeline.send([(KEY, minute_of_readings(ts, {"n": 9, "s": 9, "e": 3, "w": 3}))
                   for ts in minutes])

    # The windows close, the agent recommends; then, with no newer metrics, the watchdog
    # finds them older than 150 s and keeps the running plan, saying why.
    deadline = time.monotonic() + 120
    made: list[TimingRecommendation] = []
    while time.monotonic() < deadline:
        made = [TimingRecommendation.model_validate(r) for r in
                pipeline.read_topic("timing-recommendations", count=50, timeout_s=2)]
        if any(r.status == "fallback" and r.reasons[0].startswith("stale") for r in made):
            break
        pipeline.assert_worker_alive()
    mine = [r for r in made if r.intersection == KEY]
    recommended = [r for r in mine if r.status == "recommended"]
    assert recommended, [r.reasons for r in mine]
    stale = [r for r in mine if r.status == "fallback" and r.reasons[0].startswith("stale")]
    assert stale, [r.reasons for r in mine]

    site = load_site(DEMO_SITE_FILE)
    intersection = site.intersection(KEY)
    # North-south gets more green than east-west, within the guardrails, and it is safe.
    last = recommended[-1]
    phases = {p.id: p.movements[0].split(":")[0] for p in intersection.phases}
    greens = {phases[p]: g for p, g in last.greens_s.items()}
    assert greens["north"] > greens["east"] and greens["south"] > greens["west"]
    assert check_plan(intersection, plan_of(last)) == []
    assert stale[-1].greens_s == last.greens_s  # the adopted plan stays
    assert "limit 150 s" in stale[-1].reasons[0]

    # The evaluator's path (LaneDemand + recommend, running plan = the last adopted one)
    # from the approach-metrics the agent read makes exactly the agent's recommendations.
    rows = [row for message in pipeline.read_topic("approach-metrics", count=200, timeout_s=3)
            for row in METRICS_LIST.validate_python(message)
            if row.intersection == KEY and row.window == WINDOW]
    running = intersection.plan
    for agent_made in recommended:
        demand = LaneDemand(intersection, WINDOW)
        demand.update([row for row in rows if row.window_end <= agent_made.ts])
        evaluator_made = recommend(site.id, intersection, demand, running=running,
                                   now=agent_made.ts, max_age_s=150)
        assert evaluator_made == agent_made
        running = plan_of(agent_made)

    # And to InfluxDB: the recommendation, its phases and approaches.
    points = pipeline.wait_rows(
        f"SELECT * FROM timing_recommendations WHERE intersection = '{KEY}'",
        lambda r: len(r) >= len(recommended) + 1)
    assert {p["status"] for p in points} == {"recommended", "fallback"}
    assert any(p["reasons"].startswith("stale metrics") for p in points)
    phase_points = pipeline.wait_rows(
        f"SELECT * FROM timing_phases WHERE intersection = '{KEY}'",
        lambda r: len(r) >= len(intersection.phases))
    assert {p["phase"] for p in phase_points} == set(last.greens_s)
    approach_points = pipeline.wait_rows(
        f"SELECT * FROM timing_approaches WHERE intersection = '{KEY}'",
        lambda r: len(r) >= 4)
    assert {p["approach"] for p in approach_points} == {"north", "east", "south", "west"}


def test_service_waits_a_cycle_between_recommendations() -> None:
    from simpang.records import ApproachMetrics
    from simpang.settings import TimingSettings

    site = load_site(DEMO_SITE_FILE)
    intersection = site.intersection(KEY)
    service = TimingService(site, TimingSettings(every_cycles=2))
    start = datetime(2026, 11, 24, 7, 0, tzinfo=UTC)

    def rows(end: datetime) -> list[ApproachMetrics]:
        return [ApproachMetrics(
            site=site.id, intersection=KEY, approach=a.id, lane=lane.id, window=WINDOW,
            window_start=end - timedelta(minutes=5), window_end=end, counts={},
            flow_veh_per_hour=400, flow_pcu_per_hour=400, occupancy_pct=None,
            mean_speed_kmh=None, readings=5) for a in intersection.approaches
            for lane in a.lanes]

    made_at: list[tuple[int, float]] = []  # (minute, cycle running after it)
    for minute in range(20):
        end = start + timedelta(minutes=minute)
        for made in service.on_metrics(rows(end)):
            assert made.status == "recommended"
            made_at.append((minute, service.running[KEY].cycle_s))
    assert made_at[0][0] == 0 and len(made_at) >= 3
    for (before, cycle_s), (after, _) in itertools.pairwise(made_at):
        # Due once two cycles of the plan then running have passed, not before.
        assert (after - before) * 60 >= 2 * cycle_s > (after - before - 1) * 60
    assert service.on_clock(start + timedelta(minutes=20)) == []  # fresh: nothing to say
    late = service.on_clock(start + timedelta(minutes=40))
    assert [r.status for r in late] == ["fallback"]
    assert late[0].reasons[0].startswith("stale metrics")
