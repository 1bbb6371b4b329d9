"""Adaptive signal control, the parts that need no simulator and no broker: a short-term
demand forecast per lane and the green-by-green decision within the phase sequence.

Adaptive mode works on two time scales, as SCATS-like systems do:

- **Each cycle** the timing core (:func:`simpang.recommend.recommend`, mode ``adaptive``)
  makes a plan from the *forecast* flows; that plan's greens, stretched by a headroom
  factor and kept within each phase's min/max, are the longest greens this cycle may give.
- **Each second** of a green, :func:`decide_green` holds or ends it from what the site's
  detectors see now: gaps between vehicles at the stop-line approach loops, and queues
  (stopped vehicles) in the approach cameras' queue zones. A green ends when its traffic has
  gone (gap out) while another phase has vehicles waiting, when it reaches this cycle's
  longest green, or when its own lanes have emptied and the waiting queue elsewhere is
  longer (pressure). A phase with nothing waiting anywhere else keeps its green.

The forecast (:class:`DemandForecast`) is Holt's exponential smoothing (level and trend) of
each lane's 5-minute flow, scaled where it knows the time of day's profile from earlier days
(:class:`TimeOfDayProfile`) by that profile's change over the forecast horizon.

>>> forecast = DemandForecast(alpha=0.5, beta=0.3)
>>> for minute, flow in enumerate([600.0, 660.0, 720.0, 780.0]):
...     forecast.update({("north", "n1"): flow}, minute * 60.0)
>>> round(forecast.forecast(120.0)[("north", "n1")])
806
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal
from zoneinfo import ZoneInfo

from simpang.recommend import LaneDemand, recommend
from simpang.records import TimingRecommendation
from simpang.site import Intersection, Plan
from simpang.timing import LaneKey, minimum_green_s

DEFAULT_HEADROOM = 1.5
"""A green may run to this many times its share in the cycle's plan (gap out ends it sooner)."""

SECONDS_PER_DAY = 86_400.0


@dataclass
class _Holt:
    level: float
    trend_per_s: float
    at_s: float


@dataclass
class TimeOfDayProfile:
    """Each lane's mean flow per time-of-day slot, smoothed over days (weight ``alpha`` for
    the newest day): the shape of the day a forecast can lean on before the day shows it.

    >>> profile = TimeOfDayProfile(slot_s=3600)
    >>> profile.update(("east", "e1"), 7 * 3600 + 60, 400.0)
    >>> profile.update(("east", "e1"), 8 * 3600 + 60, 800.0)
    >>> profile.change(("east", "e1"), 7 * 3600 + 60, 3600.0)
    2.0
    """

    slot_s: float = 900.0
    alpha: float = 0.3
    flows: dict[LaneKey, dict[int, float]] = field(default_factory=dict)

    def slot(self, seconds_of_day: float) -> int:
        return int((seconds_of_day % SECONDS_PER_DAY) // self.slot_s)

    def update(self, lane: LaneKey, seconds_of_day: float, flow_pcu_per_hour: float) -> None:
        slots = self.flows.setdefault(lane, {})
        slot = self.slot(seconds_of_day)
        known = slots.get(slot)
        slots[slot] = flow_pcu_per_hour if known is None else (
            self.alpha * flow_pcu_per_hour + (1 - self.alpha) * known)

    def change(self, lane: LaneKey, seconds_of_day: float, horizon_s: float) -> float | None:
        """Ratio of the profile's flow ``horizon_s`` ahead to its flow now; None where the
        profile does not know both slots (or the current one is empty)."""
        slots = self.flows.get(lane, {})
        now = slots.get(self.slot(seconds_of_day))
        ahead = slots.get(self.slot(seconds_of_day + horizon_s))
        if now is None or ahead is None or now <= 0:
            return None
        return ahead / now


@dataclass
class DemandForecast:
    """Holt's linear exponential smoothing of each lane's flow (PCU/h), optionally shaped by a
    :class:`TimeOfDayProfile` learnt on earlier days.

    ``update`` takes the newest flows with the simulated or wall-clock time (seconds) of the
    end of the window they were measured over; the trend is per second, so updates need not be
    evenly spaced.
    """

    alpha: float = 0.4
    beta: float = 0.2
    profile: TimeOfDayProfile | None = None
    max_change_per_step: float = 2.0
    """No forecast more than this many times (or less than 1/this) the smoothed level: a
    trend from a few noisy windows must not run away."""
    _lanes: dict[LaneKey, _Holt] = field(default_factory=dict)

    def update(self, flows: Mapping[LaneKey, float], at_s: float) -> None:
        for lane, flow in flows.items():
            self.update_lane(lane, flow, at_s)

    def update_lane(self, lane: LaneKey, flow_pcu_per_hour: float, at_s: float,
                    seconds_of_day: float | None = None) -> None:
        """Take one lane's flow measured over a window ending at ``at_s`` (any clock in
        seconds; ``seconds_of_day``, local time, for the profile); a window no newer than the
        last one taken changes nothing."""
        state = self._lanes.get(lane)
        if (self.profile is not None and seconds_of_day is not None
                and (state is None or at_s > state.at_s)):
            self.profile.update(lane, seconds_of_day, flow_pcu_per_hour)
        if state is None:
            self._lanes[lane] = _Holt(flow_pcu_per_hour, 0.0, at_s)
            return
        elapsed = at_s - state.at_s
        if elapsed <= 0:
            return
        predicted = state.level + state.trend_per_s * elapsed
        level = self.alpha * flow_pcu_per_hour + (1 - self.alpha) * predicted
        trend = (self.beta * (level - state.level) / elapsed
                 + (1 - self.beta) * state.trend_per_s)
        self._lanes[lane] = _Holt(level, trend, at_s)

    def observe(self, demand: LaneDemand, timezone: str) -> None:
        """Take every lane's newest flow from ``demand``, timed by its window's end."""
        for lane, flow in demand.flows().items():
            self.update_lane(lane, flow.flow_pcu_per_hour, flow.window_end.timestamp(),
                             seconds_of_day(flow.window_end, timezone))

    def level(self, lane: LaneKey) -> float:
        return self._lanes[lane].level

    def forecast(self, horizon_s: float, *, seconds_of_day: float | None = None
                 ) -> dict[LaneKey, float]:
        """Each lane's flow ``horizon_s`` after its last update (PCU/h, never negative)."""
        out: dict[LaneKey, float] = {}
        for lane, state in self._lanes.items():
            trended = state.level + state.trend_per_s * horizon_s
            if self.profile is not None and seconds_of_day is not None:
                ratio = self.profile.change(lane, seconds_of_day, horizon_s)
                if ratio is not None:
                    # The profile's shape and the day's own trend, weighted equally.
                    trended = 0.5 * trended + 0.5 * state.level * ratio
            low = state.level / self.max_change_per_step
            high = state.level * self.max_change_per_step
            out[lane] = max(min(max(trended, low), high), 0.0)
        return out


def seconds_of_day(moment: datetime, timezone: str) -> float:
    """Seconds since local midnight in ``timezone``."""
    local = moment.astimezone(ZoneInfo(timezone))
    return local.hour * 3600 + local.minute * 60 + local.second + local.microsecond / 1e6


def forecast_horizon_s(since_window_end_s: float, cycle_s: float,
                       window_s: float = 300.0) -> float:
    """How far ahead a cycle's plan looks: a window's flow describes the middle of the window,
    and the plan serves the cycle about to start, so from the window's middle to the middle
    of that cycle.

    >>> forecast_horizon_s(30.0, 90.0)
    225.0
    """
    return since_window_end_s + window_s / 2 + cycle_s / 2


def longest_greens_s(intersection: Intersection, plan: Plan,
                     headroom: float = DEFAULT_HEADROOM) -> dict[str, float]:
    """Each phase's longest green this cycle: ``headroom`` × its green in ``plan``, never
    below its minimum (pedestrians included) nor above its maximum."""
    return {p.id: min(max(plan.greens_s[p.id] * headroom, minimum_green_s(p)), p.max_green_s)
            for p in intersection.phases}


def adaptive_recommendation(
    site_id: str,
    intersection: Intersection,
    demand: LaneDemand,
    forecast: DemandForecast,
    *,
    running: Plan,
    now: datetime,
    timezone: str,
    newest_window_end: datetime,
    window_s: float,
    max_age_s: float,
    headroom: float = DEFAULT_HEADROOM,
    queue_factors: Mapping[LaneKey, float] | None = None,
) -> TimingRecommendation:
    """The adaptive mode's plan for the cycle starting at ``now``:
    :func:`~simpang.recommend.recommend` on the flows forecast to that cycle (see
    :func:`forecast_horizon_s`; the same guardrails, safety check and fallbacks as plan mode,
    without the per-step stability limit: greens move cycle by cycle anyway). Its inputs add
    the forecast, the measured flows and each phase's longest green."""
    horizon_s = forecast_horizon_s((now - newest_window_end).total_seconds(), running.cycle_s,
                                   window_s)
    flows = forecast.forecast(horizon_s, seconds_of_day=seconds_of_day(now, timezone))
    raised = {lane: factor for lane, factor in (queue_factors or {}).items()
              if factor > 1.0 and lane in flows}
    for lane, factor in raised.items():
        flows[lane] *= factor
    made = recommend(site_id, intersection, demand.with_flows(flows), running=running, now=now,
                     max_age_s=max_age_s, stability=False, mode="adaptive")
    plan = Plan(cycle_s=made.cycle_s, greens_s=made.greens_s, offset_s=made.offset_s)
    made.inputs["forecast_horizon_s"] = round(horizon_s, 1)
    made.inputs["measured_lane_flows_pcu_per_hour"] = {
        f"{a}/{lane}": round(v.flow_pcu_per_hour, 1)
        for (a, lane), v in sorted(demand.flows().items())}
    made.inputs["longest_greens_s"] = {
        p: round(g, 1) for p, g in longest_greens_s(intersection, plan, headroom).items()}
    if raised:
        made.inputs["queue_factors"] = {f"{a}/{lane}": round(f, 2)
                                        for (a, lane), f in sorted(raised.items())}
        made.reasons.append(
            "lanes whose greens ended with a queue still standing carry more demand than their"
            " counts show: " + ", ".join(f"{a}/{lane} × {f:.2f}"
                                          for (a, lane), f in sorted(raised.items())))
    made.reasons.append(
        f"flows forecast {horizon_s:.0f} s ahead (Holt's level and trend"
        f"{' and the time-of-day profile' if forecast.profile is not None else ''}); each green"
        f" ends by gap out or queue, at most {headroom:g} × its share of this plan")
    return made


@dataclass
class ResidualQueues:
    """Per phase, how far its measured demand falls short: a green that ends with vehicles
    still standing in its queue zones served less than its demand (its counts are capped by
    the green it had). Each such green raises the phase's factor by ``step``; each green that
    clears its queue lowers it by the same step, never below 1 nor above ``most``."""

    step: float = 0.1
    most: float = 2.0
    factors: dict[str, float] = field(default_factory=dict)

    def green_ended(self, phase_id: str, queue_left_veh: int) -> None:
        factor = self.factors.get(phase_id, 1.0)
        factor = factor + self.step if queue_left_veh > 0 else factor - self.step
        self.factors[phase_id] = min(max(factor, 1.0), self.most)

    def lane_factors(self, lanes_by_phase: Mapping[str, Sequence[LaneKey]]
                     ) -> dict[LaneKey, float]:
        out: dict[LaneKey, float] = {}
        for phase_id, lanes in lanes_by_phase.items():
            for lane in lanes:
                out[lane] = max(out.get(lane, 1.0), self.factors.get(phase_id, 1.0))
        return out


@dataclass(frozen=True)
class PhaseTraffic:
    """What the detectors see now for one phase's lanes."""

    phase_id: str
    queue_veh: int
    """Stopped vehicles in the camera queue zones of the phase's lanes."""
    approaching_veh: int
    """Moving vehicles in those zones."""
    gap_s: float
    """Seconds since a moving vehicle was last over any of the phase's loops (inf: no loop).
    A vehicle standing on a loop is no traffic flowing: a green whose loops only see
    standing vehicles (its exit is blocked) gaps out."""

    @property
    def waiting(self) -> bool:
        return self.queue_veh > 0 or self.approaching_veh > 0


@dataclass(frozen=True)
class GreenDecision:
    action: Literal["hold", "end"]
    next_phase: str | None
    reason: str


def decide_green(
    sequence: Sequence[str],
    green: str,
    spent_s: float,
    traffic: Mapping[str, PhaseTraffic],
    *,
    initial_green_s: float,
    longest_green_s: float,
    max_gap_s: float = 3.0,
    may_skip: bool = False,
    planned_green_s: float | None = None,
) -> GreenDecision:
    """Hold the running green one more second, or end it and name the phase that follows.

    The phase that follows is the next in ``sequence``; with ``may_skip`` (the running
    phase's yellow and all-red suit every phase after it) phases nobody waits for are passed
    over. ``initial_green_s`` is the minimum green, or longer where the queue standing over
    the loops needs longer to start moving past them.

    >>> t = {"a": PhaseTraffic("a", 0, 0, 9.0), "b": PhaseTraffic("b", 4, 1, 0.5)}
    >>> d = decide_green(["a", "b"], "a", 12.0, t, initial_green_s=8, longest_green_s=40)
    >>> d.action, d.next_phase
    ('end', 'b')
    >>> d.reason.split("; ")[1]
    '4 queued, 1 arriving for b'
    >>> decide_green(["a", "b"], "a", 5.0, t, initial_green_s=8, longest_green_s=40).reason
    'initial green 8 s'
    """
    own = traffic[green]
    if spent_s < initial_green_s:
        return GreenDecision("hold", None, f"initial green {initial_green_s:g} s")
    waiting = [p for p in sequence if p != green and traffic[p].waiting]
    if not waiting:
        return GreenDecision("hold", None, "no vehicle waiting for any other phase")
    position = sequence.index(green)
    following = sequence[(position + 1) % len(sequence)]
    if may_skip:
        later = [sequence[(position + k) % len(sequence)] for k in range(1, len(sequence))]
        following = next(p for p in later if p in waiting)
    others = traffic[following]
    demand = (f"{others.queue_veh} queued, {others.approaching_veh} arriving for {following}")
    if spent_s >= longest_green_s:
        return GreenDecision(
            "end", following,
            f"longest green of this cycle's plan reached ({longest_green_s:g} s); {demand}")
    if own.gap_s > max_gap_s and own.queue_veh == 0:
        return GreenDecision(
            "end", following, f"gap out: {own.gap_s:.1f} s since a moving vehicle on {green} "
            f"(max gap {max_gap_s:g} s), no queue left; {demand}")
    if own.gap_s > max_gap_s and others.queue_veh > own.queue_veh + own.approaching_veh:
        return GreenDecision(
            "end", following, f"{green} is not moving ({own.queue_veh} stand, "
            f"{own.gap_s:.1f} s since a moving vehicle) and more wait for {following}; {demand}")
    if (planned_green_s is not None and spent_s >= planned_green_s
            and others.queue_veh > own.queue_veh + own.approaching_veh):
        return GreenDecision(
            "end", following, f"pressure: past its planned {planned_green_s:g} s, "
            f"{own.queue_veh + own.approaching_veh} left on {green}; {demand}")
    return GreenDecision("hold", None, f"vehicles still arriving on {green} "
                         f"(gap {own.gap_s:.1f} s ≤ {max_gap_s:g} s)")
