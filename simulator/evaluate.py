"""``simpang evaluate``: one SUMO scenario under several signal controllers and seeds, with the
measures published signal-control benchmarks use.

Delay per vehicle is SUMO's ``timeLoss`` + ``departDelay`` over every vehicle the routes
insert between begin and end: vehicles still driving at the end count with the delay they
have so far, vehicles never inserted (a controller that blocks an entry) with the whole
time they waited to depart (SUMO's ``--tripinfo-output.write-unfinished`` and
``write-undeparted``). Travel time likewise (``duration`` + ``departDelay``); throughput is
vehicles that arrived; stops are SUMO's ``waitingCount``; queues are the per-minute longest
jam (metres) over every lane of each approach, averaged (mean) and at worst (max). The 95 %
confidence interval of a mean over seeds uses Student's t.
"""

from __future__ import annotations

import functools
import math
import statistics
import xml.etree.ElementTree as ET
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from simpang.site import Site
from simulator.controllers import Actuated, MaxPressure, SimpangAdaptive, SimpangPlan
from simulator.saturation import LaneSaturation
from simulator.signals import FixedTime
from simulator.sumo_run import TRIPINFO_OUTPUT, SumoRun, queue_intervals

CONTROLLERS = ("fixed", "actuated", "max-pressure", "simpang-plan", "simpang-adaptive")
"""Controllers ``simpang evaluate`` knows, in the order it reports them."""

MEASURES = ("mean_delay_s", "mean_travel_time_s", "mean_queue_m", "max_queue_m",
            "throughput_veh", "mean_stops")


@dataclass(frozen=True)
class RunMeasures:
    """One controller, one seed."""

    controller: str
    seed: int
    mean_delay_s: float
    mean_travel_time_s: float
    mean_queue_m: float
    max_queue_m: float
    throughput_veh: int
    mean_stops: float
    vehicles: int
    never_departed: int
    plan_changes: int
    delay_by_depart_minute: dict[int, float] = field(default_factory=dict)
    queue_by_approach_m: dict[str, float] = field(default_factory=dict)
    plans: list[tuple[float, str, float]] = field(default_factory=list)
    """(simulated s, intersection, cycle s) of every plan in force, the first at the start."""


Controller = FixedTime | Actuated | MaxPressure | SimpangPlan | SimpangAdaptive


def make_controller(name: str, site: Site) -> Controller:
    if name == "fixed":
        return FixedTime()
    if name == "actuated":
        return Actuated(site)
    if name == "max-pressure":
        return MaxPressure(site)
    if name == "simpang-plan":
        return SimpangPlan(site)
    if name == "simpang-adaptive":
        return SimpangAdaptive(site)
    raise ValueError(f"unknown controller {name!r}; known: {', '.join(CONTROLLERS)}")


def run_once(site: Site, sumocfg: Path, controller_name: str, seed: int, work_dir: Path, *,
             day: datetime, begin_s: float | None = None, end_s: float | None = None,
             warmup_s: float = 0.0) -> RunMeasures:
    """Run the scenario once under one controller; its measures, leaving out the first
    ``warmup_s`` (the network starts empty)."""
    controller = make_controller(controller_name, site)
    extra: list[Path] = []
    work_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(controller, Actuated):
        path = work_dir / "actuated.add.xml"
        path.write_text(controller.additional_xml(), encoding="utf-8")
        extra.append(path)
    if isinstance(controller, SimpangAdaptive):
        path = work_dir / "camera-zones.add.xml"
        path.write_text(controller.additional_xml(lane_lengths_m(sumocfg)), encoding="utf-8")
        extra.append(path)
    run = SumoRun(site, sumocfg, work_dir, seed=seed, begin_s=begin_s, end_s=end_s, day=day,
                  controller=controller, extra_additional=extra,
                  write_unfinished=True)
    observe: Callable[[list[dict[str, Any]], datetime], None] | None = getattr(
        controller, "observe", None)
    with run:
        attach = getattr(controller, "attach", None)
        if attach is not None:
            attach(run)
        while not run.finished():
            t_s = run.step()
            readings = run.readings_due()
            if readings and observe is not None:
                observe(readings, run.timestamp(t_s))
        ended_at_s = run.time_s
        assert run.signals is not None
        plans = sorted((t_s, i, plan.cycle_s) for i in run.signals.intersections
                       for t_s, plan in run.signals.plan_changes(i))
        controlled = len(run.signals.intersections)
        if isinstance(controller, SimpangAdaptive):
            # Its plan is the cycle it ran: every cycle's length as it happened.
            plans = sorted([*plans[:controlled], *controller.cycles])
    measures = _measures(controller_name, seed, work_dir, run.begin, ended_at_s,
                         len(plans) - controlled, measured_from_s=run.begin + warmup_s)
    return replace(measures, plans=plans)


@functools.cache
def lane_lengths_m(sumocfg: Path) -> dict[str, float]:
    """Every lane's length in the scenario's network (read once per process: each run of
    the same scenario asks again)."""
    import sumolib

    from simulator.sumo_tools import read_sumocfg

    net = sumolib.net.readNet(str(read_sumocfg(sumocfg).net_file))
    return {lane.getID(): lane.getLength() for edge in net.getEdges() for lane in edge.getLanes()}


def _measures(controller: str, seed: int, work_dir: Path, begin_s: float, end_s: float,
              plan_changes: int, *, measured_from_s: float | None = None) -> RunMeasures:
    """The run's measures over vehicles that wanted to leave from ``measured_from_s`` (after
    a warm-up; ``begin_s`` by default) and queues from then."""
    measured_from = begin_s if measured_from_s is None else measured_from_s
    delays: list[float] = []
    travel: list[float] = []
    stops: list[int] = []
    arrived = 0
    never_departed = 0
    by_minute: dict[int, list[float]] = {}
    for _, element in ET.iterparse(work_dir / TRIPINFO_OUTPUT):
        if element.tag != "tripinfo":
            continue
        depart_delay = float(element.get("departDelay", 0))
        depart = float(element.get("depart", -1))
        # When the vehicle wanted to leave: a vehicle never inserted waited until the end.
        wanted = (depart if depart >= 0 else end_s) - depart_delay
        if wanted < measured_from:
            element.clear()
            continue
        delay = float(element.get("timeLoss", 0)) + depart_delay
        if depart < 0:
            never_departed += 1
        if float(element.get("arrival", -1)) >= 0:
            arrived += 1
        delays.append(delay)
        travel.append(max(float(element.get("duration", 0)), 0.0) + depart_delay)
        stops.append(int(element.get("waitingCount", 0)))
        by_minute.setdefault(int((wanted - begin_s) // 60), []).append(delay)
        element.clear()
    # Per approach and minute, the longest jam over its lanes.
    per_interval: dict[tuple[str, float], float] = {}
    for approach, begin, jam_m in queue_intervals(work_dir):
        if begin >= measured_from:
            per_interval[(approach, begin)] = max(per_interval.get((approach, begin), 0.0), jam_m)
    queues: dict[str, list[float]] = {}
    for (approach, _), jam in per_interval.items():
        queues.setdefault(approach, []).append(jam)
    mean_queue = statistics.fmean(statistics.fmean(v) for v in queues.values()) if queues else 0.0
    return RunMeasures(
        controller=controller,
        seed=seed,
        mean_delay_s=statistics.fmean(delays) if delays else 0.0,
        mean_travel_time_s=statistics.fmean(travel) if travel else 0.0,
        mean_queue_m=mean_queue,
        max_queue_m=max((max(v) for v in queues.values()), default=0.0),
        throughput_veh=arrived,
        mean_stops=statistics.fmean(stops) if stops else 0.0,
        vehicles=len(delays),
        never_departed=never_departed,
        plan_changes=plan_changes,
        delay_by_depart_minute={m: statistics.fmean(v) for m, v in sorted(by_minute.items())},
        queue_by_approach_m={a: statistics.fmean(v) for a, v in sorted(queues.items())},
    )


def confidence_95(values: list[float]) -> float:
    """Half-width of the 95 % confidence interval of the mean (Student's t); 0 for one value.

    >>> round(confidence_95([10.0, 12.0, 14.0]), 2)
    4.97
    """
    if len(values) < 2:
        return 0.0
    from scipy.stats import t

    return float(t.ppf(0.975, len(values) - 1) * statistics.stdev(values)
                 / math.sqrt(len(values)))


def summarise(runs: list[RunMeasures]) -> dict[str, dict[str, Any]]:
    """Per controller: each measure's mean over seeds and its 95 % CI half-width."""
    out: dict[str, dict[str, Any]] = {}
    for controller in dict.fromkeys(r.controller for r in runs):
        mine = [r for r in runs if r.controller == controller]
        entry: dict[str, Any] = {"seeds": [r.seed for r in mine]}
        for measure in MEASURES:
            values = [float(getattr(r, measure)) for r in mine]
            entry[measure] = round(statistics.fmean(values), 2)
            entry[f"{measure}_ci95"] = round(confidence_95(values), 2)
        entry["ci95"] = entry["mean_delay_s_ci95"]
        entry["never_departed"] = sum(r.never_departed for r in mine)
        entry["plan_changes"] = sum(r.plan_changes for r in mine)
        out[controller] = entry
    return out


def run_as_dict(run: RunMeasures) -> dict[str, Any]:
    return asdict(run)


SURVEY_SEED = 1_000_003
"""The saturation survey's seed: never one of the evaluation's, so nothing is tuned on the
runs that are measured."""


@dataclass
class Evaluation:
    scenario: str
    begin_s: float
    end_s: float
    runs: list[RunMeasures]
    surveyed: list[LaneSaturation]
    warmup_s: float = 0.0

    def summary(self) -> dict[str, dict[str, Any]]:
        return summarise(self.runs)


def evaluate(
    site: Site,
    sumocfg: Path,
    work_dir: Path,
    *,
    scenario: str,
    controllers: list[str],
    seeds: list[int],
    begin_s: float | None = None,
    end_s: float | None = None,
    survey_saturation: bool = True,
    warmup_s: float = 0.0,
    on_run: Callable[[RunMeasures], None] | None = None,
    jobs: int = 1,
) -> Evaluation:
    """Every controller under every seed over the same simulated period (``jobs`` runs at a
    time, each in its own process).

    Simpang's controllers use a site whose lanes carry saturation flows measured by a
    :mod:`~simulator.saturation` survey of the same period under the fixed plan (its own
    seed); the baselines do not need them.
    """
    from simulator.saturation import survey, with_surveyed_flows
    from simulator.sumo_tools import read_sumocfg

    for name in controllers:
        if name not in CONTROLLERS:
            raise ValueError(f"unknown controller {name!r}; known: {', '.join(CONTROLLERS)}")
    config = read_sumocfg(sumocfg)
    begin = config.begin_s if begin_s is None else begin_s
    end = end_s if end_s is not None else config.end_s
    if end is None:
        raise ValueError(f"{sumocfg} has no end time: give one")
    day = datetime(2026, 1, 5, tzinfo=ZoneInfo(site.timezone))
    surveyed: list[LaneSaturation] = []
    simpang_site = site
    if survey_saturation and any(c.startswith("simpang") for c in controllers):
        surveyed = survey(site, sumocfg, work_dir / "survey", day=day, seed=SURVEY_SEED,
                          begin_s=begin, end_s=end)
        simpang_site = with_surveyed_flows(site, surveyed)
    tasks = [(simpang_site if name.startswith("simpang") else site, name, seed)
             for seed in seeds for name in controllers]
    runs: list[RunMeasures] = []
    if jobs <= 1:
        for task_site, name, seed in tasks:
            measures = run_once(task_site, sumocfg, name, seed, work_dir / f"{name}-{seed}",
                                day=day, begin_s=begin, end_s=end, warmup_s=warmup_s)
            runs.append(measures)
            if on_run is not None:
                on_run(measures)
    else:
        # libsumo runs one simulation per process: runs in parallel need processes.
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = [pool.submit(run_once, task_site, sumocfg, name, seed,
                                   work_dir / f"{name}-{seed}", day=day, begin_s=begin,
                                   end_s=end, warmup_s=warmup_s)
                       for task_site, name, seed in tasks]
            for future in as_completed(futures):
                if on_run is not None:
                    on_run(future.result())
            runs = [future.result() for future in futures]
    return Evaluation(scenario, begin, end, runs, surveyed, warmup_s)
