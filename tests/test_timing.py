"""The timing core (PKJI saturation flow, Webster cycle and splits, guardrails, delay) and the
independent safety check, against hand-computed values."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from simpang.site import Intersection, Plan
from simpang.timing import (
    city_size_factor,
    evaluate_plan,
    lane_groups,
    pkji_delay_s,
    share,
    webster_timing,
)
from simpang.timing_safety import UnsafePlan, check_plan, ensure_safe, required_yellow_s

# Commercial area, medium side friction, 0.9 million people: 0.94 × 0.94.
BASE_FACTOR = 0.94 * 0.94


def four_arm(**changes: Any) -> Intersection:
    """Split phasing, two lanes per approach (3.5 m, left+through and through+right)."""
    approaches = [
        {"id": a, "speed_limit_kmh": 40,
         "lanes": [{"id": f"{a[0]}1", "movements": ["left", "through"], "width_m": 3.5},
                   {"id": f"{a[0]}2", "movements": ["through", "right"], "width_m": 3.5}]}
        for a in ("north", "east", "south", "west")
    ]
    phases = [
        {"id": f"p-{a}", "movements": [f"{a}:left", f"{a}:through", f"{a}:right"],
         "min_green_s": 8, "max_green_s": 60, "yellow_s": 3, "all_red_s": 2}
        for a in ("north", "east", "south", "west")
    ]
    data: dict[str, Any] = {
        "id": "x", "name": "X", "lat": 0, "lon": 0, "width_m": 14,
        "approaches": approaches, "phases": phases,
        "plan": {"cycle_s": 100, "greens_s": {p["id"]: 20 for p in phases}},
    }
    data.update(changes)
    return Intersection.model_validate(data)


def flows(north: float, east: float, south: float, west: float) -> dict[tuple[str, str], float]:
    """Approach PCU/h split evenly over its two lanes."""
    out = {}
    for approach, total in zip(("north", "east", "south", "west"), (north, east, south, west),
                               strict=True):
        out[(approach, f"{approach[0]}1")] = total / 2
        out[(approach, f"{approach[0]}2")] = total / 2
    return out


def test_pkji_saturation_flow_and_overrides() -> None:
    assert city_size_factor(0.3) == 0.83 and city_size_factor(2.0) == 1.0
    groups = lane_groups(four_arm(), flows(1000, 600, 800, 400))
    assert len(groups) == 4
    north = next(g for g in groups if g.approach_id == "north")
    assert north.lane_ids == ("n1", "n2")
    assert north.saturation_flow_pcu_per_hour == pytest.approx(2 * 600 * 3.5 * BASE_FACTOR)
    assert north.flow_ratio == pytest.approx(1000 / (4200 * BASE_FACTOR))

    site = four_arm().model_dump()
    site["approaches"][0]["lanes"][0]["saturation_flow_pcu_per_hour"] = 1500
    site["approaches"][0]["grade_pct"] = 5
    site["approaches"][1]["lanes"][1]["movements"] = ["right"]
    site["saturation"] = {"city_population_millions": 4, "environment": "restricted_access"}
    groups = lane_groups(Intersection.model_validate(site), flows(1000, 600, 800, 400))
    north, east = groups[0], groups[1]
    # Measured lane as given; the other lane uphill 5 %: × 0.95; city over 3 M: × 1.05.
    assert north.saturation_flow_pcu_per_hour == pytest.approx(1500 + 600 * 3.5 * 1.05 * 0.95)
    # A right-turn-only lane of a protected approach: × 1.26.
    assert east.saturation_flow_pcu_per_hour == pytest.approx(600 * 3.5 * 1.05 * (1 + 1.26))


def test_webster_cycle_and_splits_by_hand() -> None:
    intersection = four_arm()
    timing = webster_timing(intersection, flows(1000, 600, 800, 400), stability=False)
    saturation = 4200 * BASE_FACTOR
    ratios = [q / saturation for q in (1000, 600, 800, 400)]
    y_total = sum(ratios)
    lost = 20.0
    cycle = (1.5 * lost + 5) / (1 - y_total)
    assert timing.sum_critical_flow_ratio == pytest.approx(y_total)
    assert timing.webster_cycle_s == pytest.approx(cycle)
    assert timing.plan.cycle_s == round(cycle)
    greens = [timing.plan.greens_s[f"p-{a}"] for a in ("north", "east", "south", "west")]
    for green, ratio in zip(greens, ratios, strict=True):
        assert abs(green - (round(cycle) - lost) * ratio / y_total) < 1.0
    assert sum(greens) + lost == timing.plan.cycle_s
    # Webster's splits give every critical group about the same degree of saturation.
    ds = timing.performance.approach_degree_of_saturation()
    assert max(ds.values()) - min(ds.values()) < 0.05
    assert any("Webster cycle" in r for r in timing.reasons)
    assert any(r.startswith("phase p-north: critical north (n1, n2) flow ratio") for r in
               timing.reasons)


def test_guardrails_min_green_pedestrians_and_cycle_bounds() -> None:
    data = four_arm().model_dump()
    data["phases"][1].update(pedestrian_walk_s=7, pedestrian_clearance_s=12)
    intersection = Intersection.model_validate(data)
    # Almost no traffic: the shortest cycle the guardrails allow.
    light = webster_timing(intersection, flows(50, 10, 50, 10), stability=False)
    assert light.plan.greens_s["p-east"] == 19  # walk 7 + clearance 12 beats min green 8
    assert all(light.plan.greens_s[p] >= 8 for p in light.plan.greens_s)
    assert light.plan.cycle_s >= intersection.timing.min_cycle_s
    # Over capacity: the longest cycle, and the reason says so.
    heavy = webster_timing(intersection, flows(3000, 2500, 3000, 2500), stability=False)
    assert heavy.plan.cycle_s == intersection.timing.max_cycle_s
    assert heavy.webster_cycle_s is None
    assert any("demand at or above capacity" in r for r in heavy.reasons)
    assert all(g <= 60 for g in heavy.plan.greens_s.values())


def test_a_step_moves_the_plan_at_most_the_allowed_change() -> None:
    intersection = four_arm()
    running = intersection.plan  # 100 s, 20 s each
    timing = webster_timing(intersection, flows(2400, 300, 2200, 300), running=running)
    limits = intersection.timing
    assert abs(timing.plan.cycle_s - running.cycle_s) <= limits.max_cycle_change_s
    for phase_id, green in timing.plan.greens_s.items():
        assert abs(green - running.greens_s[phase_id]) <= limits.max_green_change_s
    unlimited = webster_timing(intersection, flows(2400, 300, 2200, 300), stability=False)
    assert unlimited.plan.cycle_s - running.cycle_s > limits.max_cycle_change_s
    assert any("at most 20 s change per step" in r for r in timing.reasons)


def test_every_recommendation_is_safe_for_random_demand() -> None:
    intersection = four_arm()
    rng = random.Random(7)
    running = intersection.plan
    for _ in range(300):
        demand = flows(*(rng.uniform(0, 2500) for _ in range(4)))
        timing = webster_timing(intersection, demand, running=running,
                                stability=rng.random() < 0.7)
        assert check_plan(intersection, timing.plan) == []
        # The site model's own validation agrees (cycle = greens + intergreens, bounds).
        intersection.model_copy(update={"plan": timing.plan}).model_validate(
            intersection.model_copy(update={"plan": timing.plan}).model_dump())
        running = timing.plan


def test_delay_grows_with_saturation_and_matches_pkji() -> None:
    # c = 80 s, g/c = 0.5, DS 0.8, C = 900 PCU/h: A = 0.5·0.25/0.6, NQ1 from PKJI's formula.
    capacity_per_cycle = 900 * 80 / 3600
    nq1 = 0.25 * capacity_per_cycle * (-0.2 + math.sqrt(0.04 + 8 * 0.3 / capacity_per_cycle))
    assert pkji_delay_s(80, 0.5, 0.8, 900) == pytest.approx(80 * 0.125 / 0.6 + nq1 * 4)
    delays = [pkji_delay_s(80, 0.5, ds, 900) for ds in (0.3, 0.6, 0.9, 1.0, 1.2)]
    assert delays == sorted(delays) and delays[-1] > delays[2] + 10


def test_the_recommended_plan_cuts_expected_delay_of_a_bad_plan() -> None:
    intersection = four_arm()
    demand = flows(1000, 250, 900, 250)
    groups = lane_groups(intersection, demand)
    before = evaluate_plan(intersection, intersection.plan, groups)
    after = webster_timing(intersection, demand, stability=False).performance
    assert after.mean_delay_s < 0.7 * before.mean_delay_s
    assert after.max_degree_of_saturation < before.max_degree_of_saturation


def test_share_respects_bounds() -> None:
    assert share(60, [0, 0, 1], [10, 10, 10], [50, 50, 50]) == [10, 10, 40]
    with pytest.raises(ValueError, match="cannot be shared"):
        share(10, [1, 1], [10, 10], [20, 20])


def test_safety_check_names_every_broken_rule() -> None:
    data = four_arm().model_dump()
    data["width_m"] = 30
    data["approaches"][0]["speed_limit_kmh"] = 60
    data["phases"][2].update(pedestrian_walk_s=5, pedestrian_clearance_s=8,
                             pedestrian_crossing_m=14)
    data["timing"] = {"max_cycle_s": 120}
    intersection = Intersection.model_validate(data)
    plan = Plan(cycle_s=130, greens_s={"p-north": 30, "p-east": 20, "p-south": 10,
                                       "p-west": 70})
    violations = check_plan(intersection, plan)
    rules = {(v.rule, v.phase_id) for v in violations}
    # 60 km/h: yellow ≥ 1 + 16.7 / 6.1 = 3.7 s; all-red ≥ (30 + 6) / 11.1 = 3.2 s at 40 km/h.
    assert ("yellow", "p-north") in rules and ("yellow", "p-east") not in rules
    assert {("all_red", p) for p in ("p-north", "p-east", "p-south", "p-west")} <= rules
    assert ("pedestrian_green", "p-south") in rules  # 10 s < 5 + 8
    assert ("pedestrian_clearance", "p-south") in rules  # 8 s < 14 m / 1.2 m/s
    assert ("green_bounds", "p-west") in rules  # 70 > 60
    assert ("max_cycle", None) in rules
    assert ("cycle_sum", None) in rules  # 130 + 20 ≠ 130
    with pytest.raises(UnsafePlan) as raised:
        ensure_safe(intersection, plan)
    assert raised.value.violations == violations
    assert "p-north: yellow 3 s is below the 3.7 s" in str(raised.value)
    assert required_yellow_s(50) == pytest.approx(1 + (50 / 3.6) / 6.1)

    missing = Plan(cycle_s=50, greens_s={"p-north": 30})
    assert [v.rule for v in check_plan(intersection, missing)] == ["phases"]


def test_unknown_width_is_estimated_conservatively() -> None:
    intersection = four_arm(width_m=None)
    # Two 3.5 m lanes in, as many out, plus a 2 m median.
    assert intersection.estimated_width_m() == pytest.approx(16.0)


def test_fractional_bounds_still_give_a_plan() -> None:
    data = four_arm().model_dump()
    data["phases"][0].update(pedestrian_walk_s=7.5, pedestrian_clearance_s=8.2)
    data["phases"][1]["yellow_s"] = 3.5
    intersection = Intersection.model_validate(data | {
        "plan": {"cycle_s": 100.5, "greens_s": {"p-north": 20, "p-east": 20, "p-south": 20,
                                                "p-west": 20}}})
    running = Plan(cycle_s=80.2, greens_s={"p-north": 15.7, "p-east": 14.5, "p-south": 15.0,
                                           "p-west": 14.5})
    for demand in (flows(50, 50, 50, 50), flows(900, 100, 900, 100), flows(3000, 0, 0, 0)):
        timing = webster_timing(intersection, demand, running=running)
        assert check_plan(intersection, timing.plan) == []
        assert all(abs(timing.plan.greens_s[p] - running.greens_s[p]) <= 10 + 1e-9
                   for p in running.greens_s)
