"""One camera's counting, frame by frame: detections → tracks → line crossings, named turning
movements, speeds and the queue, configured from the camera's entry in the site file.

Used by ``simpang count`` (a video file), by the Faust counting agent (live frames) and by
``bench/detector.py``.

>>> import numpy as np
>>> from detectors.detections import Detections, deduplicate
>>> from simpang.site import Camera, CountingLine
>>> camera = Camera(id="cam", source_url="file.mp4", approach="north", counting_lines=[
...     CountingLine(id="l1", start_xy=(0, 100), end_xy=(200, 100), approach="north")])
>>> counter = CameraCounter.for_camera(camera)
>>> for frame in range(20):
...     y = 60.0 + 5 * frame
...     result = counter.update(Detections(np.array([[40, y - 30, 60, y]], np.float32),
...                                        np.array([0.9], np.float32), np.array([1])),
...                             frame / 10)
>>> counter.totals.as_dict()["lines"]
{'l1': {'car': {'in': 1, 'out': 0}}}
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from detectors.calibration import GroundPlane, QueueMeter, QueueReading, SpeedEstimator
from detectors.counting import CounterSettings, CountEvent, Line, LineCounter, MovementEvent
from detectors.detections import Detections, deduplicate
from detectors.tracker import ByteTracker, TrackerSettings, Tracks
from simpang.site import Camera


@dataclass(frozen=True)
class FrameResult:
    t_s: float
    tracks: Tracks
    crossings: list[CountEvent]
    movements: list[tuple[str, MovementEvent]]
    speeds_kmh: dict[int, float]
    queue: QueueReading | None


@dataclass
class CountTotals:
    """Running totals: crossings by (line, class, direction), movements by (name, class)."""

    crossings: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    movements: Counter[tuple[str, str]] = field(default_factory=Counter)

    def add(self, result: FrameResult) -> None:
        for event in result.crossings:
            self.crossings[(event.line_id, event.vehicle_class.value, event.direction)] += 1
        for name, movement in result.movements:
            self.movements[(name, movement.vehicle_class.value)] += 1

    def as_dict(self) -> dict[str, Any]:
        lines: dict[str, dict[str, dict[str, int]]] = {}
        for (line_id, vehicle_class, direction), count in sorted(self.crossings.items()):
            by_direction = lines.setdefault(line_id, {}).setdefault(
                vehicle_class, {"in": 0, "out": 0})
            by_direction[direction] += count
        movements: dict[str, dict[str, int]] = {}
        for (name, vehicle_class), count in sorted(self.movements.items()):
            movements.setdefault(name, {})[vehicle_class] = count
        return {"lines": lines, "movements": movements}


@dataclass
class CameraCounter:
    """Tracker, line counter and (when the camera is calibrated) speed and queue meters."""

    camera: Camera
    tracker: ByteTracker
    counter: LineCounter
    speeds: SpeedEstimator | None = None
    queue: QueueMeter | None = None
    totals: CountTotals = field(default_factory=CountTotals)

    @classmethod
    def for_camera(cls, camera: Camera, frame_size: tuple[int, int] | None = None,
                   tracker_settings: TrackerSettings | None = None,
                   counter_settings: CounterSettings | None = None) -> CameraCounter:
        """``frame_size`` (width, height): frames of another size than the camera's view
        (where its lines were drawn) get the lines, zone and calibration scaled to them."""
        sx, sy = 1.0, 1.0
        if frame_size is not None:
            sx = frame_size[0] / camera.view.width_px
            sy = frame_size[1] / camera.view.height_px

        def scaled(point: tuple[float, float]) -> tuple[float, float]:
            return point[0] * sx, point[1] * sy

        lines = [Line(line.id, scaled(line.start_xy), scaled(line.end_xy), line.directions)
                 for line in camera.counting_lines]
        speeds = queue = None
        if camera.calibration is not None:
            plane = GroundPlane.from_points([scaled(p) for p in camera.calibration.image_xy],
                                            camera.calibration.ground_xy_m)
            speeds = SpeedEstimator(plane)
            if camera.queue_zone is not None:
                zone = camera.queue_zone
                start, end = zone.stop_line_xy
                queue = QueueMeter(plane, tuple(scaled(p) for p in zone.polygon_xy),
                                   (scaled(start), scaled(end)))
        return cls(camera, ByteTracker(tracker_settings or TrackerSettings()),
                   LineCounter(lines, counter_settings or CounterSettings()), speeds, queue)

    def update(self, detections: Detections, t_s: float) -> FrameResult:
        tracks = self.tracker.update(deduplicate(detections))
        counts = self.counter.update(tracks)
        speeds = self.speeds.update(tracks, t_s) if self.speeds else {}
        queue = self.queue.measure(tracks, speeds) if self.queue else None
        named = {(m.from_line, m.to_line): m.id for m in self.camera.turning_movements}
        movements = [(named.get((m.from_line, m.to_line), f"{m.from_line}>{m.to_line}"), m)
                     for m in counts.movements]
        result = FrameResult(t_s, tracks, counts.crossings, movements, speeds, queue)
        self.totals.add(result)
        return result
