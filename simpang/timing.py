"""Fixed-time signal timing from measured flows: PKJI 2023 saturation flows, Webster's cycle
and splits, degree of saturation and delay, within the site's guardrails. Pure: no I/O.

Method (PKJI 2023, Simpang APILL, which keeps MKJI 1997's procedure):

- Saturation flow of a lane group, in PCU per hour of green:
  ``S = S0 × F_city × F_friction × F_grade × F_right × F_left`` with ``S0 = 600 × width``
  (effective width in metres, protected approach). ``F_city`` by city population,
  ``F_friction`` by road environment and side friction (no non-motorised traffic: Simpang
  counts bicycles at 0 PCU), ``F_grade = 1 − 0.01 × uphill grade %`` (downhill: 1.0),
  ``F_right = 1 + 0.26 × right-turn share`` and ``F_left = 1 − 0.16 × left-turn share`` where
  the lane group only turns. A lane's measured ``saturation_flow_pcu_per_hour`` overrides it.
  PKJI reads the basic saturation flow of *opposed* approaches from charts of opposing and
  turning flows; those charts are not modelled: an opposed approach uses the protected formula
  (its motorcycles already weigh 0.4 PCU instead of 0.2); set a measured value where it
  matters.
- A phase's lane group on an approach: the approach's lanes with a movement the phase serves.
  Flow ratio ``y = q / S``; a phase's critical flow ratio is the largest of its groups.
- Lost time ``L`` = sum of yellow + all-red; Webster's optimal cycle
  ``C0 = (1.5 L + 5) / (1 − Y)`` with ``Y`` the sum of critical ratios; greens share
  ``C − L`` in proportion to the critical ratios, then respect min/max green, pedestrian
  walk + clearance, min/max cycle and the largest change from the running plan per step.
- Per group: capacity ``C = S × g / c``, degree of saturation ``DS = q / C``, delay (PKJI)
  ``D = c × A + NQ1 × 3600 / C`` with ``A = 0.5 (1 − g/c)² / (1 − g/c × DS)`` and overflow
  queue ``NQ1 = 0.25 C_c [(DS − 1) + √((DS − 1)² + 8 (DS − 0.5) / C_c)]`` for DS > 0.5
  (``C_c`` capacity per cycle, in PCU).

>>> from simpang.site import Intersection
>>> x = Intersection.model_validate({
...     "id": "x", "name": "X", "lat": 0, "lon": 0,
...     "approaches": [{"id": "north", "lanes": [{"id": "n1", "movements": ["through"]}]},
...                    {"id": "east", "lanes": [{"id": "e1", "movements": ["through"]}]}],
...     "phases": [{"id": "a", "movements": ["north:through"], "min_green_s": 10,
...                 "max_green_s": 90, "yellow_s": 3, "all_red_s": 2},
...                {"id": "b", "movements": ["east:through"], "min_green_s": 10,
...                 "max_green_s": 90, "yellow_s": 3, "all_red_s": 2}],
...     "plan": {"cycle_s": 70, "greens_s": {"a": 30, "b": 30}}})
>>> timing = webster_timing(x, {("north", "n1"): 800.0, ("east", "e1"): 400.0},
...                         stability=False)
>>> timing.plan.cycle_s, timing.plan.greens_s
(81.0, {'a': 47.0, 'b': 24.0})
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from simpang.site import Intersection, Movement, Phase, Plan, SaturationConditions

BASIC_SATURATION_PCU_PER_HOUR_PER_M = 600.0

LaneKey = tuple[str, str]  # (approach id, lane id)

_CITY_SIZE_FACTOR = [(3.0, 1.05), (1.0, 1.00), (0.5, 0.94), (0.1, 0.83), (0.0, 0.82)]
_SIDE_FRICTION_FACTOR = {
    ("commercial", "high"): 0.93, ("commercial", "medium"): 0.94, ("commercial", "low"): 0.95,
    ("residential", "high"): 0.96, ("residential", "medium"): 0.97,
    ("residential", "low"): 0.98,
}


def city_size_factor(population_millions: float) -> float:
    """PKJI's adjustment for city size.

    >>> city_size_factor(0.85), city_size_factor(4.0)
    (0.94, 1.05)
    """
    return next(factor for floor, factor in _CITY_SIZE_FACTOR if population_millions > floor)


def side_friction_factor(conditions: SaturationConditions) -> float:
    if conditions.environment == "restricted_access":
        return 1.0
    return _SIDE_FRICTION_FACTOR[(conditions.environment, conditions.side_friction)]


@dataclass(frozen=True)
class LaneGroup:
    """The lanes of one approach that one phase serves, each with its flow and saturation
    flow. Vehicles keep their lane near the stop line, so the group's flow ratio is its
    busiest lane's (an approach average would hide a lane that needs more green)."""

    phase_id: str
    approach_id: str
    lane_ids: tuple[str, ...]
    lane_flows_pcu_per_hour: tuple[float, ...]
    lane_saturation_flows_pcu_per_hour: tuple[float, ...]

    @property
    def flow_pcu_per_hour(self) -> float:
        return sum(self.lane_flows_pcu_per_hour)

    @property
    def saturation_flow_pcu_per_hour(self) -> float:
        return sum(self.lane_saturation_flows_pcu_per_hour)

    @property
    def flow_ratio(self) -> float:
        return max(q / s for q, s in zip(self.lane_flows_pcu_per_hour,
                                         self.lane_saturation_flows_pcu_per_hour, strict=True))


@dataclass(frozen=True)
class GroupPerformance:
    """A lane group under one plan."""

    phase_id: str
    approach_id: str
    flow_pcu_per_hour: float
    capacity_pcu_per_hour: float
    degree_of_saturation: float
    delay_s_per_pcu: float


@dataclass(frozen=True)
class Performance:
    """A plan's expected performance for the given flows."""

    groups: list[GroupPerformance]

    def approach_degree_of_saturation(self) -> dict[str, float]:
        """Highest DS of each approach's groups."""
        out: dict[str, float] = {}
        for group in self.groups:
            out[group.approach_id] = max(out.get(group.approach_id, 0.0),
                                         group.degree_of_saturation)
        return out

    def approach_delay_s(self) -> dict[str, float]:
        """Flow-weighted delay per PCU of each approach."""
        flows: dict[str, float] = {}
        weighted: dict[str, float] = {}
        for group in self.groups:
            flows[group.approach_id] = flows.get(group.approach_id, 0.0) + group.flow_pcu_per_hour
            weighted[group.approach_id] = (weighted.get(group.approach_id, 0.0)
                                           + group.flow_pcu_per_hour * group.delay_s_per_pcu)
        return {a: (weighted[a] / flows[a] if flows[a] > 0 else 0.0) for a in flows}

    @property
    def mean_delay_s(self) -> float:
        """Flow-weighted delay per PCU over the intersection."""
        total = sum(g.flow_pcu_per_hour for g in self.groups)
        if total <= 0:
            return 0.0
        return sum(g.flow_pcu_per_hour * g.delay_s_per_pcu for g in self.groups) / total

    @property
    def max_degree_of_saturation(self) -> float:
        return max((g.degree_of_saturation for g in self.groups), default=0.0)


@dataclass(frozen=True)
class Timing:
    """A recommended plan with the numbers it came from and why."""

    plan: Plan
    groups: list[LaneGroup]
    critical: dict[str, LaneGroup]
    lost_time_s: float
    sum_critical_flow_ratio: float
    webster_cycle_s: float | None
    performance: Performance
    reasons: list[str] = field(default_factory=list)


def lane_groups(intersection: Intersection, lane_flows_pcu_per_hour: Mapping[LaneKey, float]
                ) -> list[LaneGroup]:
    """Every (phase, approach) lane group with its flow and PKJI saturation flow.

    Lanes without a measured flow count as zero flow.
    """
    conditions = intersection.saturation
    base_factor = city_size_factor(conditions.city_population_millions) * side_friction_factor(
        conditions)
    groups = []
    for phase in intersection.phases:
        served = set(served_lanes(intersection, phase))
        for approach in intersection.approaches:
            lanes = [lane for lane in approach.lanes if (approach.id, lane.id) in served]
            if not lanes:
                continue
            grade_factor = 1.0 - 0.01 * max(approach.grade_pct, 0.0)
            saturations = []
            for lane in lanes:
                if lane.saturation_flow_pcu_per_hour is not None:
                    saturations.append(lane.saturation_flow_pcu_per_hour)
                    continue
                turn_factor = 1.0
                if lane.movements == [Movement.RIGHT]:
                    turn_factor = 1.26
                elif lane.movements == [Movement.LEFT]:
                    turn_factor = 0.84
                saturations.append(BASIC_SATURATION_PCU_PER_HOUR_PER_M * lane.width_m
                                   * base_factor * grade_factor * turn_factor)
            groups.append(LaneGroup(
                phase.id, approach.id, tuple(lane.id for lane in lanes),
                tuple(lane_flows_pcu_per_hour.get((approach.id, lane.id), 0.0)
                      for lane in lanes),
                tuple(saturations),
            ))
    return groups


def _busiest(group: LaneGroup) -> str:
    """The busiest lane's flow / saturation flow, for reasons."""
    q, s, lane = max(zip(group.lane_flows_pcu_per_hour, group.lane_saturation_flows_pcu_per_hour,
                         group.lane_ids, strict=True), key=lambda x: x[0] / x[1])
    return f"{q:.0f} / {s:.0f} PCU/h on lane {lane}"


def _served(phase: Phase) -> set[tuple[str, str]]:
    return {tuple(ref.split(":", 1)) for ref in phase.movements}  # type: ignore[misc]


def served_lanes(intersection: Intersection, phase: Phase) -> list[LaneKey]:
    """The lanes with a movement ``phase`` serves."""
    served = _served(phase)
    return [(a.id, lane.id) for a in intersection.approaches for lane in a.lanes
            if any((a.id, m) in served for m in lane.movements)]


def lost_time_s(intersection: Intersection) -> float:
    return sum(p.yellow_s + p.all_red_s for p in intersection.phases)


def minimum_green_s(phase: Phase) -> float:
    """A phase's shortest green: its minimum, and long enough for its pedestrians."""
    return max(phase.min_green_s, phase.pedestrian_walk_s + phase.pedestrian_clearance_s)


def evaluate_plan(intersection: Intersection, plan: Plan, groups: list[LaneGroup]
                  ) -> Performance:
    """Capacity, DS and PKJI delay of each lane group under ``plan``."""
    out = []
    for group in groups:
        green_ratio = plan.greens_s[group.phase_id] / plan.cycle_s
        capacity = group.saturation_flow_pcu_per_hour * green_ratio
        flow = group.flow_pcu_per_hour
        lane_delays = [
            (q, pkji_delay_s(plan.cycle_s, green_ratio, q / (s * green_ratio), s * green_ratio))
            for q, s in zip(group.lane_flows_pcu_per_hour,
                            group.lane_saturation_flows_pcu_per_hour, strict=True)
        ]
        delay = (sum(q * d for q, d in lane_delays) / flow if flow > 0
                 else lane_delays[0][1])
        out.append(GroupPerformance(
            group.phase_id, group.approach_id, flow, capacity,
            group.flow_ratio / green_ratio, delay,
        ))
    return Performance(out)


def pkji_delay_s(cycle_s: float, green_ratio: float, degree_of_saturation: float,
                 capacity_pcu_per_hour: float) -> float:
    """Mean delay per PCU (s): uniform delay plus the overflow queue's.

    >>> round(pkji_delay_s(60, 0.4, 0.6, 720), 1)
    15.4
    """
    if capacity_pcu_per_hour <= 0 or not math.isfinite(degree_of_saturation):
        return math.inf
    saturated = min(degree_of_saturation, 1.0)
    uniform = cycle_s * 0.5 * (1 - green_ratio) ** 2 / (1 - green_ratio * saturated)
    capacity_per_cycle = capacity_pcu_per_hour * cycle_s / 3600
    overflow = 0.0
    if degree_of_saturation > 0.5 and capacity_per_cycle > 0:
        excess = degree_of_saturation - 1
        overflow = 0.25 * capacity_per_cycle * (excess + math.sqrt(
            excess ** 2 + 8 * (degree_of_saturation - 0.5) / capacity_per_cycle))
    return uniform + overflow * 3600 / capacity_pcu_per_hour


def share(total: float, weights: list[float], lower: list[float], upper: list[float]
          ) -> list[float]:
    """Split ``total`` in proportion to ``weights`` within per-item bounds (water filling).

    Items that hit a bound keep it; the rest share what is left. ``total`` must lie between
    the sums of the bounds.

    >>> [round(g, 2) for g in share(100, [1, 1, 2], [10, 10, 10], [90, 20, 90])]
    [26.67, 20.0, 53.33]
    """
    if not sum(lower) - 1e-9 <= total <= sum(upper) + 1e-9:
        raise ValueError(f"{total} cannot be shared within bounds summing to "
                         f"{sum(lower)}..{sum(upper)}")
    fixed: dict[int, float] = {}
    while True:
        free = [i for i in range(len(weights)) if i not in fixed]
        left = total - sum(fixed.values())
        free_weight = sum(max(weights[i], 0.0) for i in free)
        proposal = {
            i: left * (max(weights[i], 0.0) / free_weight if free_weight > 0 else 1 / len(free))
            for i in free
        }
        violated = {i: lower[i] for i, v in proposal.items() if v < lower[i] - 1e-9}
        if not violated:
            violated = {i: upper[i] for i, v in proposal.items() if v > upper[i] + 1e-9}
        if not violated:
            return [float(fixed.get(i, proposal.get(i, 0.0))) for i in range(len(weights))]
        # Fix the worst offenders only: fixing one side can free room on the other.
        fixed.update(violated)


def webster_timing(
    intersection: Intersection,
    lane_flows_pcu_per_hour: Mapping[LaneKey, float],
    *,
    running: Plan | None = None,
    stability: bool = True,
    offset_s: float | None = None,
    cycle_s: float | None = None,
) -> Timing:
    """The plan for the measured flows (PCU/h per ``(approach, lane)``).

    ``running`` is the plan now in force (the site's by default); with ``stability`` the new
    cycle and greens move at most the site's ``max_cycle_change_s``/``max_green_change_s``
    from it. ``cycle_s`` replaces Webster's cycle (a corridor's common cycle); the bounds
    still apply.
    """
    running = running or intersection.plan
    limits = intersection.timing
    phases = intersection.phases
    groups = lane_groups(intersection, lane_flows_pcu_per_hour)
    critical: dict[str, LaneGroup] = {}
    for group in groups:
        if group.phase_id not in critical or group.flow_ratio > critical[group.phase_id].flow_ratio:
            critical[group.phase_id] = group
    ratios = [critical[p.id].flow_ratio if p.id in critical else 0.0 for p in phases]
    lost_s = lost_time_s(intersection)
    y_total = sum(ratios)
    reasons = [
        f"phase {p.id}: critical {critical[p.id].approach_id} "
        f"({', '.join(critical[p.id].lane_ids)}) flow ratio {r:.3f} = "
        f"{_busiest(critical[p.id])}"
        for p, r in zip(phases, ratios, strict=True) if p.id in critical
    ]
    reasons.append(f"sum of critical flow ratios Y = {y_total:.3f}, lost time L = {lost_s:g} s")
    lows = [minimum_green_s(p) for p in phases]
    highs = [max(p.max_green_s, low) for p, low in zip(phases, lows, strict=True)]
    shortest = sum(lows) + lost_s
    longest = sum(highs) + lost_s
    webster: float | None = None
    if cycle_s is not None:
        cycle = cycle_s
        reasons.append(f"common cycle of the corridor: {cycle_s:g} s")
    elif y_total >= 0.95:
        cycle = limits.max_cycle_s
        reasons.append(f"Y ≥ 0.95: demand at or above capacity, longest cycle {cycle:g} s")
    else:
        webster = (1.5 * lost_s + 5) / (1 - y_total)
        cycle = webster
        reasons.append(f"Webster cycle (1.5 L + 5) / (1 − Y) = {webster:.1f} s")
    bounded = min(max(cycle, limits.min_cycle_s, shortest), limits.max_cycle_s, longest)
    if abs(bounded - cycle) > 0.05:
        reasons.append(f"cycle {cycle:.1f} s held to {bounded:.1f} s by min/max cycle and "
                       "min/max greens")
    cycle = bounded
    if stability:
        lo = running.cycle_s - limits.max_cycle_change_s
        hi = running.cycle_s + limits.max_cycle_change_s
        if not lo <= cycle <= hi:
            stable = min(max(cycle, lo), hi)
            reasons.append(f"cycle {cycle:.1f} s limited to {stable:.1f} s: at most "
                           f"{limits.max_cycle_change_s:g} s change per step from "
                           f"{running.cycle_s:g} s")
            cycle = min(max(stable, shortest), longest)
        lows = [max(low, running.greens_s[p.id] - limits.max_green_change_s)
                for p, low in zip(phases, lows, strict=True)]
        highs = [max(min(high, running.greens_s[p.id] + limits.max_green_change_s), low)
                 for p, high, low in zip(phases, highs, lows, strict=True)]
        cycle = min(max(cycle, sum(lows) + lost_s), sum(highs) + lost_s)
    # Whole seconds, still within what the green bounds allow.
    fewest, most = sum(lows) + lost_s, sum(highs) + lost_s
    cycle = min(max(float(round(cycle)), math.ceil(fewest - 1e-9)), math.floor(most + 1e-9))
    cycle = min(max(cycle, fewest), most)
    greens = _whole_seconds(share(cycle - lost_s, ratios, lows, highs), lows, highs,
                            cycle - lost_s)
    plan = Plan(
        cycle_s=round(sum(greens) + lost_s, 3),
        greens_s={p.id: g for p, g in zip(phases, greens, strict=True)},
        offset_s=(running.offset_s if offset_s is None else offset_s)
        % (sum(greens) + lost_s),
    )
    return Timing(plan, groups, critical, lost_s, y_total, webster,
                  evaluate_plan(intersection, plan, groups), reasons)


def _whole_seconds(greens: list[float], lows: list[float], highs: list[float], total: float
                   ) -> list[float]:
    """Greens rounded to whole seconds (controllers step in seconds) keeping the total."""
    import numpy as np

    rounded = np.floor(np.array(greens) + 1e-9)
    rounded = np.maximum(rounded, np.ceil(np.array(lows) - 1e-9))
    remainder = round(float(total - rounded.sum()))
    # Seconds go to (or come from) the greens that lost (kept) the most in rounding.
    fractions = np.array(greens) - rounded
    order = np.argsort(-fractions if remainder > 0 else fractions, kind="stable")
    step = 1 if remainder > 0 else -1
    while remainder != 0:
        moved = False
        for i in order:
            candidate = rounded[i] + step
            if remainder != 0 and math.ceil(lows[i] - 1e-9) <= candidate <= highs[i] + 1e-9:
                rounded[i] = candidate
                remainder -= step
                moved = True
        if not moved:
            break
    return [float(g) for g in rounded]
