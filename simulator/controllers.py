"""Signal controllers for closed-loop runs: Simpang's plan mode, and the baselines it is
measured against (SUMO actuated control, Varaiya's max-pressure).

Every controller sees the simulation the way it would see a real intersection: Simpang's
controllers only through the site's detectors, their readings going through the same
validation and windows as in the streaming worker (:class:`MetricsPipeline`) and the same
:func:`simpang.recommend.recommend`; the baselines through SUMO, as their published forms do.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

from simpang.recommend import LaneDemand, plan_of, recommend
from simpang.records import ApproachMetrics, ReadingsBatch, TimingRecommendation
from simpang.site import Intersection, Site
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
            if self._cycles_seen[intersection_id] % self.every_cycles:
                continue
            recommendation = recommend(
                self.site.id, demand.intersection, demand, running=plan,
                now=self._run.timestamp(t_s), max_age_s=self.max_age_s)
            self.recommendations.append(recommendation)
            if recommendation.status == "recommended" and plan_of(recommendation) != plan:
                new = plan_of(recommendation)
                # Start the new cycle now: no phase is cut short by the change.
                signals.apply_plan(intersection_id, new.model_copy(
                    update={"offset_s": t_s % new.cycle_s}))


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
