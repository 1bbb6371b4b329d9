"""Offline counting of a video file (``simpang count``), and the annotated video.

Frames are read with OpenCV, detected in batches, tracked and counted with the camera's lines
from the site file; the annotated video shows each tracked box with its id, class and speed,
the counting lines with their running totals, and the queue zone. The result lists every
crossing and movement as an event (video time, line, class, direction, track, speed).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from detectors.detections import DETECTED_CLASSES
from detectors.onnx_detector import OnnxDetector
from detectors.pipeline import CameraCounter, FrameResult
from simpang.site import Camera

CLASS_COLOURS_BGR = {"motorcycle": (0, 200, 255), "car": (0, 255, 0), "bus": (255, 128, 0),
                     "truck": (255, 0, 255), "bicycle": (255, 255, 0)}


class VideoError(RuntimeError):
    """A video that cannot be opened or written."""


@dataclass(frozen=True)
class VideoCount:
    frames: int
    video_fps: float
    seconds: float
    counts: dict[str, Any]
    speed_kmh_mean: float | None
    queue_max: dict[str, float] | None
    events: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return {"frames": self.frames, "video_fps": round(self.video_fps, 3),
                "processing_fps": round(self.frames / self.seconds, 1) if self.seconds else None,
                **self.counts, "speed_kmh_mean": self.speed_kmh_mean,
                "queue_max": self.queue_max, "events": self.events}


def read_batches(capture: cv2.VideoCapture, batch_size: int, max_frames: int | None
                 ) -> Iterator[list[NDArray[np.uint8]]]:
    batch: list[NDArray[np.uint8]] = []
    read = 0
    while max_frames is None or read < max_frames:
        ok, frame = capture.read()
        if not ok:
            break
        batch.append(frame)
        read += 1
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def annotate(frame: NDArray[np.uint8], counter: CameraCounter, result: FrameResult
             ) -> NDArray[np.uint8]:
    out = frame.copy()
    if counter.queue is not None:
        zone = np.round(np.asarray(counter.queue.zone_xy)).astype(np.int32)
        cv2.polylines(out, [zone], True, (200, 200, 0), 1, cv2.LINE_AA)
    totals = counter.totals.crossings
    for line in counter.counter.lines:
        start = (round(line.start[0]), round(line.start[1]))
        end = (round(line.end[0]), round(line.end[1]))
        cv2.line(out, start, end, (0, 0, 255), 2, cv2.LINE_AA)
        count = sum(n for (line_id, _, _), n in totals.items() if line_id == line.id)
        cv2.putText(out, f"{line.id}: {count}", (start[0], start[1] - 6),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 255), 1, cv2.LINE_AA)
    tracks = result.tracks
    for row, track_id in enumerate(tracks.track_id.tolist()):
        x1, y1, x2, y2 = (round(float(v)) for v in tracks.xyxy[row])
        name = DETECTED_CLASSES[int(tracks.class_id[row])].value
        colour = CLASS_COLOURS_BGR[name]
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, 1)
        label = f"{track_id} {name}"
        speed = result.speeds_kmh.get(int(track_id))
        if speed is not None:
            label += f" {speed:.0f} km/h"
        cv2.putText(out, label, (x1, max(y1 - 3, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.35, colour,
                    1, cv2.LINE_AA)
    if result.queue is not None:
        cv2.putText(out, f"queue {result.queue.vehicles} veh, {result.queue.length_m:.0f} m",
                    (8, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (200, 200, 0), 1, cv2.LINE_AA)
    return out


def count_video(video: Path, camera: Camera, detector: OnnxDetector, *,
                annotated: Path | None = None, max_frames: int | None = None) -> VideoCount:
    """Count a whole video with ``camera``'s lines (scaled to the video's frame size)."""
    capture = cv2.VideoCapture(str(video))
    if not capture.isOpened():
        raise VideoError(f"cannot open video {video}")
    fps = capture.get(cv2.CAP_PROP_FPS) or camera.view.fps
    size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
            int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    counter = CameraCounter.for_camera(camera, size)
    writer = None
    if annotated is not None:
        writer = cv2.VideoWriter(str(annotated), cv2.VideoWriter.fourcc(*"mp4v"), fps, size)
        if not writer.isOpened():
            raise VideoError(f"cannot write video {annotated}")
    frames = 0
    speeds: list[float] = []
    events: list[dict[str, Any]] = []
    queue_max: dict[str, float] | None = (
        {"vehicles": 0, "length_m": 0.0} if counter.queue is not None else None)
    started = time.monotonic()
    try:
        for batch in read_batches(capture, detector.batch_size, max_frames):
            for frame, detections in zip(batch, detector.detect(batch), strict=True):
                result = counter.update(detections, frames / fps)
                frames += 1
                speeds.extend(result.speeds_kmh.values())
                for event in result.crossings:
                    speed = result.speeds_kmh.get(event.track_id)
                    events.append({"t_s": round(result.t_s, 2), "line": event.line_id,
                                   "class": event.vehicle_class.value,
                                   "direction": event.direction, "track_id": event.track_id,
                                   "speed_kmh": None if speed is None else round(speed, 1)})
                for name, movement in result.movements:
                    events.append({"t_s": round(result.t_s, 2), "movement": name,
                                   "class": movement.vehicle_class.value,
                                   "track_id": movement.track_id})
                if result.queue is not None and queue_max is not None:
                    queue_max["vehicles"] = max(queue_max["vehicles"], result.queue.vehicles)
                    queue_max["length_m"] = max(queue_max["length_m"], result.queue.length_m)
                if writer is not None:
                    writer.write(annotate(frame, counter, result))
    finally:
        capture.release()
        if writer is not None:
            writer.release()
    return VideoCount(frames, fps, time.monotonic() - started, counter.totals.as_dict(),
                      round(float(np.mean(speeds)), 1) if speeds else None, queue_max, events)
