"""From approach metrics to a validated :class:`~simpang.records.TimingRecommendation`, the one
path both the streaming timing agent and the closed-loop evaluator take. Pure: no I/O.

:class:`LaneDemand` keeps the newest flow of every lane from ``approach-metrics`` rows (field
devices first; a camera's count for a lane no field device covers); :func:`recommend` turns
it into a plan with :func:`simpang.timing.webster_timing`, checks it with
:mod:`simpang.timing_safety`, and falls back to the running plan, saying why, when the data
is stale or missing or the plan is unsafe.

>>> from datetime import UTC, datetime
>>> from simpang.site import Intersection
>>> x = Intersection.model_validate({
...     "id": "x", "name": "X", "lat": 0, "lon": 0,
...     "approaches": [{"id": "north", "lanes": [{"id": "n1", "movements": ["through"]}]},
...                    {"id": "east", "lanes": [{"id": "e1", "movements": ["through"]}]}],
...     "phases": [{"id": "a", "movements": ["north:through"], "min_green_s": 10,
...                 "max_green_s": 90, "yellow_s": 3, "all_red_s": 2},
...                {"id": "b", "movements": ["east:through"], "min_green_s": 10,
...                 "max_green_s": 90, "yellow_s": 3, "all_red_s": 2}],
...     "plan": {"cycle_s": 70, "greens_s": {"a": 30, "b": 30}},
...     "sensors": [{"device_id": "l1", "kind": "loop", "approach": "north", "lane": "n1"}]})
>>> demand = LaneDemand(x, window="300s-every-60s")
>>> now = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
>>> r = recommend("demo", x, demand, running=x.plan, now=now)
>>> r.status, r.reasons[0]
('fallback', 'no metrics yet for lanes north/n1: the running plan stays')
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from simpang.records import ApproachAssessment, ApproachMetrics, TimingRecommendation
from simpang.site import Intersection, Plan
from simpang.timing import LaneKey, Performance, evaluate_plan, lane_groups, webster_timing
from simpang.timing_safety import check_plan

DEFAULT_MAX_AGE_S = 300.0
SATURATED_DS = 0.9
SATURATED_DEMAND_FACTOR = 1.2


@dataclass
class _LaneFlow:
    flow_pcu_per_hour: float
    window_end: datetime
    source: str


@dataclass
class LaneDemand:
    """The newest flow per lane of one intersection, from metrics rows of one window."""

    intersection: Intersection
    window: str
    _field: dict[LaneKey, _LaneFlow] = field(default_factory=dict)
    _camera: dict[LaneKey, _LaneFlow] = field(default_factory=dict)
    _counting: set[LaneKey] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._counting = {(s.approach, s.lane) for s in self.intersection.sensors
                          if s.kind in ("loop", "counter")}

    def update(self, metrics: Iterable[ApproachMetrics]) -> None:
        lanes = {a.id: [lane.id for lane in a.lanes] for a in self.intersection.approaches}
        for row in metrics:
            if (row.intersection != self.intersection.id or row.window != self.window
                    or row.approach not in lanes):
                continue
            if row.source == "field" and row.lane is not None and (
                    row.approach, row.lane) not in self._counting:
                continue  # a radar's zero count is no count: it cannot count
            store = self._field if row.source == "field" else self._camera
            if row.lane is not None:
                targets = [row.lane] if row.lane in lanes[row.approach] else []
                flow = row.flow_pcu_per_hour
            elif row.source == "camera":
                # An approach-wide camera line: its flow shared over the approach's lanes.
                targets = lanes[row.approach]
                flow = row.flow_pcu_per_hour / len(targets)
            else:
                continue
            for lane in targets:
                key = (row.approach, lane)
                known = store.get(key)
                if known is None or row.window_end >= known.window_end:
                    store[key] = _LaneFlow(flow, row.window_end, row.source)

    def monitored_lanes(self) -> list[LaneKey]:
        """Lanes with a counting field device (loop, counter) or a camera line, whose flow a
        plan must know. A radar measures occupancy and speed, not flow."""
        lanes = set(self._counting)
        for camera in self.intersection.cameras:
            for line in camera.counting_lines:
                if line.lane is not None:
                    lanes.add((line.approach, line.lane))
                else:
                    lanes |= {(line.approach, lane.id) for lane in
                              self.intersection.approach(line.approach).lanes}
        return sorted(lanes)

    def flows(self) -> dict[LaneKey, _LaneFlow]:
        return {key: self._field.get(key) or self._camera[key]
                for key in set(self._field) | set(self._camera)}

    def with_flows(self, flows_pcu_per_hour: Mapping[LaneKey, float]) -> LaneDemand:
        """A copy whose lanes carry ``flows_pcu_per_hour`` (a forecast) instead of their
        measured flows, with the same window ends and sources: whatever makes the measured
        data missing or stale makes the copy so too."""
        copy = LaneDemand(self.intersection, self.window)
        for key, known in self.flows().items():
            flow = flows_pcu_per_hour.get(key, known.flow_pcu_per_hour)
            copy._field[key] = _LaneFlow(flow, known.window_end, known.source)
        return copy


def _assessments(performance: Performance) -> dict[str, ApproachAssessment]:
    flows: dict[str, float] = {}
    for group in performance.groups:
        flows[group.approach_id] = flows.get(group.approach_id, 0.0) + group.flow_pcu_per_hour
    ds = performance.approach_degree_of_saturation()
    delay = performance.approach_delay_s()
    return {a: ApproachAssessment(flow_pcu_per_hour=round(flows[a], 1),
                                  degree_of_saturation=round(ds[a], 3),
                                  delay_s=round(min(delay[a], 1e6), 1)) for a in sorted(flows)}


def recommend(
    site_id: str,
    intersection: Intersection,
    demand: LaneDemand,
    *,
    running: Plan,
    now: datetime,
    max_age_s: float = DEFAULT_MAX_AGE_S,
    stability: bool = True,
    mode: Literal["plan", "adaptive"] = "plan",
    cycle_s: float | None = None,
) -> TimingRecommendation:
    """The plan for the current demand, or the running plan with the reason it stays.
    ``cycle_s`` sets the cycle (a corridor's common one) instead of Webster's."""
    flows = demand.flows()
    lane_flows = {key: value.flow_pcu_per_hour for key, value in flows.items()}
    reasons: list[str] = []
    monitored = demand.monitored_lanes()
    missing = [key for key in monitored if key not in flows]
    stale = [key for key in monitored if key in flows
             and (now - flows[key].window_end).total_seconds() > max_age_s]
    if missing:
        reasons.append(f"no metrics yet for lanes {', '.join(f'{a}/{lane}' for a, lane in missing)}"
                       ": the running plan stays")
    if stale:
        oldest = max((now - flows[key].window_end).total_seconds() for key in stale)
        reasons.append(f"stale metrics for lanes {', '.join(f'{a}/{lane}' for a, lane in stale)}"
                       f" ({oldest:.0f} s old, limit {max_age_s:g} s): the running plan stays")
    unmonitored = [(a.id, lane.id) for a in intersection.approaches for lane in a.lanes
                   if (a.id, lane.id) not in monitored]
    if unmonitored:
        reasons.append("no counting detector on lanes "
                       f"{', '.join(f'{a}/{lane}' for a, lane in unmonitored)}: taken as 0 PCU/h")
    lane_flows = _uncapped(intersection, lane_flows, running, reasons)
    groups = lane_groups(intersection, lane_flows)
    before = evaluate_plan(intersection, running, groups)
    timing = webster_timing(intersection, lane_flows, running=running, stability=stability,
                            cycle_s=cycle_s)
    plan = timing.plan
    status: Literal["recommended", "fallback"] = "recommended"
    if missing or stale:
        plan, status = running, "fallback"
    else:
        reasons.extend(timing.reasons)
        violations = check_plan(intersection, plan)
        if violations:
            reasons.extend(f"rejected by the safety check: {v.message}" for v in violations)
            reasons.append("the running plan stays")
            plan, status = running, "fallback"
    after = timing.performance if status == "recommended" else before
    if status == "recommended":
        ds_before, ds_after = before.max_degree_of_saturation, after.max_degree_of_saturation
        reasons.append(
            f"highest DS {ds_before:.2f} → {ds_after:.2f}; expected delay "
            f"{before.mean_delay_s:.1f} → {after.mean_delay_s:.1f} s/PCU")
    window_ends = [value.window_end for value in flows.values()]
    return TimingRecommendation(
        site=site_id,
        intersection=intersection.id,
        ts=now,
        mode=mode,
        status=status,
        cycle_s=plan.cycle_s,
        greens_s=dict(plan.greens_s),
        offset_s=plan.offset_s,
        running_cycle_s=running.cycle_s,
        running_greens_s=dict(running.greens_s),
        expected_delay_s=round(min(after.mean_delay_s, 1e6), 1),
        running_delay_s=round(min(before.mean_delay_s, 1e6), 1),
        approaches=_assessments(after),
        running_approaches=_assessments(before),
        critical={phase: group.approach_id for phase, group in timing.critical.items()},
        flow_ratios={phase: round(group.flow_ratio, 4)
                     for phase, group in timing.critical.items()},
        reasons=reasons,
        inputs={
            "window": demand.window,
            "newest_window_end": max(window_ends).isoformat() if window_ends else None,
            "lane_flows_pcu_per_hour": {f"{a}/{lane}": round(v, 1)
                                        for (a, lane), v in sorted(lane_flows.items())},
            "lane_sources": {f"{a}/{lane}": v.source for (a, lane), v in sorted(flows.items())},
            "saturation_flows_pcu_per_hour": {
                f"{g.phase_id}:{g.approach_id}": round(g.saturation_flow_pcu_per_hour, 1)
                for g in groups},
            "lost_time_s": timing.lost_time_s,
        },
    )


def _uncapped(intersection: Intersection, lane_flows: dict[LaneKey, float], running: Plan,
              reasons: list[str]) -> dict[LaneKey, float]:
    """Counts of a lane running at capacity under the running plan are capped by that
    capacity, not by demand: a plan built on them would give that lane no more green, its
    queue would grow and its counts stay capped. Such a lane's demand is taken as
    :data:`SATURATED_DEMAND_FACTOR` × its count, so each step gives it more green until it
    runs below :data:`SATURATED_DS`."""
    out = dict(lane_flows)
    for group in lane_groups(intersection, lane_flows):
        green_ratio = running.greens_s[group.phase_id] / running.cycle_s
        for lane, flow, saturation in zip(group.lane_ids, group.lane_flows_pcu_per_hour,
                                          group.lane_saturation_flows_pcu_per_hour, strict=True):
            key = (group.approach_id, lane)
            ds = flow / (saturation * green_ratio)
            if ds >= SATURATED_DS and out.get(key, 0.0) == flow:
                out[key] = flow * SATURATED_DEMAND_FACTOR
                reasons.append(
                    f"lane {group.approach_id}/{lane} ran at DS {ds:.2f} under the running plan:"
                    f" its count is capped by capacity, demand taken as "
                    f"{SATURATED_DEMAND_FACTOR:g} × {flow:.0f} PCU/h")
    return out


def plan_of(recommendation: TimingRecommendation) -> Plan:
    return Plan(cycle_s=recommendation.cycle_s, greens_s=recommendation.greens_s,
                offset_s=recommendation.offset_s)
