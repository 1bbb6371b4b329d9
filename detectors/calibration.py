"""Ground-plane calibration of a camera, and what it measures: speed in km/h and queue length
in metres.

A camera's calibration is four or more image points with their positions on the road in
metres (any planar frame: surveyed, from a map, or measured with a wheel). They give the
homography between image and road (direct linear transform, least squares when more than
four); a vehicle's ground point is the bottom centre of its box.

>>> import numpy as np
>>> plane = GroundPlane.from_points([(0, 0), (100, 0), (100, 100), (0, 100)],
...                                 [(0, 0), (10, 0), (10, 10), (0, 10)])
>>> plane.to_ground(np.array([[50.0, 50.0]])).round(3).tolist()
[[5.0, 5.0]]
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from detectors.detections import bottom_centres
from detectors.tracker import Tracks

Point = tuple[float, float]


class CalibrationError(ValueError):
    """Point pairs that cannot give a homography."""


def _normalising(points: NDArray[np.float64]) -> NDArray[np.float64]:
    """Hartley normalisation: centroid to the origin, mean distance √2."""
    centre = points.mean(axis=0)
    spread = np.sqrt(((points - centre) ** 2).sum(axis=1)).mean()
    scale = np.sqrt(2) / spread if spread > 0 else 1.0
    return np.array([[scale, 0, -scale * centre[0]], [0, scale, -scale * centre[1]],
                     [0, 0, 1]])


def fit_homography(source: NDArray[np.float64], target: NDArray[np.float64]
                   ) -> NDArray[np.float64]:
    """The 3×3 homography taking ``source`` (N, 2) to ``target`` (N, 2), N ≥ 4."""
    if len(source) != len(target) or len(source) < 4:
        raise CalibrationError(
            f"need at least 4 image/ground point pairs, got {len(source)} and {len(target)}")
    t_source, t_target = _normalising(source), _normalising(target)
    s = np.column_stack([source, np.ones(len(source))]) @ t_source.T
    d = np.column_stack([target, np.ones(len(target))]) @ t_target.T
    rows = []
    for (x, y, _), (u, v, _) in zip(s, d, strict=True):
        rows.append([-x, -y, -1, 0, 0, 0, u * x, u * y, u])
        rows.append([0, 0, 0, -x, -y, -1, v * x, v * y, v])
    _, singular, vt = np.linalg.svd(np.asarray(rows))
    if singular[-2] < 1e-9 * singular[0]:
        raise CalibrationError("calibration points are degenerate (three or more in a line?)")
    h = np.linalg.inv(t_target) @ vt[-1].reshape(3, 3) @ t_source
    return np.asarray(h / h[2, 2], np.float64)


@dataclass(frozen=True)
class GroundPlane:
    """Image pixels ↔ road metres."""

    image_to_ground: NDArray[np.float64]

    @classmethod
    def from_points(cls, image_xy: Sequence[Point], ground_xy_m: Sequence[Point]
                    ) -> GroundPlane:
        return cls(fit_homography(np.asarray(image_xy, np.float64),
                                  np.asarray(ground_xy_m, np.float64)))

    def to_ground(self, pixels: NDArray[np.floating]) -> NDArray[np.float64]:
        """(N, 2) pixels → (N, 2) metres."""
        points = np.column_stack([pixels, np.ones(len(pixels))]) @ self.image_to_ground.T
        return np.asarray(points[:, :2] / points[:, 2:3], np.float64)


@dataclass
class SpeedEstimator:
    """Each track's ground speed over the last ``window_s`` seconds of its positions.

    A speed is given only once a track has been followed for ``min_span_s`` (one or two
    frames of box jitter would otherwise read as tens of km/h).

    >>> import numpy as np
    >>> plane = GroundPlane.from_points([(0, 0), (100, 0), (100, 100), (0, 100)],
    ...                                 [(0, 0), (10, 0), (10, 10), (0, 10)])
    >>> speeds = SpeedEstimator(plane)
    >>> for frame in range(11):  # 1 px/frame at 10 frames/s = 1 m/s
    ...     y = float(frame)
    ...     found = speeds.update(Tracks(np.array([[0, y - 5, 10, y]], np.float32),
    ...                                  np.ones(1, np.float32), np.ones(1, np.int64),
    ...                                  np.array([4])), frame / 10)
    >>> round(found[4], 2)
    3.6
    """

    plane: GroundPlane
    window_s: float = 1.0
    min_span_s: float = 0.5
    _history: dict[int, deque[tuple[float, float, float]]] = field(default_factory=dict)

    def update(self, tracks: Tracks, t_s: float) -> dict[int, float]:
        """Speeds (km/h) of this frame's tracks that have one; forgets tracks not seen for
        ``window_s``."""
        ground = self.plane.to_ground(bottom_centres(tracks.xyxy))
        speeds: dict[int, float] = {}
        for track_id, (x_m, y_m) in zip(tracks.track_id.tolist(), ground, strict=True):
            history = self._history.setdefault(int(track_id), deque())
            history.append((t_s, float(x_m), float(y_m)))
            while history and history[0][0] < t_s - self.window_s:
                history.popleft()
            span = t_s - history[0][0]
            if span >= self.min_span_s:
                dx, dy = x_m - history[0][1], y_m - history[0][2]
                speeds[int(track_id)] = float(np.hypot(dx, dy) / span * 3.6)
        for track_id in [k for k, h in self._history.items() if h[-1][0] < t_s - self.window_s]:
            del self._history[track_id]
        return speeds


@dataclass(frozen=True)
class QueueReading:
    vehicles: int
    length_m: float


@dataclass(frozen=True)
class QueueMeter:
    """Vehicles standing in an approach's queue zone, and how far back from the stop line the
    last of them stands.

    ``zone_xy`` is the zone's polygon on the image; ``stop_line_xy`` the stop line's two ends
    on the image. A track is queued when its speed is below ``stopped_below_kmh``.
    """

    plane: GroundPlane
    zone_xy: tuple[Point, ...]
    stop_line_xy: tuple[Point, Point]
    stopped_below_kmh: float = 5.0

    def measure(self, tracks: Tracks, speeds_kmh: dict[int, float]) -> QueueReading:
        points = bottom_centres(tracks.xyxy)
        if len(points) == 0:
            return QueueReading(0, 0.0)
        inside = _inside_polygon(points, np.asarray(self.zone_xy, np.float64))
        stopped = np.array([speeds_kmh.get(int(t), np.inf) < self.stopped_below_kmh
                            for t in tracks.track_id.tolist()], bool)
        queued = inside & stopped
        if not queued.any():
            return QueueReading(0, 0.0)
        ground = self.plane.to_ground(points[queued])
        line = self.plane.to_ground(np.asarray(self.stop_line_xy, np.float64))
        return QueueReading(int(queued.sum()),
                            round(float(_distance_to_segment(ground, line).max()), 1))


def _inside_polygon(points: NDArray[np.floating], polygon: NDArray[np.float64]
                    ) -> NDArray[np.bool_]:
    """Even–odd rule, vectorised over points."""
    x, y = points[:, 0:1], points[:, 1:2]
    x0, y0 = polygon[:, 0], polygon[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    straddles = (y0 > y) != (y1 > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        crossing_x = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
    return np.asarray(((straddles & (x < crossing_x)).sum(axis=1) % 2) == 1)


def _distance_to_segment(points: NDArray[np.float64], segment: NDArray[np.float64]
                         ) -> NDArray[np.float64]:
    start, end = segment
    direction = end - start
    length2 = float(direction @ direction) or 1e-12
    t = np.clip((points - start) @ direction / length2, 0.0, 1.0)
    nearest = start + t[:, None] * direction
    return np.asarray(np.linalg.norm(points - nearest, axis=1), np.float64)
