"""Counting tracked vehicles across lines, with hysteresis, and turning movements.

A track's side of a line is read from where its box meets the road (the bottom centre). A
side counts only once the point is ``margin_px`` or more away from the line (taken as reaching
past its ends, so a vehicle drifting over from the next lane as it crosses still has a known
side); a crossing counts only once the track has stayed on the new side ``frames_beyond``
frames in a row, and only on the line whose extent holds the point then: a vehicle crossing
lane lines drawn end to end counts once, on the lane it is in. So a box jittering on the
line, or a track that touches the line and turns back, never counts, and one track counts at
most once per line and direction (a box whose bottom is hidden for a while by a nearer vehicle
can seem to go back over the line and forth again). A line may count one direction only
(``directions``), as a line across a one-way lane should: movement the other way over it is
then never a count.

Direction: ``in`` is a crossing from the line's left to its right as seen on the image looking
from ``start`` to ``end``, as the site file defines it (with the image's y axis pointing down,
the left is where the cross product (end − start) × (point − start) is negative). The
simulator's ground truth agrees (tests/test_counting_on_simulation.py).

Turning movements: a track that crosses one line and later another yields a movement
``(from_line, to_line)`` (the unit of intersection turning-movement counts).

>>> import numpy as np
>>> from detectors.tracker import Tracks
>>> counter = LineCounter([Line("stop", (0.0, 100.0), (200.0, 100.0))])
>>> events = []
>>> for y in [80, 90, 99, 101, 99, 102, 110, 120, 130, 140]:  # jitter on the line
...     events += counter.update(Tracks(np.array([[40, y - 30, 60, y]], np.float32),
...                              np.array([0.9], np.float32), np.array([1]), np.array([7]))
...                              ).crossings
>>> [(e.line_id, e.track_id, e.direction) for e in events]
[('stop', 7, 'in')]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from detectors.detections import DETECTED_CLASSES
from detectors.tracker import Tracks
from simpang.vehicles import VehicleClass

Direction = Literal["in", "out"]


@dataclass(frozen=True)
class Line:
    id: str
    start: tuple[float, float]
    end: tuple[float, float]
    directions: Literal["in", "out", "both"] = "both"


@dataclass(frozen=True)
class CountEvent:
    line_id: str
    track_id: int
    vehicle_class: VehicleClass
    direction: Direction
    frame: int


@dataclass(frozen=True)
class MovementEvent:
    from_line: str
    to_line: str
    track_id: int
    vehicle_class: VehicleClass
    frame: int


@dataclass(frozen=True)
class FrameCounts:
    """What one frame completed: line crossings, and turning movements."""

    crossings: list[CountEvent]
    movements: list[MovementEvent]


@dataclass
class CounterSettings:
    margin_px: float = 2.0
    frames_beyond: int = 3
    # A track must first be seen this far from a line, as a share of its box height, before
    # its side of the line is known: a vehicle standing on the line whose track is lost and
    # found again must not count again as the new track's box wobbles over the line.
    arm_height_share: float = 0.2
    # How far past its ends a line still counts, as a share of its length.
    extent_slack: float = 0.0
    # Frames a track may go unseen before its state is forgotten.
    forget_after_frames: int = 150


@dataclass
class _TrackState:
    sides: NDArray[np.int8]
    pending: NDArray[np.int8]
    pending_frames: NDArray[np.int64]
    last_frame: int
    last_line: str | None = None
    counted: set[tuple[int, int]] = field(default_factory=set)


@dataclass
class LineCounter:
    lines: Sequence[Line]
    settings: CounterSettings = field(default_factory=CounterSettings)

    def __post_init__(self) -> None:
        self.frame = 0
        self._start = np.array([line.start for line in self.lines], np.float64).reshape(-1, 2)
        self._vector = np.array([line.end for line in self.lines],
                                np.float64).reshape(-1, 2) - self._start
        self._length = np.linalg.norm(self._vector, axis=1)
        self._states: dict[int, _TrackState] = {}

    def measure(self, points: NDArray[np.floating]
                ) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
        """For points [N, 2]: the signed distance to each line taken as reaching past its ends
        (negative left of it as seen on the image, positive right), and whether the point lies
        between the line's ends (with ``extent_slack``) → two [N, lines] arrays."""
        offset = points[:, None, :] - self._start[None]
        cross = self._vector[None, :, 0] * offset[..., 1] - self._vector[None, :, 1] * offset[
            ..., 0]
        along = np.einsum("nlk,lk->nl", offset, self._vector) / self._length[None] ** 2
        slack = self.settings.extent_slack
        return cross / self._length[None], np.asarray((along >= -slack) & (along <= 1 + slack))

    @staticmethod
    def sides(distance: NDArray[np.float64], margin_px: NDArray[np.floating] | float
              ) -> NDArray[np.int8]:
        """−1 / +1 for the side of each line, 0 closer than ``margin_px`` (per point or one
        for all)."""
        far_enough = np.abs(distance) >= np.reshape(margin_px, (-1, 1))
        return np.where(far_enough, np.sign(distance), 0).astype(np.int8)

    def update(self, tracks: Tracks) -> FrameCounts:
        """Count this frame's tracks: the crossings and movements completed in it."""
        self.frame += 1
        counts = FrameCounts([], [])
        if len(tracks):
            points = tracks.bottom_centre.astype(np.float64)
            distance, within = self.measure(points)
            sides = self.sides(distance, self.settings.margin_px)
            height = (tracks.xyxy[:, 3] - tracks.xyxy[:, 1]).astype(np.float64)
            armed_sides = self.sides(distance, np.maximum(
                self.settings.margin_px, self.settings.arm_height_share * height))
            for row, track_id in enumerate(tracks.track_id.tolist()):
                vehicle_class = DETECTED_CLASSES[int(tracks.class_id[row])]
                self._update_track(int(track_id), sides[row], armed_sides[row], within[row],
                                   vehicle_class, counts)
        self._forget()
        return counts

    def _update_track(self, track_id: int, sides: NDArray[np.int8],
                      armed_sides: NDArray[np.int8], within: NDArray[np.bool_],
                      vehicle_class: VehicleClass, counts: FrameCounts) -> None:
        state = self._states.get(track_id)
        if state is None:
            state = self._states[track_id] = _TrackState(
                armed_sides.copy(), np.zeros_like(sides), np.zeros(len(sides), np.int64),
                self.frame)
        state.last_frame = self.frame
        for index in np.flatnonzero(sides).tolist():
            side = sides[index]
            if state.sides[index] == 0:
                state.sides[index] = armed_sides[index]
            elif side == state.sides[index]:
                state.pending_frames[index] = 0
            else:
                if state.pending[index] != side:
                    state.pending[index], state.pending_frames[index] = side, 0
                state.pending_frames[index] += 1
                if state.pending_frames[index] >= self.settings.frames_beyond:
                    direction: Direction = "in" if side > 0 else "out"
                    line = self.lines[index]
                    state.sides[index] = side
                    state.pending_frames[index] = 0
                    if (not within[index] or line.directions not in ("both", direction)
                            or (index, int(side)) in state.counted):
                        continue
                    state.counted.add((index, int(side)))
                    counts.crossings.append(CountEvent(line.id, track_id, vehicle_class,
                                                       direction, self.frame))
                    if state.last_line is not None and state.last_line != line.id:
                        counts.movements.append(MovementEvent(
                            state.last_line, line.id, track_id, vehicle_class, self.frame))
                    state.last_line = line.id

    def _forget(self) -> None:
        horizon = self.frame - self.settings.forget_after_frames
        for track_id in [t for t, s in self._states.items() if s.last_frame < horizon]:
            del self._states[track_id]
