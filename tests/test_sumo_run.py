"""SUMO runs: detector readings against SUMO's own detector output, demand, reproducibility,
signal control, outcomes, and the virtual cameras' ground truth."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections import Counter
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from simpang.records import SensorReading
from simpang.site import Plan, Site
from simpang.vehicles import VehicleClass
from simulator.bundled import build_scenario
from simulator.camera import CameraRig, Conditions, ground_centres
from simulator.importer import import_sumocfg
from simulator.signals import PlanSchedule, Signals, program_phases
from simulator.simulate import resolve_scenario
from simulator.sumo_run import DETECTOR_OUTPUT, SumoRun, read_outcomes
from simulator.sumo_tools import SumoError, game_scenario

DAY = datetime(2026, 11, 23, tzinfo=ZoneInfo("Asia/Makassar"))
SEVEN_AM = 7 * 3600


def _with_radar(site: Site, device_suffix: str) -> Site:
    """The site with the loops whose id ends in ``device_suffix`` turned into radars."""
    data = site.model_dump()
    for intersection in data["intersections"]:
        for sensor in intersection["sensors"]:
            if sensor["device_id"].endswith(device_suffix):
                sensor["kind"] = "radar"
    return Site.model_validate(data)


def _run_readings(site: Site, sumocfg: Path, work: Path, *, seed: int, seconds: float,
                  interval_s: float = 60) -> list[dict[str, object]]:
    readings = []
    with SumoRun(site, sumocfg, work, seed=seed, begin_s=SEVEN_AM, end_s=SEVEN_AM + seconds,
                 interval_s=interval_s, day=DAY) as run:
        while not run.finished():
            run.step()
            for message in run.messages_due():
                readings.extend(json.loads(message.payload))
    return readings


def test_readings_equal_sumo_detector_output(scenario_cache: Path, tmp_path: Path) -> None:
    built = build_scenario("four_arm", scenario_cache)
    site = _with_radar(built.site(), "1-loop")
    readings = _run_readings(site, built.sumocfg, tmp_path, seed=5, seconds=900)
    assert len(readings) == 15 * 8
    for reading in readings:
        SensorReading.model_validate(reading)

    sumo_intervals = {}
    for element in ET.parse(tmp_path / DETECTOR_OUTPUT).getroot().iter("interval"):
        sumo_intervals[(element.get("id"), float(element.get("end", 0)))] = element.attrib
    compared: Counter[str] = Counter()
    # Both round to 0.01, so they may differ by one in the last place; SUMO's file can say a
    # little over 100 % (two vehicles over the loop in one step), readings are capped at 100.
    rounding = 0.0151
    for reading in readings:
        ts = datetime.fromisoformat(str(reading["ts"]))
        end_s = (ts - DAY).total_seconds()
        sumo = sumo_intervals[(reading["device_id"], end_s)]
        counts = reading.get("counts", {})
        assert isinstance(counts, dict)
        if reading["kind"] == "loop":
            assert sum(counts.values()) == int(sumo["nVehContrib"])
            assert reading["occupancy_pct"] == pytest.approx(
                min(float(sumo["occupancy"]), 100.0), abs=rounding)
            speed = float(sumo["speed"])
        else:
            assert "counts" not in reading and "count" not in reading
            assert reading["occupancy_pct"] == pytest.approx(
                float(sumo["meanOccupancy"]), abs=rounding)
            speed = float(sumo["meanSpeed"])
        if speed >= 0:
            assert reading["speed_kmh"] == pytest.approx(speed * 3.6, abs=0.0151 * 3.6)
        compared[reading["kind"]] += 1
    assert compared == {"loop": 15 * 4, "radar": 15 * 4}
    assert sum(sum(r.get("counts", {}).values()) for r in readings) > 150  # type: ignore[attr-defined]


def test_demand_is_motorcycle_heavy_and_reproducible_by_seed(
    scenario_cache: Path, tmp_path: Path
) -> None:
    built = build_scenario("four_arm", scenario_cache)
    site = built.site()
    first = _run_readings(site, built.sumocfg, tmp_path / "a", seed=9, seconds=600)
    again = _run_readings(site, built.sumocfg, tmp_path / "b", seed=9, seconds=600)
    other = _run_readings(site, built.sumocfg, tmp_path / "c", seed=10, seconds=600)
    assert first == again
    assert first != other
    by_class: Counter[str] = Counter()
    for reading in first:
        by_class.update(reading["counts"])  # type: ignore[arg-type]
    total = sum(by_class.values())
    assert by_class["motorcycle"] / total > 0.55
    assert {"car", "bus", "truck", "motorcycle"} <= set(by_class)


def test_a_vehicle_mix_override_builds_its_own_scenario_with_that_mix(
    scenario_cache: Path, tmp_path: Path
) -> None:
    own = build_scenario("four_arm", scenario_cache)
    bicycles_and_buses = {VehicleClass.MOTORCYCLE: 0.2, VehicleClass.BICYCLE: 0.4,
                          VehicleClass.BUS: 0.4}
    mixed = build_scenario("four_arm", scenario_cache, mix=bicycles_and_buses)
    assert mixed.sumocfg.parent != own.sumocfg.parent
    assert build_scenario("four_arm", scenario_cache).sumocfg == own.sumocfg
    assert resolve_scenario("four_arm", scenario_cache, bicycles_and_buses).sumocfg == mixed.sumocfg
    with pytest.raises(SumoError, match="bundled scenarios only"):
        resolve_scenario(str(own.site_file), scenario_cache, bicycles_and_buses)
    types = {t.get("id"): float(t.get("probability", "0"))
             for t in ET.parse(mixed.sumocfg.with_suffix(".rou.xml")).getroot().iter("vType")}
    assert types == {"motorcycle": 0.2, "bicycle": 0.4, "bus": 0.4}
    by_class: Counter[str] = Counter()
    for reading in _run_readings(mixed.site(), mixed.sumocfg, tmp_path, seed=9, seconds=600):
        by_class.update(reading["counts"])  # type: ignore[arg-type]
    assert set(by_class) <= {"motorcycle", "bicycle", "bus"}
    assert by_class["bicycle"] > by_class["motorcycle"]


def test_applied_plans_are_what_sumo_runs(scenario_cache: Path, tmp_path: Path) -> None:
    import libsumo

    built = build_scenario("four_arm", scenario_cache)
    site = built.site()
    junction = site.intersections[0]
    new_plan = Plan(cycle_s=124, greens_s={"p1": 40, "p2": 15, "p3": 30, "p4": 15},
                    offset_s=10)
    switch_at = SEVEN_AM + 300
    run = SumoRun(site, built.sumocfg, tmp_path, seed=1, begin_s=SEVEN_AM,
                  end_s=SEVEN_AM + 900, day=DAY,
                  controller=PlanSchedule({switch_at: {"C": new_plan}}))
    states: list[tuple[float, str]] = []
    with run:
        while not run.finished():
            t_s = run.step()
            states.append((t_s, libsumo.trafficlight.getRedYellowGreenState("C")))
        assert run.signals is not None
        assert [plan for _, plan in run.signals.plan_changes("C")] == [junction.plan, new_plan]
    # After the switch, each state holds exactly as long as the new programme says, and
    # cycles start at the offset (mod 124 s).
    expected = program_phases(junction.phases, new_plan)
    runs: list[tuple[float, str, float]] = []
    for t_s, state in states:
        if t_s <= switch_at:
            continue
        if runs and runs[-1][1] == state:
            runs[-1] = (runs[-1][0], state, runs[-1][2] + 0.5)
        else:
            runs.append((t_s, state, 0.5))
    full = runs[1:-1]
    first_green = next(i for i, (_, state, _) in enumerate(full) if state == expected[0][1])
    observed = [(duration, state) for _, state, duration in full[first_green:]]
    cycles = (expected * (len(observed) // len(expected) + 1))[:len(observed)]
    assert len(observed) >= 2 * len(expected)
    assert observed == cycles
    # A state seen first after step t began at t - 0.5; p1's green starts at the offset.
    p1_starts = [start - 0.5 for start, state, _ in full if state == expected[0][1]]
    assert p1_starts and all((start - 10) % 124 == 0 for start in p1_starts)


def test_outcomes_come_from_sumo_outputs(scenario_cache: Path, tmp_path: Path) -> None:
    built = build_scenario("t_junction", scenario_cache)
    _run_readings(built.site(), built.sumocfg, tmp_path, seed=2, seconds=900)
    outcomes = read_outcomes(tmp_path, after_s=SEVEN_AM + 120)
    tripinfo = ET.parse(tmp_path / "tripinfo.out.xml").getroot()
    delays = [float(t.get("timeLoss", 0)) for t in tripinfo.iter("tripinfo")
              if float(t.get("depart", 0)) >= SEVEN_AM + 120]
    assert outcomes.vehicles_arrived == len(delays) > 100
    assert outcomes.mean_delay_s == pytest.approx(float(np.mean(delays)))
    assert set(outcomes.max_queue_m) == {"T.east", "T.south", "T.west"}
    assert all(queue >= 0 for queue in outcomes.max_queue_m.values())
    assert outcomes.mean_travel_time_s > outcomes.mean_delay_s > 0


def test_rendered_boxes_are_where_the_vehicles_are(scenario_cache: Path, tmp_path: Path) -> None:
    built = build_scenario("four_arm", scenario_cache)
    site = built.site()
    run = SumoRun(site, built.sumocfg, tmp_path, seed=4, begin_s=SEVEN_AM,
                  end_s=SEVEN_AM + 400, day=DAY, track_vehicles=True)
    rig = CameraRig.for_site(site, built.sumocfg, seed=4, fps=1.0,
                             conditions=Conditions("day", noise_sigma=0))
    checked = 0
    with run:
        while run.time_s < SEVEN_AM + 240:
            run.step()
            rig.observe(run)
        run.step()
        frames = rig.frames(run)
        vehicles = {v.vehicle_id: v for v in run.vehicles()}
        cameras = {camera.camera.id: camera for _, camera in rig.cameras}
        for _, camera_id, image, labels, _ in frames:
            assert image.shape == (360, 640, 3)
            pinhole = cameras[camera_id].pinhole
            for label in labels:
                if label.truncated:
                    continue
                vehicle = vehicles[label.vehicle_id]
                centre = ground_centres([vehicle])[0]
                u, v = pinhole.project(np.array([[centre[0], centre[1], 0.0]]))[0]
                x1, y1, x2, y2 = label.box_xyxy
                assert x1 <= u <= x2 and y1 <= v <= y2
                assert rig.track_ids[label.vehicle_id] == label.track_id
                checked += 1
            # The box's pixels differ from the empty road where a vehicle is drawn.
            background = cameras[camera_id].background(Conditions("day", noise_sigma=0))
            visible = [box for box in labels if box.visibility > 0.9 and
                       (box.box_xyxy[2] - box.box_xyxy[0]) > 6]
            for box in visible:
                x1, y1, x2, y2 = (round(c) for c in box.box_xyxy)
                assert np.abs(image[y1:y2, x1:x2].astype(int)
                              - background[y1:y2, x1:x2].astype(int)).mean() > 3
    assert checked > 20


def test_crossings_count_each_arriving_vehicle_once(scenario_cache: Path, tmp_path: Path) -> None:
    built = build_scenario("four_arm", scenario_cache)
    site = built.site()
    run = SumoRun(site, built.sumocfg, tmp_path, seed=6, begin_s=SEVEN_AM,
                  end_s=SEVEN_AM + 900, day=DAY, track_vehicles=True)
    rig = CameraRig.for_site(site, built.sumocfg, seed=6)
    with run:
        while not run.finished():
            run.step()
            rig.observe(run)
    events = [event for _, event in rig.crossings]
    assert events and sum(event.direction == "in" for event in events) >= 0.99 * len(events)
    per_vehicle_line = Counter((event.vehicle_id, event.line_id) for event in events)
    assert max(per_vehicle_line.values()) == 1
    # Vehicles crossing the north camera's lines are the ones that entered from the north.
    north = [e for camera, e in rig.crossings if camera == "C-north-cam"]
    assert north and all(e.vehicle_id.startswith("N2C.") for e in north)
    # Every vehicle that left the north approach crossed a north counting line (if it
    # entered early enough to reach it).
    tripinfo = ET.parse(tmp_path / "tripinfo.out.xml").getroot()
    arrived_from_north = {t.get("id") for t in tripinfo.iter("tripinfo")
                          if str(t.get("id")).startswith("N2C.")}
    assert arrived_from_north <= {e.vehicle_id for e in north}


class _SwitchOnce:
    """Asks for one phase decision at a given time."""

    def __init__(self, at_s: float, phase_id: str, green_s: float) -> None:
        self.at_s, self.phase_id, self.green_s = at_s, phase_id, green_s
        self.asked_in: str | None = None

    def step(self, t_s: float, signals: Signals) -> None:
        if self.asked_in is None and t_s >= self.at_s:
            self.asked_in = signals.current_phase("C")
            signals.switch_to("C", self.phase_id, self.green_s)


def test_phase_decision_goes_through_the_intergreen(scenario_cache: Path, tmp_path: Path) -> None:
    import libsumo

    built = build_scenario("four_arm", scenario_cache)
    junction = built.site().intersections[0]
    # 07:00 is 110 s into the 130 s cycle (offset 0): p4's green, which began at 100 s.
    controller = _SwitchOnce(SEVEN_AM + 2, "p2", 20.0)
    states: list[str] = []
    with SumoRun(built.site(), built.sumocfg, tmp_path, seed=1, begin_s=SEVEN_AM,
                 end_s=SEVEN_AM + 60, day=DAY, controller=controller) as run:
        while not run.finished():
            run.step()
            states.append(libsumo.trafficlight.getRedYellowGreenState("C"))
        assert run.signals is not None
        with pytest.raises(ValueError, match="outside"):
            run.signals.switch_to("C", "p1", 500.0)
    assert controller.asked_in == "p4"
    program = dict((state, duration) for duration, state in program_phases(
        junction.phases, junction.plan))
    p4, p2 = (next(p.sumo_state for p in junction.phases if p.id == i) for i in ("p4", "p2"))
    runs: list[list[object]] = []
    for state in states:
        if runs and runs[-1][0] == state:
            runs[-1][1] = float(runs[-1][1]) + 0.5  # type: ignore[arg-type]
        else:
            runs.append([state, 0.5])
    sequence = [state for state, _ in runs]
    assert sequence[0] == p4
    yellow = "".join("y" if c in "Gg" else "r" for c in str(p4))
    assert sequence[1:4] == [yellow, "r" * len(str(p4)), p2]
    assert runs[1][1] == program[yellow] == 3 and runs[2][1] == 3
    assert runs[3][1] == 20.0


def test_phase_decision_keeps_the_running_minimum_green(scenario_cache: Path,
                                                        tmp_path: Path) -> None:
    import libsumo

    built = build_scenario("four_arm", scenario_cache)
    # p1's green starts at 07:00:20 (130 s into the cycle); asked 1 s later, it still runs
    # its minimum before the intergreen.
    controller = _SwitchOnce(SEVEN_AM + 21, "p3", 20.0)
    p1_samples = 0
    with SumoRun(built.site(), built.sumocfg, tmp_path, seed=1, begin_s=SEVEN_AM,
                 end_s=SEVEN_AM + 60, day=DAY, controller=controller) as run:
        p1 = next(p.sumo_state for p in run.site.intersections[0].phases if p.id == "p1")
        while not run.finished():
            run.step()
            p1_samples += libsumo.trafficlight.getRedYellowGreenState("C") == p1
    assert controller.asked_in == "p1"
    minimum = next(p.min_green_s for p in built.site().intersections[0].phases if p.id == "p1")
    assert p1_samples * 0.5 == minimum


def test_running_a_scenario_simpang_did_not_write_leaves_its_files_alone(
    tmp_path: Path,
) -> None:
    """SUMO's game scenarios write outputs next to their files (inside the installed package);
    a run sends them, and the configuration's own outputs, to its work directory."""
    game_dir = game_scenario("cross").parent
    config = tmp_path / "scenario" / "cross.sumocfg"
    config.parent.mkdir()
    text = game_scenario("cross").read_text()
    # The same scenario with absolute inputs and an output of the configuration's own.
    for name in ("cross/cross.net.xml", "cross/cross.rou.xml", "cross/cross.tls.add.xml",
                 "cross/cross.settings.xml", "input_additional.add.xml"):
        text = text.replace(name, str(game_dir / name))
    assert str(game_dir / "cross/cross.net.xml") in text
    config.write_text(text.replace("<time>", '<output><summary-output value="summary.xml"/>'
                                            "</output><time>"))
    site = import_sumocfg(config, site_id="cross", site_file_dir=tmp_path).site

    def listing() -> dict[str, float]:
        return {str(p): p.stat().st_mtime for d in (game_dir, config.parent)
                for p in d.rglob("*") if p.is_file()}

    before = listing()
    work = tmp_path / "work"
    readings = 0
    with SumoRun(site, config, work, begin_s=0, end_s=120, interval_s=60, day=DAY) as run:
        while not run.finished():
            run.step()
            readings += sum(m.readings for m in run.messages_due())
    assert listing() == before
    assert readings == 2 * sum(len(i.sensors) for i in site.intersections)
    written = {p.name for p in (work / "scenario-outputs").iterdir()}
    assert {"tlsstate.xml", "netstate.xml", "summary.xml"} <= written
