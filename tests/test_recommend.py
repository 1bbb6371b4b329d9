"""From approach metrics to a recommendation: which flows it uses, when it falls back to the
running plan and why, and what it says."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from simpang.recommend import LaneDemand, plan_of, recommend
from simpang.records import ApproachMetrics
from simpang.site import Intersection
from simpang.timing_safety import check_plan

NOW = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
WINDOW = "300s-every-60s"


def junction(**changes: Any) -> Intersection:
    data: dict[str, Any] = {
        "id": "x", "name": "X", "lat": 0, "lon": 0,
        "approaches": [
            {"id": "north", "lanes": [{"id": "n1", "movements": ["through"]},
                                      {"id": "n2", "movements": ["through", "right"]}]},
            {"id": "east", "lanes": [{"id": "e1", "movements": ["through", "left"]}]}],
        "phases": [{"id": "a", "movements": ["north:through", "north:right"],
                    "min_green_s": 10, "max_green_s": 80, "yellow_s": 3, "all_red_s": 2},
                   {"id": "b", "movements": ["east:through", "east:left"], "min_green_s": 10,
                    "max_green_s": 80, "yellow_s": 3, "all_red_s": 2}],
        "plan": {"cycle_s": 70, "greens_s": {"a": 30, "b": 30}},
        "sensors": [{"device_id": f"loop-{lane}", "kind": "loop", "approach": a, "lane": lane}
                    for a, lane in (("north", "n1"), ("north", "n2"), ("east", "e1"))],
    }
    data.update(changes)
    return Intersection.model_validate(data)


def row(approach: str, lane: str | None, pcu: float, *, end: datetime = NOW,
        source: Literal["field", "camera"] = "field", window: str = WINDOW, intersection: str = "x"
        ) -> ApproachMetrics:
    return ApproachMetrics(
        site="s", intersection=intersection, approach=approach, lane=lane, source=source,
        window=window, window_start=end - timedelta(minutes=5), window_end=end, counts={},
        flow_veh_per_hour=pcu, flow_pcu_per_hour=pcu, occupancy_pct=None,
        mean_speed_kmh=None, readings=5)


def test_demand_prefers_field_counts_and_the_newest_window() -> None:
    x = junction()
    demand = LaneDemand(x, WINDOW)
    demand.update([
        row("north", "n1", 500, end=NOW - timedelta(minutes=1)),
        row("north", "n1", 600),
        row("north", "n1", 999, end=NOW - timedelta(minutes=2)),  # older, arrives late
        row("north", "n1", 50, source="camera"),
        row("north", None, 1200, source="camera"),  # approach-wide camera line: 600 a lane
        row("east", "e1", 300, window="60s"),  # another window
        row("east", "e1", 300, intersection="y"),  # another intersection
        row("south", "s1", 300),  # not an approach of x
    ])
    flows = {key: (value.flow_pcu_per_hour, value.source) for key, value in
             demand.flows().items()}
    assert flows == {("north", "n1"): (600, "field"), ("north", "n2"): (600, "camera")}
    assert demand.monitored_lanes() == [("east", "e1"), ("north", "n1"), ("north", "n2")]


def test_missing_or_stale_data_keeps_the_running_plan_and_says_so() -> None:
    x = junction()
    demand = LaneDemand(x, WINDOW)
    demand.update([row("north", "n1", 600), row("north", "n2", 500)])
    missing = recommend("s", x, demand, running=x.plan, now=NOW)
    assert missing.status == "fallback"
    assert plan_of(missing) == x.plan
    assert missing.reasons[0] == "no metrics yet for lanes east/e1: the running plan stays"

    demand.update([row("east", "e1", 200, end=NOW - timedelta(minutes=10))])
    stale = recommend("s", x, demand, running=x.plan, now=NOW)
    assert stale.status == "fallback" and plan_of(stale) == x.plan
    assert stale.reasons[0] == ("stale metrics for lanes east/e1 (600 s old, limit 300 s): "
                                "the running plan stays")
    assert stale.inputs["lane_flows_pcu_per_hour"] == {
        "east/e1": 200.0, "north/n1": 600.0, "north/n2": 500.0}


def test_a_recommendation_carries_reasons_inputs_and_passes_the_safety_check() -> None:
    x = junction()
    demand = LaneDemand(x, WINDOW)
    demand.update([row("north", "n1", 700), row("north", "n2", 600), row("east", "e1", 150)])
    made = recommend("s", x, demand, running=x.plan, now=NOW)
    assert made.status == "recommended"
    assert check_plan(x, plan_of(made)) == []
    assert made.greens_s["a"] > made.greens_s["b"]
    assert made.critical == {"a": "north", "b": "east"}
    assert made.flow_ratios["a"] > made.flow_ratios["b"]
    assert any(r.startswith("phase a: critical north (n1, n2) flow ratio") for r in made.reasons)
    assert made.reasons[-1].startswith("highest DS ")
    assert made.approaches["north"].degree_of_saturation < made.running_approaches[
        "north"].degree_of_saturation
    assert made.expected_delay_s < made.running_delay_s
    assert made.inputs["lane_sources"] == {"east/e1": "field", "north/n1": "field",
                                           "north/n2": "field"}
    assert set(made.inputs["saturation_flows_pcu_per_hour"]) == {"a:north", "b:east"}
    # Stability: one step moves each green at most max_green_change_s (10 s).
    assert all(abs(made.greens_s[p] - x.plan.greens_s[p]) <= 10 for p in made.greens_s)


def test_a_lane_at_capacity_asks_for_more_than_its_count() -> None:
    x = junction()
    demand = LaneDemand(x, WINDOW)
    # East's 30 s of 70 on one 3 m lane: capacity ≈ 1,590 × 30 / 70 ≈ 680 PCU/h.
    demand.update([row("north", "n1", 300), row("north", "n2", 300), row("east", "e1", 660)])
    made = recommend("s", x, demand, running=x.plan, now=NOW)
    assert any(r.startswith("lane east/e1 ran at DS 0.97 under the running plan") for r in
               made.reasons)
    assert made.inputs["lane_flows_pcu_per_hour"]["east/e1"] == 792.0  # 1.2 × 660


def test_a_site_whose_intergreens_are_unsafe_gets_no_new_plan() -> None:
    x = junction(width_m=40)  # all-red 2 s cannot clear 40 m + a vehicle at 40 km/h
    demand = LaneDemand(x, WINDOW)
    demand.update([row("north", "n1", 700), row("north", "n2", 600), row("east", "e1", 150)])
    refused = recommend("s", x, demand, running=x.plan, now=NOW)
    assert refused.status == "fallback" and plan_of(refused) == x.plan
    assert any(r.startswith("rejected by the safety check: phase a: all-red 2 s is below")
               for r in refused.reasons)
    assert refused.reasons[-1] == "the running plan stays"
