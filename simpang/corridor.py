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
from collections.abc import Sequence
from dataclasses import dataclass

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
