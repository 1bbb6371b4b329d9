"""Signal controllers for closed-loop runs: Simpang's plan mode, and the baselines it is
measured against (SUMO actuated control, Varaiya's max-pressure).

Every controller sees the simulation the way it would see a real intersection: Simpang's
controllers only through the site's detectors, their readings going through the same
validation and windows as in the streaming worker (:class:`MetricsPipeline`) and the same
:func:`simpang.recommend.recommend`; the baselines through SUMO, as their published forms do.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import TYPE_CHECKING, Any

from simpang.adaptive import (
    DEFAULT_HEADROOM,
    DemandForecast,
    PhaseTraffic,
    ResidualQueues,
    adaptive_recommendation,
    decide_green,
    longest_greens_s,
)
from simpang.corridor import recommend_corridor
from simpang.recommend import LaneDemand, plan_of, recommend
from simpang.records import ApproachMetrics, ReadingsBatch, TimingRecommendation
from simpang.site import Intersection, Plan, Site
from simpang.timing import minimum_green_s, served_lanes
from simpang.windows import WindowedAggregator, WindowSpec
from simulator.signals import GREEN, Signals, program_phases
from streams.ingest import ReadingValidator

if TYPE_CHECKING:
    from simulator.sumo_run import SumoRun

TIMING_WINDOW = WindowSpec(300, 60)
"""Flows for timing: the last 5 minutes, refreshed every minute (the worker's default)."""


class MetricsPipeline:
    """Detector readings → validated, normalised → windowed approach metrics, offline, with
    the worker's own code (a dict instead of a Faust table)."""

    def __init__(self, site: Site, windows: list[WindowSpec] | None = None,
                 grace_s: float = 5.0) -> None:
        self.validator = ReadingValidator(site, max_future_skew_s=120)
        self.aggregator = WindowedAggregator(
            site.id, windows or [TIMING_WINDOW], grace_s=grace_s, pcu=site.pcu_factors,
            protection=site.approach_protection())
        self.grace_s = grace_s
        self._store: dict[str, Any] = {}
        self._offset = 0
        self.dead_letters = 0

    def add(self, readings: list[dict[str, Any]], now: datetime) -> list[ApproachMetrics]:
        """Feed one detector interval's readings; the metrics of every window that closed."""
        now_ms = now.timestamp() * 1000
        result = self.validator.validate(
            json.dumps(readings).encode(), source="simulation",
            message_id=f"sim:{self._offset}", received_at=now)
        self.dead_letters += len(result.dead_letters)
        batch = ReadingsBatch(
            source_partition=0, source_offset=self._offset,
            readings=[r for rs in result.by_intersection.values() for r in rs])
        self._offset += 1
        out = self.aggregator.on_batch(self._store, 0, batch, arrival_ms=now_ms).metrics
        out += self.aggregator.on_tick(self._store, 0,
                                       arrival_ms=now_ms + self.grace_s * 1000 + 1).metrics
        return out


class SimpangPlan:
    """Simpang's plan mode in closed loop: every ``every_cycles`` cycles, at a cycle boundary,
    the plan :func:`~simpang.recommend.recommend` makes from the latest 5-minute flows."""

    name = "simpang-plan"

    def __init__(self, site: Site, *, every_cycles: int = 3, max_age_s: float = 300.0,
                 window: WindowSpec = TIMING_WINDOW) -> None:
        self.site = site
        self.every_cycles = every_cycles
        self.max_age_s = max_age_s
        self.pipeline = MetricsPipeline(site, [window])
        self.demand = {i.id: LaneDemand(i, window.label) for i in site.intersections
                       if i.sumo_tls is not None}
        self.recommendations: list[TimingRecommendation] = []
        self._run: SumoRun | None = None
        self._cycles_seen: dict[str, int] = dict.fromkeys(self.demand, 0)
        self._last_cycle_start: dict[str, float] = {}
        self._waiting: dict[str, Plan] = {}

    def attach(self, run: SumoRun) -> None:
        self._run = run

    def observe(self, readings: list[dict[str, Any]], now: datetime) -> None:
        metrics = self.pipeline.add(readings, now)
        for demand in self.demand.values():
            demand.update(metrics)

    def step(self, t_s: float, signals: Signals) -> None:
        if self._run is None:
            return
        for intersection_id, demand in self.demand.items():
            plan = signals.plan(intersection_id)
            if not signals.at_cycle_start(intersection_id, t_s):
                continue
            if self._last_cycle_start.get(intersection_id) == t_s:
                continue
            self._last_cycle_start[intersection_id] = t_s
            self._cycles_seen[intersection_id] += 1
            waiting = self._waiting.pop(intersection_id, None)
            if waiting is not None:
                # A corridor plan made at another member's cycle start.
                signals.apply_plan(intersection_id, waiting, align=True)
                continue
            if self._cycles_seen[intersection_id] % self.every_cycles:
                continue
            now = self._run.timestamp(t_s)
            corridor = self.site.corridor_of(intersection_id)
            if corridor is not None and any(m.intersection not in self.demand
                                            for m in corridor.members):
                corridor = None  # a member the simulation does not control
            if corridor is None:
                made = [recommend(self.site.id, demand.intersection, demand, running=plan,
                                  now=now, max_age_s=self.max_age_s)]
            else:
                members = [m.intersection for m in corridor.members]
                made = recommend_corridor(
                    self.site, corridor, {m: self.demand[m] for m in members},
                    {m: signals.plan(m) for m in members}, now=now, max_age_s=self.max_age_s)
                for member in members:
                    if member != intersection_id:
                        # Its own cycle count restarts: the corridor was just planned.
                        self._cycles_seen[member] = 0
            self.recommendations += made
            for recommendation in made:
                new = plan_of(recommendation)
                member = recommendation.intersection
                if recommendation.status != "recommended" or new == signals.plan(member):
                    continue
                if corridor is None:
                    # Start the new cycle now: no phase is cut short by the change.
                    signals.apply_plan(member, new.model_copy(
                        update={"offset_s": t_s % new.cycle_s}))
                elif member == intersection_id:
                    signals.apply_plan(member, new, align=True)
                else:
                    self._waiting[member] = new


class MaxPressure:
    """Varaiya's max-pressure (2013) in its slotted form: at the end of every slot of
    ``decision_s`` seconds of green, serve the phase whose movements have the largest
    pressure, the sum over its green links of the queue (halting vehicles) on the incoming
    lane minus the queue on the outgoing lane (the current phase wins ties and keeps its
    green). Queues, as in Varaiya's model: counting moving vehicles would make a phase's
    own discharge, driving off on the exit lanes, end its green. Switching goes
    through the site's yellow and all-red; greens respect the site's min/max."""

    name = "max-pressure"

    def __init__(self, site: Site, *, decision_s: float = 20.0) -> None:
        self.site = site
        self.decision_s = decision_s
        self._run: SumoRun | None = None
        self._links: dict[str, list[list[tuple[str, str]]]] = {}
        self._next_decision: dict[str, float] = {}
        self.decisions: list[tuple[float, str, str, dict[str, float]]] = []
        """(time, green now, phase chosen, pressure of every phase) at every slot's end."""

    def attach(self, run: SumoRun) -> None:
        self._run = run
        traci = run.traci
        for intersection in self.site.intersections:
            if intersection.sumo_tls is None:
                continue
            links = traci.trafficlight.getControlledLinks(intersection.sumo_tls)
            self._links[intersection.id] = [
                [(link[0], link[1]) for link in group if link[0] and link[1]]
                for group in links
            ]

    def pressure(self, intersection: Intersection, phase_id: str) -> float:
        assert self._run is not None
        traci = self._run.traci
        phase = next(p for p in intersection.phases if p.id == phase_id)
        state = phase.sumo_state or ""
        seen: set[tuple[str, str]] = set()
        total = 0.0
        for index, signal in enumerate(state):
            if signal not in GREEN:
                continue
            for in_lane, out_lane in self._links[intersection.id][index]:
                if (in_lane, out_lane) in seen:
                    continue
                seen.add((in_lane, out_lane))
                total += (traci.lane.getLastStepVehicleNumber(in_lane)
                          - traci.lane.getLastStepVehicleNumber(out_lane))
        return total

    def step(self, t_s: float, signals: Signals) -> None:
        if self._run is None:
            return
        for intersection in self.site.intersections:
            if intersection.id not in self._links:
                continue
            if t_s < self._next_decision.get(intersection.id, 0.0):
                continue
            green = signals.green_phase(intersection.id)
            if green is None or signals.pending(intersection.id):
                continue
            phase = next(p for p in intersection.phases if p.id == green)
            spent = signals.green_spent_s(intersection.id)
            if spent < max(phase.min_green_s, self.decision_s):
                continue
            self._next_decision[intersection.id] = t_s + self.decision_s
            pressures = {p.id: self.pressure(intersection, p.id) for p in intersection.phases}
            best = max(pressures, key=lambda p: (pressures[p], p == green))
            self.decisions.append((t_s, green, best, pressures))
            if best == green and spent + self.decision_s <= phase.max_green_s:
                signals.hold_green(intersection.id, self.decision_s)
            elif best != green:
                target = next(p for p in intersection.phases if p.id == best)
                signals.switch_to(intersection.id, best, target.max_green_s)
            # Else the current green has reached its maximum: the programme moves on.


class Actuated:
    """SUMO's own actuated control (gap-based extension between min and max green, detectors
    placed by SUMO) over the site's phase sequence, yellows and all-reds."""

    name = "actuated"
    PROGRAM_ID = "simpang-actuated"

    def __init__(self, site: Site, *, max_gap_s: float = 3.0) -> None:
        self.site = site
        self.max_gap_s = max_gap_s

    def additional_xml(self) -> str:
        """The actuated programmes, loaded with the scenario (SUMO places their detectors)."""
        lines = ["<additional>"]
        for intersection in self.site.intersections:
            if intersection.sumo_tls is None:
                continue
            lines.append(f'    <tlLogic id="{intersection.sumo_tls}" type="actuated" '
                         f'programID="{self.PROGRAM_ID}" offset="0">')
            lines.append(f'        <param key="max-gap" value="{self.max_gap_s:g}"/>')
            greens = {p.sumo_state: p for p in intersection.phases}
            for duration, state in program_phases(intersection.phases, intersection.plan):
                phase = greens.get(state)
                if phase is not None:
                    lines.append(f'        <phase duration="{duration:g}" state="{state}" '
                                 f'minDur="{phase.min_green_s:g}" '
                                 f'maxDur="{phase.max_green_s:g}"/>')
                else:
                    lines.append(f'        <phase duration="{duration:g}" state="{state}"/>')
            lines.append("    </tlLogic>")
        lines.append("</additional>")
        return "\n".join(lines) + "\n"

    def attach(self, run: SumoRun) -> None:
        for intersection in self.site.intersections:
            if intersection.sumo_tls is not None:
                run.traci.trafficlight.setProgram(intersection.sumo_tls, self.PROGRAM_ID)

    def step(self, t_s: float, signals: Signals) -> None:
        return None


class SimpangAdaptive:
    """Simpang's adaptive mode in closed loop (see :mod:`simpang.adaptive`): each cycle a plan
    from the forecast flows bounds the greens; each second, the site's loops (gaps) and
    approach cameras (queues) decide whether the running green holds or ends, always in the
    phase sequence and through the site's yellow and all-red.

    What it sees is what the site's devices would report: loop detections (an induction
    loop's time since its last vehicle), and per lane the stopped and moving vehicles within
    ``camera_range_m`` of the stop line on approaches that have a camera, the range an
    approach camera's queue zone covers.
    """

    name = "simpang-adaptive"
    ZONE_PREFIX = "simpang-camera-zone."

    def __init__(self, site: Site, *, camera_range_m: float = 60.0, max_gap_s: float = 3.0,
                 headroom: float = DEFAULT_HEADROOM, max_age_s: float = 300.0,
                 window: WindowSpec = TIMING_WINDOW,
                 forecast: dict[str, DemandForecast] | None = None) -> None:
        self.site = site
        self.camera_range_m = camera_range_m
        self.max_gap_s = max_gap_s
        self.headroom = headroom
        self.max_age_s = max_age_s
        self.window = window
        self.pipeline = MetricsPipeline(site, [window])
        self.intersections = {i.id: i for i in site.intersections if i.sumo_tls is not None}
        self.demand = {i: LaneDemand(x, window.label) for i, x in self.intersections.items()}
        self.forecast = forecast or {i: DemandForecast() for i in self.intersections}
        self.recommendations: list[TimingRecommendation] = []
        self.decisions: list[tuple[float, str, str, str]] = []
        """(time, intersection, phase ended, reason) of every green the controller ended."""
        self.cycles: list[tuple[float, str, float]] = []
        """(start time, intersection, length s) of every cycle completed."""
        self._cycle_start: dict[str, float] = {}
        self._last_green: dict[str, str] = {}
        self._longest: dict[str, dict[str, float]] = {
            i: longest_greens_s(x, x.plan, headroom) for i, x in self.intersections.items()}
        self.residual = {i: ResidualQueues() for i in self.intersections}
        self._lanes_by_phase = {
            i: {p.id: served_lanes(x, p) for p in x.phases}
            for i, x in self.intersections.items()}
        self._planned: dict[str, dict[str, float]] = {
            i: dict(x.plan.greens_s) for i, x in self.intersections.items()}
        self._green: dict[str, str | None] = dict.fromkeys(self.intersections)
        self._loops: dict[str, dict[str, list[str]]] = {}
        self._zones: dict[str, dict[str, list[str]]] = {}
        self._initial_green: dict[str, dict[str, float]] = {}
        self._may_skip: dict[str, dict[str, bool]] = {}
        self._green_since: dict[str, float] = {}
        self._last_moving: dict[str, float] = {}
        self._run: SumoRun | None = None
        self._newest_window_end: datetime | None = None

    def _zone_id(self, intersection_id: str, approach: str, lane: str) -> str:
        return f"{self.ZONE_PREFIX}{intersection_id}|{approach}|{lane}"

    def additional_xml(self, lane_lengths_m: dict[str, float]) -> str:
        """The camera zones as SUMO lane-area detectors (loaded with the scenario)."""
        lines = ["<additional>"]
        for intersection in self.intersections.values():
            watched = {c.approach for c in intersection.cameras}
            for approach in intersection.approaches:
                if approach.id not in watched:
                    continue
                for lane in approach.lanes:
                    if lane.sumo_lane is None:
                        continue
                    length = lane_lengths_m[lane.sumo_lane]
                    start = max(length - self.camera_range_m, 0.0)
                    zone = self._zone_id(intersection.id, approach.id, lane.id)
                    lines.append(
                        f'    <laneAreaDetector id="{zone}" lane="{lane.sumo_lane}" '
                        f'pos="{start:.2f}" endPos="{length:.2f}" period="86400" file="NUL"/>')
        lines.append("</additional>")
        return "\n".join(lines) + "\n"

    def attach(self, run: SumoRun) -> None:
        self._run = run
        for intersection_id, intersection in self.intersections.items():
            loops = {(s.approach, s.lane): s.device_id for s in intersection.sensors
                     if s.kind in ("loop", "counter")}
            watched = {c.approach for c in intersection.cameras}
            self._loops[intersection_id] = {}
            self._zones[intersection_id] = {}
            distance = {s.device_id: s.distance_m for s in intersection.sensors}
            self._initial_green[intersection_id] = {}
            self._may_skip[intersection_id] = {}
            phases = intersection.phases
            for index, phase in enumerate(phases):
                lanes = served_lanes(intersection, phase)
                mine = [loops[k] for k in lanes if k in loops]
                self._loops[intersection_id][phase.id] = mine
                # A standing queue starts moving about 2 s after green and its start-up
                # wave runs back at ~5 m/s: the loop sees it move after that.
                startup_s = 2.0 + max((distance[d] for d in mine), default=0.0) / 5.0
                self._initial_green[intersection_id][phase.id] = max(
                    minimum_green_s(phase), startup_s)
                # Skipping is safe only where no link stays green into the next phase.
                following = phases[(index + 1) % len(phases)]
                self._may_skip[intersection_id][phase.id] = not any(
                    a in GREEN and b in GREEN for a, b in zip(
                        phase.sumo_state or "", following.sumo_state or "", strict=True))
                self._zones[intersection_id][phase.id] = [
                    self._zone_id(intersection_id, a, lane) for a, lane in lanes if a in watched]

    def observe(self, readings: list[dict[str, Any]], now: datetime) -> None:
        self.on_metrics(self.pipeline.add(readings, now))

    def on_metrics(self, metrics: list[ApproachMetrics]) -> None:
        """Take approach metrics, as the timing agent takes them from ``approach-metrics``."""
        for intersection_id, demand in self.demand.items():
            demand.update(metrics)
            self.forecast[intersection_id].observe(demand, self.site.timezone)
        ends = [m.window_end for m in metrics]
        if ends and (self._newest_window_end is None or max(ends) > self._newest_window_end):
            self._newest_window_end = max(ends)

    def plan_for(self, intersection_id: str, now: datetime, running: Plan
                 ) -> TimingRecommendation:
        """The adaptive recommendation for the cycle starting at ``now`` (what the timing
        agent in adaptive mode makes from the same metrics)."""
        return adaptive_recommendation(
            self.site.id, self.intersections[intersection_id], self.demand[intersection_id],
            self.forecast[intersection_id], running=running, now=now,
            timezone=self.site.timezone, newest_window_end=self._newest_window_end or now,
            window_s=self.window.size_s, max_age_s=self.max_age_s, headroom=self.headroom,
            queue_factors=self.residual[intersection_id].lane_factors(
                self._lanes_by_phase[intersection_id]))

    def traffic(self, intersection_id: str, t_s: float, green_since_s: float
                ) -> dict[str, PhaseTraffic]:
        assert self._run is not None
        traci = self._run.traci
        out = {}
        for phase_id, loops in self._loops[intersection_id].items():
            last_moving = -math.inf
            for device_id in loops:
                since = traci.inductionloop.getTimeSinceDetection(device_id)
                if since > 0 or traci.inductionloop.getLastStepMeanSpeed(device_id) >= 1.0:
                    self._last_moving[device_id] = max(
                        self._last_moving.get(device_id, -math.inf), t_s - since)
                last_moving = max(last_moving, self._last_moving.get(device_id, -math.inf))
            # Vehicles that stood through the red only count once they move.
            gap = t_s - max(last_moving, green_since_s) if loops else math.inf
            queued = moving = 0
            for zone in self._zones[intersection_id][phase_id]:
                halting = traci.lanearea.getLastStepHaltingNumber(zone)
                queued += halting
                moving += traci.lanearea.getLastStepVehicleNumber(zone) - halting
            out[phase_id] = PhaseTraffic(phase_id, queued, moving, gap)
        return out

    def _plan_cycle(self, intersection_id: str, t_s: float, signals: Signals) -> None:
        assert self._run is not None
        made = self.plan_for(intersection_id, self._run.timestamp(t_s),
                             signals.plan(intersection_id))
        self.recommendations.append(made)
        self._longest[intersection_id] = made.inputs["longest_greens_s"]
        self._planned[intersection_id] = dict(made.greens_s)

    def step(self, t_s: float, signals: Signals) -> None:
        if self._run is None or abs(t_s - round(t_s)) > 1e-9:
            return  # decisions once per simulated second
        for intersection_id, intersection in self.intersections.items():
            green = signals.green_phase(intersection_id)
            if green is None or signals.pending(intersection_id):
                self._green[intersection_id] = None
                continue
            phase = next(p for p in intersection.phases if p.id == green)
            if self._green[intersection_id] != green:
                self._green[intersection_id] = green
                self._green_since[intersection_id] = t_s - signals.green_spent_s(intersection_id)
                order = [p.id for p in intersection.phases]
                previous_green = self._last_green.get(intersection_id)
                self._last_green[intersection_id] = green
                # A new round of the sequence (its first phase may have been skipped).
                if previous_green is None or order.index(green) <= order.index(previous_green):
                    started = self._green_since[intersection_id]
                    previous = self._cycle_start.get(intersection_id)
                    if previous is not None:
                        self.cycles.append((previous, intersection_id, started - previous))
                    self._cycle_start[intersection_id] = started
                    self._plan_cycle(intersection_id, t_s, signals)
                # Only this controller ends a green (the phase's maximum still stands).
                signals.hold_green(intersection_id, phase.max_green_s)
            traffic = self.traffic(intersection_id, t_s, self._green_since[intersection_id])
            decision = decide_green(
                [p.id for p in intersection.phases], green,
                signals.green_spent_s(intersection_id), traffic,
                initial_green_s=self._initial_green[intersection_id][green],
                longest_green_s=self._longest[intersection_id][green],
                max_gap_s=self.max_gap_s, may_skip=self._may_skip[intersection_id][green],
                planned_green_s=self._planned[intersection_id][green])
            if decision.action == "end" and decision.next_phase is not None:
                following = next(p for p in intersection.phases if p.id == decision.next_phase)
                signals.switch_to(intersection_id, following.id, following.max_green_s)
                self.decisions.append((t_s, intersection_id, green, decision.reason))
                self.residual[intersection_id].green_ended(green, traffic[green].queue_veh)
