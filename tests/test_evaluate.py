"""Closed-loop evaluation in SUMO: the measures' definition, each controller's behaviour on
the simulated signals (never a green without its yellow and all-red), and ``simpang
evaluate`` as a user runs it."""

from __future__ import annotations

import itertools
import json
import os
import statistics
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import cv2
import pytest

from simpang.recommend import plan_of
from simpang.site import Intersection
from simpang.timing_safety import check_plan
from simulator.bundled import build_scenario
from simulator.controllers import Actuated, MaxPressure, SimpangAdaptive, SimpangPlan
from simulator.evaluate import _measures, confidence_95, lane_lengths_m
from simulator.saturation import survey, with_surveyed_flows
from simulator.signals import GREEN, FixedTime
from simulator.sumo_run import TRIPINFO_OUTPUT, SumoRun

DAY = datetime(2026, 1, 5, tzinfo=ZoneInfo("Asia/Makassar"))
FIVE_PM = 17 * 3600


def test_delay_counts_departure_delay_and_unfinished_trips(tmp_path: Path) -> None:
    (tmp_path / TRIPINFO_OUTPUT).write_text("""<tripinfos>
    <tripinfo id="a" depart="100.00" departDelay="2.00" arrival="160.00" duration="60.00"
              timeLoss="20.00" waitingCount="1" vType="car"/>
    <tripinfo id="b" depart="130.00" departDelay="10.00" arrival="-1.00" duration="70.00"
              timeLoss="50.00" waitingCount="3" vType="car"/>
    <tripinfo id="c" depart="-1" departDelay="90.00" arrival="-1.00" duration="0.00"
              timeLoss="0.00" waitingCount="0" vType="motorcycle"/>
</tripinfos>
""")
    measures = _measures("fixed", 1, tmp_path, begin_s=0.0, end_s=200.0, plan_changes=0)
    assert measures.mean_delay_s == pytest.approx((22 + 60 + 90) / 3)
    assert measures.mean_travel_time_s == pytest.approx((62 + 80 + 90) / 3)
    assert measures.throughput_veh == 1 and measures.vehicles == 3
    assert measures.never_departed == 1
    assert measures.mean_stops == pytest.approx(4 / 3)
    # By the minute the vehicle wanted to leave: c wanted 200 − 90 = 110 s.
    assert measures.delay_by_depart_minute == {1: pytest.approx((22 + 90) / 2), 2: 60.0}
    # After a 105 s warm-up: a (wanted 98 s) is left out; b (120 s) and c (110 s) stay.
    warm = _measures("fixed", 1, tmp_path, begin_s=0.0, end_s=200.0, plan_changes=0,
                     measured_from_s=105.0)
    assert warm.vehicles == 2 and warm.mean_delay_s == pytest.approx((60 + 90) / 2)


def test_confidence_interval() -> None:
    assert confidence_95([5.0]) == 0.0
    # t(0.975, 4) = 2.776; sd of 1..5 = 1.581.
    assert confidence_95([1, 2, 3, 4, 5]) == pytest.approx(2.776 * 1.5811 / 5 ** 0.5, rel=1e-3)


def _green_changes_are_safe(states: list[str], intersection: Intersection) -> None:
    """Every link losing its green shows yellow, then red for the all-red, before any link
    that conflicts gets green; and each yellow lasts the site's yellow."""
    yellow_s = {p.yellow_s for p in intersection.phases}
    runs: list[list[object]] = []
    for state in states:
        if runs and runs[-1][0] == state:
            runs[-1][1] = float(runs[-1][1]) + 0.5  # type: ignore[arg-type]
        else:
            runs.append([state, 0.5])
    for (before, _), (after, _) in itertools.pairwise(runs):
        for link, (was, now) in enumerate(zip(str(before), str(after), strict=True)):
            if was in GREEN and now not in GREEN:
                assert now == "y", f"link {link}: green → {now!r} without yellow"
            if was == "y":
                assert now == "r", f"link {link}: yellow → {now!r}"
    # Inner runs (the first and last may be cut by the run's ends).
    for state, duration in runs[1:-1]:
        if "y" in str(state):
            assert duration in yellow_s
        if set(str(state)) == {"r"}:
            assert duration >= min(p.all_red_s for p in intersection.phases)


@pytest.mark.parametrize("controller_name",
                         ["actuated", "max-pressure", "simpang-plan", "simpang-adaptive"])
def test_controllers_keep_yellow_and_all_red(scenario_cache: Path, tmp_path: Path,
                                             controller_name: str) -> None:
    import libsumo

    built = build_scenario("four_arm", scenario_cache)
    site = built.site()
    intersection = site.intersections[0]
    controller: Actuated | MaxPressure | SimpangPlan | SimpangAdaptive
    extra = []
    if controller_name == "actuated":
        controller = Actuated(site)
        extra.append(tmp_path / "actuated.add.xml")
        extra[0].write_text(controller.additional_xml())
    elif controller_name == "max-pressure":
        controller = MaxPressure(site)
    elif controller_name == "simpang-adaptive":
        controller = SimpangAdaptive(site)
        extra.append(tmp_path / "zones.add.xml")
        extra[0].write_text(controller.additional_xml(lane_lengths_m(built.sumocfg)))
    else:
        controller = SimpangPlan(site, every_cycles=1)
    run = SumoRun(site, built.sumocfg, tmp_path / "run", seed=3, begin_s=FIVE_PM - 900,
                  end_s=FIVE_PM + 900, day=DAY, controller=controller, extra_additional=extra)
    states: list[str] = []
    greens: dict[str, list[float]] = {}
    with run:
        controller.attach(run)
        assert run.signals is not None
        current, since = None, run.time_s
        while not run.finished():
            t_s = run.step()
            readings = run.readings_due()
            if readings and isinstance(controller, SimpangPlan | SimpangAdaptive):
                controller.observe(readings, run.timestamp(t_s))
            states.append(libsumo.trafficlight.getRedYellowGreenState("C"))
            green = run.signals.green_phase("C") if controller_name != "actuated" else None
            if green != current:
                if current is not None:
                    greens.setdefault(current, []).append(t_s - since)
                current, since = green, t_s
        if controller_name == "actuated":
            assert libsumo.trafficlight.getProgram("C") == Actuated.PROGRAM_ID
        plans = [plan for _, plan in run.signals.plan_changes("C")]
    _green_changes_are_safe(states, intersection)
    if controller_name == "actuated":
        # Gap-out and max-out make greens vary between cycles, within min/max green.
        green_states = {p.sumo_state: p for p in intersection.phases}
        lengths: dict[str, list[float]] = {}
        previous, count = None, 0.0
        for state in [*states, ""]:
            if state == previous:
                count += 0.5
                continue
            if previous in green_states:
                lengths.setdefault(previous, []).append(count)
            previous, count = state, 0.5
        inner = [v for values in lengths.values() for v in values[1:-1]]
        assert len(set(inner)) > 3
        assert all(5 - 0.5 <= v <= 90 + 0.5 for v in inner)
    if controller_name == "max-pressure":
        assert isinstance(controller, MaxPressure)
        inner = [v for values in greens.values() for v in values[1:]]
        assert inner and all(v >= 20 - 0.5 for v in inner)
        decisions = controller.decisions
        assert len(decisions) > 20
        for _, _, chosen, pressures in decisions:
            assert pressures[chosen] == max(pressures.values())
        # Not a fixed rotation: the order of service follows pressure.
        order = [p.id for p in intersection.phases]
        served = [chosen for _, green, chosen, _ in decisions if chosen != green]
        assert any(order.index(b) != (order.index(a) + 1) % len(order)
                   for a, b in itertools.pairwise(served))
    if controller_name == "simpang-adaptive":
        assert isinstance(controller, SimpangAdaptive)
        # Greens vary cycle by cycle, never under the initial green nor over the phase's
        # maximum, and each ended for a reason the controller recorded.
        inner = {p: v[1:] for p, v in greens.items() if p is not None}
        lengths = [v for values in inner.values() for v in values]
        assert len(set(lengths)) > 5
        assert all(8.0 - 0.5 <= v <= 90 + 0.5 for v in lengths), lengths
        reasons = [reason for _, _, _, reason in controller.decisions]
        assert any(r.startswith("gap out") for r in reasons)
        assert len(controller.decisions) >= len(lengths) - 1
        # A plan every cycle: the first before any metrics (the site's plan, saying so),
        # then from the forecast, with its inputs.
        made = controller.recommendations
        assert made[0].status == "fallback" and "no metrics yet" in made[0].reasons[0]
        recommended = [r for r in made if r.status == "recommended"]
        assert recommended and all(r.mode == "adaptive" for r in made)
        last = recommended[-1]
        assert any("forecast" in reason for reason in last.reasons)
        assert set(last.inputs["longest_greens_s"]) == {p.id for p in intersection.phases}
        assert last.inputs["forecast_horizon_s"] > 150
        assert set(last.inputs["measured_lane_flows_pcu_per_hour"]) == set(
            last.inputs["lane_flows_pcu_per_hour"])
        cycles = [c for _, _, c in controller.cycles]
        assert len(cycles) >= 5 and len(set(cycles)) > 2
    if controller_name == "simpang-plan":
        recommended = [r for r in controller.recommendations if r.status == "recommended"]
        assert recommended, [r.reasons for r in controller.recommendations]
        assert len(plans) >= 2
        assert all(check_plan(intersection, plan) == [] for plan in plans)
        # Before the first 5-minute window closed there was nothing to plan from.
        first = controller.recommendations[0]
        assert first.status == "fallback" and "no metrics yet" in first.reasons[0]
        assert (first.cycle_s, first.greens_s) == (intersection.plan.cycle_s,
                                                   intersection.plan.greens_s)
        made = recommended[0]
        assert made.inputs["window"] == "300s-every-60s"
        assert set(made.inputs["lane_flows_pcu_per_hour"]) == {
            f"{a.id}/{lane.id}" for a in intersection.approaches for lane in a.lanes}


def test_saturation_survey_measures_every_lane(scenario_cache: Path, tmp_path: Path) -> None:
    built = build_scenario("four_arm", scenario_cache)
    site = built.site()
    surveyed = survey(site, built.sumocfg, tmp_path, day=DAY, seed=11, begin_s=FIVE_PM,
                      end_s=FIVE_PM + 1800)
    assert len(surveyed) == 8
    flows = [s.saturation_flow_pcu_per_hour for s in surveyed]
    # SUMO's discharge on these 3.2 m lanes, in PKJI PCU: well under PKJI's 1,700.
    assert all(600 < f < 1600 for f in flows), flows
    assert statistics.pstdev(flows) < 0.15 * statistics.fmean(flows)
    calibrated = with_surveyed_flows(site, surveyed)
    lanes = [lane for a in calibrated.intersections[0].approaches for lane in a.lanes]
    assert all(lane.saturation_flow_pcu_per_hour is not None for lane in lanes)


def test_fixed_time_is_reproducible_by_seed(scenario_cache: Path, tmp_path: Path) -> None:
    built = build_scenario("t_junction", scenario_cache)
    out = []
    for index, seed in enumerate((5, 5, 6)):
        work = tmp_path / str(index)
        with SumoRun(built.site(), built.sumocfg, work, seed=seed, begin_s=FIVE_PM,
                     end_s=FIVE_PM + 600, day=DAY, controller=FixedTime(),
                     write_unfinished=True) as run:
            while not run.finished():
                run.step()
            ended = run.time_s
        out.append(_measures("fixed", seed, work, FIVE_PM, ended, 0))
    assert out[0] == out[1]
    assert out[0].mean_delay_s != out[2].mean_delay_s


def test_evaluate_command_prints_each_controller_with_confidence(tmp_path: Path) -> None:
    env = {**os.environ, "SIMPANG_DATA_DIR": str(tmp_path / "data")}
    result = subprocess.run(
        [sys.executable, "-m", "simpang", "evaluate", "--scenario", "t_junction",
         "--begin", "17:00", "--duration", "600", "--seeds", "2", "--json",
         "--report", str(tmp_path / "report")],
        capture_output=True, text=True, env=env, check=False, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["begin_s"] == FIVE_PM and report["end_s"] == FIVE_PM + 600
    assert list(report["controllers"]) == ["fixed", "actuated", "max-pressure", "simpang-plan",
                                           "simpang-adaptive"]
    runs = report["runs"]
    assert len(runs) == 10
    for name, entry in report["controllers"].items():
        mine = [r for r in runs if r["controller"] == name]
        assert entry["seeds"] == [1, 2]
        assert entry["mean_delay_s"] == pytest.approx(
            statistics.fmean(r["mean_delay_s"] for r in mine), abs=0.01)
        assert entry["ci95"] == pytest.approx(
            confidence_95([r["mean_delay_s"] for r in mine]), abs=0.01)
        assert entry["mean_delay_s"] > 0 and entry["throughput_veh"] > 100
    # The survey measured the lanes Simpang's plans were computed with.
    assert any(s["saturation_flow_pcu_per_hour"] for s in report["saturation_survey"])

    # The report: three plots and a summary whose table has the JSON's figures.
    for name in ("delay_over_time.png", "queue_per_approach.png", "plan_changes.png"):
        image = cv2.imread(str(tmp_path / "report" / name))
        assert image is not None and image.shape[0] > 300 and image.shape[1] > 500, name
        assert image.std() > 10, name  # something is drawn
    markdown = (tmp_path / "report" / "summary.md").read_text()
    for name, entry in report["controllers"].items():
        row = next(line for line in markdown.splitlines() if line.startswith(f"| {name} |"))
        assert f"{entry['mean_delay_s']:.1f} ± {entry['ci95']:.1f}" in row
    assert "than the fixed programme" in markdown

    bad = subprocess.run(
        [sys.executable, "-m", "simpang", "evaluate", "--scenario", "t_junction",
         "--controllers", "fixed,simpang-magic"],
        capture_output=True, text=True, env=env, check=False, timeout=60)
    assert bad.returncode == 1
    assert "unknown controller(s) simpang-magic" in bad.stdout + bad.stderr


def test_plan_mode_moves_a_corridor_to_its_green_band_without_cutting_greens(
        scenario_cache: Path, tmp_path: Path) -> None:
    import libsumo

    built = build_scenario("corridor", scenario_cache)
    site = built.site()
    controller = SimpangPlan(site, every_cycles=1)
    run = SumoRun(site, built.sumocfg, tmp_path / "run", seed=4, begin_s=10 * 3600,
                  end_s=10 * 3600 + 2400, day=DAY, controller=controller)
    states: dict[str, list[str]] = {i.id: [] for i in site.intersections}
    cycle_starts: dict[str, list[float]] = {i.id: [] for i in site.intersections}
    with run:
        controller.attach(run)
        assert run.signals is not None
        while not run.finished():
            t_s = run.step()
            if t_s >= run.end_s - 600:  # type: ignore[operator]
                controller.every_cycles = 10**6  # no new plans: the last ones settle
            readings = run.readings_due()
            if readings:
                controller.observe(readings, run.timestamp(t_s))
            for intersection in site.intersections:
                tls = intersection.sumo_tls
                states[intersection.id].append(libsumo.trafficlight.getRedYellowGreenState(tls))
                if (libsumo.trafficlight.getPhase(tls) == 0
                        and libsumo.trafficlight.getSpentDuration(tls) <= 0.5):
                    cycle_starts[intersection.id].append(t_s)
        in_force = {i.id: run.signals.plan(i.id) for i in site.intersections}
    for intersection in site.intersections:
        _green_changes_are_safe(states[intersection.id], intersection)
    coordinated = [r for r in controller.recommendations if r.status == "recommended"
                   and "corridor" in r.inputs]
    assert len(coordinated) >= 6, [r.reasons for r in controller.recommendations]
    # The last corridor plan: one cycle, and by the end every member's cycle starts where
    # its offset says (the dwell moved it there), so the band is what the plan promised.
    last = {r.intersection: r for r in coordinated}
    assert {i: plan_of(r) for i, r in last.items()} == in_force
    assert len({r.cycle_s for r in last.values()}) == 1
    cycle = next(iter(last.values())).cycle_s
    assert len({r.offset_s for r in last.values()}) == 3
    for intersection_id, recommendation in last.items():
        starts = cycle_starts[intersection_id][-3:]
        for start in starts:
            error = (start - recommendation.offset_s) % cycle
            assert min(error, cycle - error) <= 1.0, (intersection_id, starts,
                                                      recommendation.offset_s)
