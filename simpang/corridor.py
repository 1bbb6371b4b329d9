"""Offsets for coordinated intersections along a corridor: the green band. Pure: no I/O.

Intersections on one arterial run a common cycle; each shows the arterial its green for
``green_s`` seconds starting ``green_start_s`` into its cycle (outbound and inbound may
differ). A vehicle leaving the first intersection at time ``t`` at the progression speed
reaches intersection ``i`` at ``t + x_i / v``; the outbound band is the longest stretch of
departure times whose vehicles meet green at every intersection, the inbound band the same in
the other direction. :func:`corridor_offsets` picks the offsets (whole seconds) that maximise
the sum of both bands (weighted by direction), the quantity MAXBAND maximises, by searching
every offset combination where that is cheap and by coordinate ascent from the one-way
progression otherwise.

>>> stops = [CorridorStop("J1", 0.0, 0.0, 49.0), CorridorStop("J2", 300.0, 0.0, 49.0),
...          CorridorStop("J3", 600.0, 0.0, 49.0)]
>>> band = corridor_offsets(stops, cycle_s=90.0, speed_mps=40 / 3.6, inbound_weight=0.0)
>>> band.offsets_s, band.outbound_s
({'J1': 0.0, 'J2': 27.0, 'J3': 54.0}, 49.0)
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from simpang.recommend import LaneDemand, recommend
from simpang.records import TimingRecommendation
from simpang.site import Corridor, Intersection, Plan, Site

EXHAUSTIVE_LIMIT = 200_000
"""Most offset combinations searched one by one; beyond, coordinate ascent."""


@dataclass(frozen=True)
class CorridorStop:
    """One coordinated intersection: its distance along the corridor from the first (metres)
    and when, within its cycle, its arterial green starts and how long it lasts."""

    intersection_id: str
    position_m: float
    green_start_s: float
    green_s: float
    inbound_green_start_s: float | None = None
    """Start of the inbound direction's green, where it differs (a lagging turn phase)."""
    inbound_green_s: float | None = None


@dataclass(frozen=True)
class GreenBand:
    offsets_s: dict[str, float]
    """Each intersection's cycle start, seconds after the first's."""
    outbound_s: float
    inbound_s: float
    cycle_s: float
    speed_mps: float

    @property
    def reasons(self) -> list[str]:
        return [f"green band at {self.speed_mps * 3.6:.0f} km/h: {self.outbound_s:g} s outbound, "
                f"{self.inbound_s:g} s inbound of a {self.cycle_s:g} s cycle; offsets "
                + ", ".join(f"{i} {o:g} s" for i, o in self.offsets_s.items())]


def _band(windows: Sequence[tuple[float, float]], cycle_s: float) -> float:
    """Length of the common part of green windows ``(start, length)`` on a circle of
    ``cycle_s``: the band through all of them. A widest band starts where one of the
    windows starts, so only those starts are tried."""
    best = 0.0
    for candidate, _ in windows:
        remaining = []
        for start, length in windows:
            into = (candidate - start) % cycle_s
            remaining.append(length - into if into < length else 0.0)
        best = max(best, min(remaining))
    return best


def bandwidths(stops: Sequence[CorridorStop], offsets_s: Sequence[float], cycle_s: float,
               speed_mps: float) -> tuple[float, float]:
    """(outbound, inbound) band in seconds for the given offsets, one per stop."""
    outbound = [(offset + stop.green_start_s - stop.position_m / speed_mps, stop.green_s)
                for stop, offset in zip(stops, offsets_s, strict=True)]
    inbound = [(offset + (stop.inbound_green_start_s if stop.inbound_green_start_s is not None
                          else stop.green_start_s) + stop.position_m / speed_mps,
                stop.inbound_green_s if stop.inbound_green_s is not None else stop.green_s)
               for stop, offset in zip(stops, offsets_s, strict=True)]
    return _band(outbound, cycle_s), _band(inbound, cycle_s)


def corridor_offsets(stops: Sequence[CorridorStop], *, cycle_s: float, speed_mps: float,
                     inbound_weight: float = 1.0) -> GreenBand:
    """The offsets (whole seconds, first intersection at 0) that maximise outbound band +
    ``inbound_weight`` × inbound band at ``speed_mps``."""
    if not stops:
        raise ValueError("a corridor needs at least one intersection")
    if speed_mps <= 0 or cycle_s <= 0:
        raise ValueError("progression speed and cycle must be positive")
    ordered = sorted(stops, key=lambda s: s.position_m)
    steps = [float(o) for o in range(int(cycle_s))]

    def score(offsets: Sequence[float]) -> float:
        out, back = bandwidths(ordered, offsets, cycle_s, speed_mps)
        return out + inbound_weight * back

    first = ordered[0]
    # One-way progression: each green starts when the first's band arrives.
    start = [0.0] + [
        float(round(first.green_start_s + s.position_m / speed_mps - s.green_start_s)
              % int(cycle_s))
        for s in ordered[1:]]
    best, best_score = start, score(start)
    if len(steps) ** (len(ordered) - 1) <= EXHAUSTIVE_LIMIT:
        for combo in itertools.product(steps, repeat=len(ordered) - 1):
            candidate = [0.0, *combo]
            value = score(candidate)
            if value > best_score + 1e-9:
                best, best_score = candidate, value
    else:
        improved = True
        while improved:
            improved = False
            for index in range(1, len(ordered)):
                for offset in steps:
                    candidate = list(best)
                    candidate[index] = offset
                    value = score(candidate)
                    if value > best_score + 1e-9:
                        best, best_score, improved = candidate, value, True
    outbound, inbound = bandwidths(ordered, best, cycle_s, speed_mps)
    return GreenBand({s.intersection_id: o for s, o in zip(ordered, best, strict=True)},
                     outbound, inbound, cycle_s, speed_mps)


def green_start_s(intersection: Intersection, plan: Plan, phase_id: str) -> float:
    """Seconds from the start of ``plan``'s cycle (its first phase's green) to the green of
    ``phase_id``."""
    elapsed = 0.0
    for phase in intersection.phases:
        if phase.id == phase_id:
            return elapsed
        elapsed += plan.greens_s[phase.id] + phase.yellow_s + phase.all_red_s
    raise KeyError(phase_id)


def recommend_corridor(
    site: Site,
    corridor: Corridor,
    demands: Mapping[str, LaneDemand],
    running: Mapping[str, Plan],
    *,
    now: datetime,
    max_age_s: float,
    stability: bool = True,
) -> list[TimingRecommendation]:
    """Plan mode for a corridor's intersections together: each member's own plan first, then
    every member at the longest cycle any of them needs (within each one's bounds), then the
    offsets of the widest green band, the first member keeping its running offset.

    Coordination needs every member: when one has no usable metrics or its plan fails the
    safety check, every member keeps its running plan and says why.
    """
    members = [site.intersection(m.intersection) for m in corridor.members]
    own = {x.id: recommend(site.id, x, demands[x.id], running=running[x.id], now=now,
                           max_age_s=max_age_s, stability=stability) for x in members}
    failed = [i for i, r in own.items() if r.status != "recommended"]
    if failed:
        why = (f"corridor {corridor.id}: {', '.join(failed)} cannot be planned now: every "
               "member keeps its running plan (coordination needs them all)")
        return [_keep_running(running[x.id], why, own[x.id]) for x in members]
    cycle = max(r.cycle_s for r in own.values())
    cycle = min(cycle, *(x.timing.max_cycle_s for x in members))
    made = {x.id: recommend(site.id, x, demands[x.id], running=running[x.id], now=now,
                            max_age_s=max_age_s, stability=stability, cycle_s=cycle)
            for x in members}
    failed = [i for i, r in made.items() if r.status != "recommended" or r.cycle_s != cycle]
    if failed:
        why = (f"corridor {corridor.id}: {', '.join(failed)} cannot run the common "
               f"{cycle:g} s cycle within its bounds: every member keeps its running plan")
        return [_keep_running(running[x.id], why, made[x.id]) for x in members]
    plans = {i: Plan(cycle_s=r.cycle_s, greens_s=r.greens_s, offset_s=0.0)
             for i, r in made.items()}
    stops = []
    for member, x in zip(corridor.members, members, strict=True):
        inbound = member.inbound_phase or member.outbound_phase
        stops.append(CorridorStop(
            x.id, member.position_m,
            green_start_s(x, plans[x.id], member.outbound_phase),
            plans[x.id].greens_s[member.outbound_phase],
            green_start_s(x, plans[x.id], inbound), plans[x.id].greens_s[inbound]))
    band = corridor_offsets(stops, cycle_s=cycle, speed_mps=corridor.speed_kmh / 3.6,
                            inbound_weight=corridor.inbound_weight)
    first = corridor.members[0].intersection
    base = running[first].offset_s
    out = []
    for x in members:
        recommendation = made[x.id]
        offset = (base + band.offsets_s[x.id]) % cycle
        out.append(recommendation.model_copy(update={
            "offset_s": offset,
            "reasons": [*recommendation.reasons,
                        f"corridor {corridor.id}: common cycle {cycle:g} s (the longest its "
                        f"members need), offset {offset:g} s", *band.reasons],
            "inputs": {**recommendation.inputs, "corridor": {
                "id": corridor.id, "cycle_s": cycle, "speed_kmh": corridor.speed_kmh,
                "outbound_band_s": band.outbound_s, "inbound_band_s": band.inbound_s,
                "own_cycles_s": {i: r.cycle_s for i, r in own.items()}}},
        }))
    return out


def _keep_running(running: Plan, why: str, made: TimingRecommendation
                  ) -> TimingRecommendation:
    if made.status == "fallback":
        return made.model_copy(update={"reasons": [*made.reasons, why]})
    # Its own plan was fine, but it cannot run alone: the running plan stays, assessed as
    # ``recommend`` assessed it.
    return made.model_copy(update={
        "status": "fallback", "cycle_s": running.cycle_s, "greens_s": dict(running.greens_s),
        "offset_s": running.offset_s, "expected_delay_s": made.running_delay_s,
        "approaches": made.running_approaches, "reasons": [why, *made.reasons]})
