"""Camera counting for the stream: JPEG frames from ``camera-frames`` → detections (batched
across frames and cameras) → per-camera tracking and line counting → vehicle crossings, and
per-line counts every ``interval_s`` of frame time as normalised readings, so the metrics agent
windows camera counts beside loop data into ApproachMetrics.

Frames are Kafka messages keyed by camera id (one partition sees a camera's frames in order)
with headers ``v`` (1), ``camera_id``, ``ts`` (capture time, ISO 8601 with offset) and ``seq``.
A frame that cannot be used becomes a dead letter with its reason: unknown camera, missing or
bad header, too large, not a decodable image, or older than the camera's previous frame.

No Faust here: :class:`CameraCounting` is driven by the counting agent in :mod:`streams.app`
and directly by tests.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import cv2
import numpy as np
from numpy.typing import NDArray

from detectors.camera_input import FrozenWatch
from detectors.detections import Detections
from detectors.pipeline import CameraCounter
from simpang.records import (
    CameraHealth,
    DeadLetter,
    NormalisedReading,
    ReadingsBatch,
    RejectReason,
    VehicleCrossing,
)
from simpang.site import Camera, Site
from simpang.vehicles import VehicleClass

MAX_FRAME_BYTES = 900 * 1024
"""Below Kafka's default 1 MiB message limit, with room for headers."""


class Detector(Protocol):
    def detect(self, frames: Sequence[NDArray[np.uint8]]) -> list[Detections]: ...


@dataclass(frozen=True)
class RawFrame:
    """One ``camera-frames`` message as it came off the topic."""

    value: bytes
    headers: Mapping[str, bytes]
    key: bytes | None
    topic: str
    partition: int
    offset: int

    @property
    def message_id(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"

JPEG_START = b"\xff\xd8"
JPEG_END = b"\xff\xd9"


@dataclass
class CountingOutput:
    crossings: list[VehicleCrossing] = field(default_factory=list)
    batches: dict[str, ReadingsBatch] = field(default_factory=dict)
    dead_letters: list[DeadLetter] = field(default_factory=list)


@dataclass(frozen=True)
class CameraTotals:
    """One camera's totals since the worker started (never reset, unlike its health)."""

    camera_id: str
    intersection: str
    frames: int
    inference_s: float


@dataclass
class _CameraState:
    camera: Camera
    intersection: str
    counter: CameraCounter | None = None
    last_ts: datetime | None = None
    interval_end_s: float | None = None
    counts: dict[str, dict[VehicleClass, int]] = field(default_factory=dict)
    speeds: dict[str, list[float]] = field(default_factory=dict)
    watch: FrozenWatch | None = None
    is_frozen: bool = False
    frames: int = 0
    rejected: int = 0
    inference_s: float = 0.0
    frames_total: int = 0
    inference_s_total: float = 0.0
    queue: tuple[int, float] | None = None
    since: float = field(default_factory=time.monotonic)


class CameraCounting:
    """Counting state of every camera of a site on this worker."""

    def __init__(self, site: Site, detector: Detector, *, interval_s: float = 10.0,
                 frozen_after_s: float = 10.0, max_frame_bytes: int = MAX_FRAME_BYTES,
                 max_future_skew_s: float = 120.0) -> None:
        self.site = site
        self.detector = detector
        self.interval_s = interval_s
        self.frozen_after_s = frozen_after_s
        self.max_frame_bytes = max_frame_bytes
        self.max_future_skew_s = max_future_skew_s
        self.cameras = {c.id: _CameraState(c, i.id) for i in site.intersections
                        for c in i.cameras}

    def _reject(self, out: CountingOutput, raw: RawFrame, code: RejectReason, reason: str,
                camera_id: str | None) -> None:
        if camera_id in self.cameras:
            self.cameras[camera_id].rejected += 1
        out.dead_letters.append(DeadLetter.of(
            id=raw.message_id, source=f"kafka:{raw.topic}", reason_code=code, reason=reason,
            raw=raw.value, device_id=camera_id))

    def _accept(self, raw: RawFrame, out: CountingOutput
                ) -> tuple[_CameraState, datetime, NDArray[np.uint8]] | None:
        header = raw.headers.get("camera_id") or raw.key
        camera_id = header.decode(errors="replace") if header else None
        version = raw.headers.get("v", b"1")
        if version != b"1":
            self._reject(out, raw, RejectReason.UNSUPPORTED_VERSION,
                         f"frame version {version!r}; this worker reads version 1", camera_id)
            return None
        if camera_id not in self.cameras:
            self._reject(out, raw, RejectReason.UNKNOWN_DEVICE,
                         f"camera {camera_id!r} is not in site {self.site.id!r}", camera_id)
            return None
        state = self.cameras[camera_id]
        try:
            ts = datetime.fromisoformat(raw.headers["ts"].decode())
        except (KeyError, UnicodeDecodeError, ValueError):
            self._reject(out, raw, RejectReason.INVALID,
                         "header ts: an ISO 8601 capture time with offset is required",
                         camera_id)
            return None
        if ts.tzinfo is None:
            self._reject(out, raw, RejectReason.INVALID,
                         f"header ts {ts.isoformat()}: no UTC offset", camera_id)
            return None
        skew_s = (ts - datetime.now(UTC)).total_seconds()
        if skew_s > self.max_future_skew_s:
            # Accepted, it would make every honest frame after it look out of order.
            self._reject(out, raw, RejectReason.FUTURE_TIMESTAMP,
                         f"header ts {ts.isoformat()} is {skew_s:.0f} s ahead of this "
                         f"worker's clock (at most {self.max_future_skew_s:g} s)", camera_id)
            return None
        if len(raw.value) > self.max_frame_bytes:
            self._reject(out, raw, RejectReason.TOO_LARGE,
                         f"frame of {len(raw.value)} bytes; at most {self.max_frame_bytes}",
                         camera_id)
            return None
        if raw.value[:2] == JPEG_START and raw.value.rstrip(b"\x00")[-2:] != JPEG_END:
            # OpenCV 4 decodes a cut-off JPEG into a picture whose lower part is grey (an
            # empty road to the detector); OpenCV 5 refuses it. Say which it is either way.
            self._reject(out, raw, RejectReason.MALFORMED,
                         "truncated JPEG: no end-of-image marker", camera_id)
            return None
        image = cv2.imdecode(np.frombuffer(raw.value, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            self._reject(out, raw, RejectReason.MALFORMED,
                         "frame is not a decodable image (JPEG expected)", camera_id)
            return None
        if state.last_ts is not None and ts <= state.last_ts:
            self._reject(out, raw, RejectReason.LATE,
                         f"frame at {ts.isoformat()} is not after the camera's previous "
                         f"frame at {state.last_ts.isoformat()}", camera_id)
            return None
        return state, ts, np.asarray(image, np.uint8)

    def process(self, frames: Sequence[RawFrame]) -> CountingOutput:
        """Validate, detect in one batch, then count each frame in arrival order."""
        out = CountingOutput()
        accepted = []
        for raw in frames:
            checked = self._accept(raw, out)
            if checked is not None:
                state, ts, image = checked
                state.last_ts = ts  # later frames in this batch are checked against it
                accepted.append((raw, state, ts, image))
        if not accepted:
            return out
        started = time.perf_counter()
        detections = self.detector.detect([image for _, _, _, image in accepted])
        per_frame_s = (time.perf_counter() - started) / len(accepted)
        for (raw, state, ts, image), found in zip(accepted, detections, strict=True):
            state.inference_s += per_frame_s
            state.inference_s_total += per_frame_s
            self._count(raw, state, ts, image, found, out)
        return out

    def _count(self, raw: RawFrame, state: _CameraState, ts: datetime,
               image: NDArray[np.uint8], found: Detections, out: CountingOutput) -> None:
        camera = state.camera
        if state.counter is None:
            height, width = image.shape[:2]
            state.counter = CameraCounter.for_camera(camera, (width, height))
        t_s = ts.timestamp()
        if state.watch is None:
            state.watch = FrozenWatch(self.frozen_after_s)
        state.is_frozen = state.watch.update(image, t_s)
        if state.interval_end_s is None:
            state.interval_end_s = (t_s // self.interval_s + 1) * self.interval_s
        while t_s >= state.interval_end_s:
            self._close_interval(raw, state, out)
        result = state.counter.update(found, t_s)
        state.frames += 1
        state.frames_total += 1
        if result.queue is not None:
            state.queue = (result.queue.vehicles, result.queue.length_m)
        lines = {line.id: line for line in camera.counting_lines}
        for event in result.crossings:
            line = lines[event.line_id]
            speed = result.speeds_kmh.get(event.track_id)
            out.crossings.append(VehicleCrossing(
                camera_id=camera.id, intersection=state.intersection, approach=line.approach,
                lane=line.lane, line_id=line.id, track_id=event.track_id,
                vehicle_class=event.vehicle_class, direction=event.direction, ts=ts,
                speed_kmh=None if speed is None else round(speed, 1)))
            if event.direction == "in":
                by_class = state.counts.setdefault(line.id, {})
                by_class[event.vehicle_class] = by_class.get(event.vehicle_class, 0) + 1
                if speed is not None:
                    state.speeds.setdefault(line.id, []).append(speed)

    def _close_interval(self, raw: RawFrame, state: _CameraState, out: CountingOutput) -> None:
        assert state.interval_end_s is not None
        readings = []
        for line in state.camera.counting_lines:
            speeds = state.speeds.get(line.id, [])
            readings.append(NormalisedReading(
                intersection=state.intersection, approach=line.approach,
                lane=line.lane or line.id, device_id=f"{state.camera.id}:{line.id}",
                ts_ms=round(state.interval_end_s * 1000), interval_s=self.interval_s,
                counts=dict(state.counts.get(line.id, {})),
                speed_kmh=round(float(np.mean(speeds)), 1) if speeds else None,
                source="camera"))
        state.counts.clear()
        state.speeds.clear()
        state.interval_end_s += self.interval_s
        if not readings:
            return
        batch = out.batches.get(state.intersection)
        if batch is None:
            out.batches[state.intersection] = ReadingsBatch(
                source_topic=raw.topic, source_partition=raw.partition,
                source_offset=raw.offset, readings=readings)
        else:
            batch.readings.extend(readings)

    def health(self, worker: str) -> list[CameraHealth]:
        """Each camera's health since the previous call (cameras with no frames yet too)."""
        now = time.monotonic()
        wall = datetime.now(UTC)
        samples = []
        for state in self.cameras.values():
            elapsed = max(now - state.since, 1e-6)
            samples.append(CameraHealth(
                camera_id=state.camera.id, intersection=state.intersection, worker=worker,
                ts=wall, frames=state.frames,
                fps=round(state.frames / elapsed, 2),
                inference_ms=round(state.inference_s / state.frames * 1000, 2)
                if state.frames else None,
                lag_s=round((wall - state.last_ts).total_seconds(), 3)
                if state.last_ts else None,
                frozen=state.is_frozen, rejected=state.rejected,
                queue_vehicles=state.queue[0] if state.queue else None,
                queue_length_m=state.queue[1] if state.queue else None))
            state.frames, state.rejected, state.inference_s, state.since = 0, 0, 0.0, now
        return samples

    def totals(self) -> list[CameraTotals]:
        """Each camera's frames and inference time since start, for counters that only grow.
        Read from the event loop while :meth:`process` may run in a thread: a value can be
        one frame behind another, never torn."""
        return [CameraTotals(state.camera.id, state.intersection, state.frames_total,
                             state.inference_s_total) for state in self.cameras.values()]
