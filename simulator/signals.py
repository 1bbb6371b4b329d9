"""Driving SUMO's traffic lights from Simpang's site model: plans and phase decisions.

A site phase carries the SUMO signal state of its green (``sumo_state``); the programme SUMO
runs is built from the site's phases and a :class:`~simpang.site.Plan`: each green, then a
yellow for the links that lose right of way, then all-red. Links green in both neighbouring
phases stay green through the intergreen.

>>> from simpang.site import Phase, Plan
>>> phases = [
...     Phase(id="a", movements=["x:through"], min_green_s=5, max_green_s=60,
...           yellow_s=3, all_red_s=2, sumo_state="GGr"),
...     Phase(id="b", movements=["y:through"], min_green_s=5, max_green_s=60,
...           yellow_s=3, all_red_s=0, sumo_state="rGG"),
... ]
>>> program_phases(phases, Plan(cycle_s=56, greens_s={"a": 30, "b": 18}))
[(30.0, 'GGr'), (3.0, 'yGr'), (2.0, 'rGr'), (18.0, 'rGG'), (3.0, 'rGy')]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from simpang.site import Intersection, Phase, Plan, Site

GREEN = frozenset("Gg")


def program_phases(phases: list[Phase], plan: Plan) -> list[tuple[float, str]]:
    """(duration s, state) of every SUMO phase of one cycle of ``plan``."""
    out: list[tuple[float, str]] = []
    for index, phase in enumerate(phases):
        state = _state(phase)
        following = _state(phases[(index + 1) % len(phases)])
        out.append((float(plan.greens_s[phase.id]), state))
        kept = [s if s in GREEN and n in GREEN else None for s, n in zip(state, following,
                                                                          strict=True)]
        if phase.yellow_s > 0:
            yellow = "".join(
                k if k is not None else ("y" if s in GREEN else "r")
                for k, s in zip(kept, state, strict=True)
            )
            out.append((phase.yellow_s, yellow))
        if phase.all_red_s > 0:
            out.append((phase.all_red_s, "".join(k if k is not None else "r" for k in kept)))
    return out


def _state(phase: Phase) -> str:
    if phase.sumo_state is None:
        raise ValueError(f"phase {phase.id!r} has no sumo_state: the site is not simulated")
    return phase.sumo_state


def green_index(phases: list[Phase], phase_id: str) -> int:
    """Index of a phase's green in :func:`program_phases`' list."""
    index = 0
    for phase in phases:
        if phase.id == phase_id:
            return index
        index += 1 + (phase.yellow_s > 0) + (phase.all_red_s > 0)
    raise KeyError(phase_id)


@dataclass
class _Pending:
    phase_id: str
    green_s: float
    intergreen_seen: bool = False


@dataclass
class _Controlled:
    intersection: Intersection
    plan: Plan
    program: list[tuple[float, str]]
    pending: _Pending | None = None
    plan_changes: list[tuple[float, Plan]] = field(default_factory=list)
    align_to_s: float | None = None
    """Cycle start (mod cycle) still to reach by dwelling, after an aligned plan change."""


class Signals:
    """What a controller may do to the simulated signals (one per run).

    Plans take effect at once, aligned so that the cycle starts at ``offset_s`` (mod cycle) of
    simulated time, as a coordinated controller would; a phase decision ends the current
    green (once it has run its minimum) through its yellow and all-red, then holds the
    requested phase for ``green_s``.
    """

    PROGRAM_ID = "simpang"

    def __init__(self, site: Site, traci: Any) -> None:
        self._traci = traci
        self._controlled: dict[str, _Controlled] = {}
        for intersection in site.intersections:
            if intersection.sumo_tls is None:
                continue
            self._controlled[intersection.id] = _Controlled(
                intersection, intersection.plan,
                program_phases(intersection.phases, intersection.plan),
            )

    @property
    def intersections(self) -> list[str]:
        return list(self._controlled)

    def plan(self, intersection_id: str) -> Plan:
        return self._controlled[intersection_id].plan

    def plan_changes(self, intersection_id: str) -> list[tuple[float, Plan]]:
        """(simulated time, plan) of every plan applied, the site's own at the start first."""
        return list(self._controlled[intersection_id].plan_changes)

    def apply_plan(self, intersection_id: str, plan: Plan, *, align: bool = False) -> None:
        """Run ``plan`` from now on (validated against the intersection first).

        Without ``align`` the programme jumps to where ``plan.offset_s`` puts it now. With
        ``align`` (call it at a cycle start) the new cycle starts now and the first phase's
        green dwells, within its maximum, at this and later cycle starts until the cycle
        starts at ``plan.offset_s``: how a coordinated controller moves to a new offset
        without cutting any green short.
        """
        controlled = self._controlled[intersection_id]
        intersection = controlled.intersection.model_copy(update={"plan": plan})
        checked = type(intersection).model_validate(intersection.model_dump())
        controlled.program = program_phases(checked.phases, checked.plan)
        controlled.pending = None
        if not align:
            controlled.plan = checked.plan
            controlled.align_to_s = None
            self._install(controlled)
            return
        now = self._traci.simulation.getTime()
        controlled.plan = checked.plan.model_copy(update={"offset_s": now % checked.plan.cycle_s})
        self._install(controlled)
        controlled.plan = checked.plan
        controlled.align_to_s = checked.plan.offset_s
        self._dwell(controlled, now)

    def _dwell(self, controlled: _Controlled, now: float) -> None:
        """At a cycle start: lengthen the first green towards the target offset."""
        if controlled.align_to_s is None:
            return
        cycle = controlled.plan.cycle_s
        late_s = (controlled.align_to_s - now) % cycle
        first = controlled.intersection.phases[0]
        green = controlled.program[0][0]
        tls = controlled.intersection.sumo_tls
        spent = self._traci.trafficlight.getSpentDuration(tls)
        early_s = cycle - late_s
        if early_s <= min(5.0, green - first.min_green_s):
            # A few seconds behind: a shorter first green catches up.
            self._traci.trafficlight.setPhaseDuration(tls, green - early_s - spent)
            controlled.align_to_s = None
            return
        extra = min(late_s, first.max_green_s - green)
        self._traci.trafficlight.setPhaseDuration(tls, green + extra - spent)
        if extra >= late_s:
            controlled.align_to_s = None

    def switch_to(self, intersection_id: str, phase_id: str, green_s: float) -> None:
        """End the current green (through its intergreen) and serve ``phase_id`` next."""
        controlled = self._controlled[intersection_id]
        phase = next((p for p in controlled.intersection.phases if p.id == phase_id), None)
        if phase is None:
            raise KeyError(f"{intersection_id} has no phase {phase_id!r}")
        if not phase.min_green_s <= green_s <= phase.max_green_s:
            raise ValueError(
                f"green {green_s} s for {phase_id!r} is outside "
                f"[{phase.min_green_s}, {phase.max_green_s}]"
            )
        controlled.pending = _Pending(phase_id, green_s)
        tls = controlled.intersection.sumo_tls
        current = self._traci.trafficlight.getPhase(tls)
        running = _current_phase(controlled, current)
        if controlled.program[current][1] == _state(running):
            # The running green keeps at least its minimum.
            spent_s = self._traci.trafficlight.getSpentDuration(tls)
            self._traci.trafficlight.setPhaseDuration(
                tls, max(running.min_green_s - spent_s, 0.0))

    def at_cycle_start(self, intersection_id: str, t_s: float) -> bool:
        """The first phase's green began in the step that ended at ``t_s``: a moment to
        change plans without cutting any phase short."""
        controlled = self._controlled[intersection_id]
        tls = controlled.intersection.sumo_tls
        return (controlled.pending is None
                and self._traci.trafficlight.getPhase(tls) == 0
                # SUMO counts the step a phase began in as spent.
                and self._traci.trafficlight.getSpentDuration(tls)
                <= self._traci.simulation.getDeltaT() + 1e-9)

    def green_phase(self, intersection_id: str) -> str | None:
        """Id of the site phase showing its green now; None during an intergreen."""
        controlled = self._controlled[intersection_id]
        index = self._traci.trafficlight.getPhase(controlled.intersection.sumo_tls)
        phase = _current_phase(controlled, index)
        return phase.id if controlled.program[index][1] == _state(phase) else None

    def green_spent_s(self, intersection_id: str) -> float:
        """How long the current SUMO phase has shown."""
        tls = self._controlled[intersection_id].intersection.sumo_tls
        return float(self._traci.trafficlight.getSpentDuration(tls))

    def pending(self, intersection_id: str) -> bool:
        """A phase decision waits for its intergreen."""
        return self._controlled[intersection_id].pending is not None

    def hold_green(self, intersection_id: str, seconds: float) -> None:
        """Keep the current green ``seconds`` more, never past its maximum."""
        controlled = self._controlled[intersection_id]
        green = self.green_phase(intersection_id)
        if green is None:
            raise ValueError(f"{intersection_id} is in an intergreen: no green to hold")
        phase = next(p for p in controlled.intersection.phases if p.id == green)
        left = phase.max_green_s - self.green_spent_s(intersection_id)
        self._traci.trafficlight.setPhaseDuration(
            controlled.intersection.sumo_tls, max(min(seconds, left), 0.0))

    def current_phase(self, intersection_id: str) -> str:
        """Id of the site phase whose green (or intergreen) SUMO is in."""
        controlled = self._controlled[intersection_id]
        index = self._traci.trafficlight.getPhase(controlled.intersection.sumo_tls)
        return _current_phase(controlled, index).id

    def start(self, t_s: float) -> None:
        for controlled in self._controlled.values():
            self._install(controlled, t_s)

    def on_step(self) -> None:
        """Carry out pending phase decisions once the intergreen before them has run.

        SUMO moves on to the programme's next green when the intergreen ends; in that same
        step, before any vehicle moved on it, the requested phase replaces it.
        """
        step_s = self._traci.simulation.getDeltaT()
        for controlled in self._controlled.values():
            if controlled.align_to_s is not None:
                tls = controlled.intersection.sumo_tls
                if (self._traci.trafficlight.getPhase(tls) == 0
                        and self._traci.trafficlight.getSpentDuration(tls) <= step_s + 1e-9):
                    self._dwell(controlled, self._traci.simulation.getTime())
            pending = controlled.pending
            if pending is None:
                continue
            tls = controlled.intersection.sumo_tls
            index = self._traci.trafficlight.getPhase(tls)
            in_green = controlled.program[index][1] == _state(_current_phase(controlled, index))
            if not in_green:
                pending.intergreen_seen = True
            elif pending.intergreen_seen:
                target = green_index(controlled.intersection.phases, pending.phase_id)
                self._traci.trafficlight.setPhase(tls, target)
                # The green already shows in this step; SUMO counts the duration from the next.
                self._traci.trafficlight.setPhaseDuration(
                    tls, pending.green_s - self._traci.simulation.getDeltaT())
                controlled.pending = None

    def _install(self, controlled: _Controlled, t_s: float | None = None) -> None:
        traci = self._traci
        tls = controlled.intersection.sumo_tls
        now = traci.simulation.getTime() if t_s is None else t_s
        logic = traci.trafficlight.Logic(
            self.PROGRAM_ID, 0, 0,
            [traci.trafficlight.Phase(duration, state) for duration, state in controlled.program],
        )
        traci.trafficlight.setProgramLogic(tls, logic)
        traci.trafficlight.setProgram(tls, self.PROGRAM_ID)
        cycle_s = sum(duration for duration, _ in controlled.program)
        position = (now - controlled.plan.offset_s) % cycle_s
        for index, (duration, _) in enumerate(controlled.program):
            if position < duration:
                traci.trafficlight.setPhase(tls, index)
                traci.trafficlight.setPhaseDuration(tls, duration - position)
                break
            position -= duration
        controlled.plan_changes.append((now, controlled.plan))


def _current_phase(controlled: _Controlled, program_index: int) -> Phase:
    phases = controlled.intersection.phases
    starts = [green_index(phases, p.id) for p in phases]
    owner = max(i for i, start in enumerate(starts) if start <= program_index)
    return phases[owner]


class SignalController(Protocol):
    """Closed-loop control: called every simulation step with the signals it may change."""

    def step(self, t_s: float, signals: Signals) -> None: ...


class FixedTime:
    """Runs the site's plans unchanged (the baseline)."""

    def step(self, t_s: float, signals: Signals) -> None:
        return None


class PlanSchedule:
    """Applies given plans at given simulated times: ``{t_s: {intersection: plan}}``."""

    def __init__(self, schedule: dict[float, dict[str, Plan]]) -> None:
        self._pending = sorted(schedule.items())

    def step(self, t_s: float, signals: Signals) -> None:
        while self._pending and self._pending[0][0] <= t_s:
            _, plans = self._pending.pop(0)
            for intersection_id, plan in plans.items():
                signals.apply_plan(intersection_id, plan)
