"""Reading cameras with OpenCV: RTSP/HTTP streams, video files and local devices, with
reconnection and back-off, frame-rate control and frozen-picture detection.

A source is a URL (``rtsp://``, ``rtsps://``, ``http://``, ``https://``, ``rtmp://``), a device
index (``0``) or a file path. A stream or device that fails to open or stops delivering is
reopened after 0.5 s, 1 s, 2 s … up to ``reconnect_max_s``; a good frame resets the delay.
A file ends at its end; read in ``realtime`` it is paced at its own frame rate, like a camera.

A picture that has not changed for ``frozen_after_s`` (an encoder repeating its last frame:
sensor noise alone keeps a live picture changing) is *frozen*: frames say so, and a stream is
reopened, which is what usually clears it.

    reader = CameraReader("rtsp://10.0.0.7/stream1", ReaderSettings(max_fps=10))
    for frame in reader.frames():
        ...  # frame.image (BGR), frame.ts (capture time, UTC), frame.seq, frame.frozen
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

log = logging.getLogger("simpang.camera")

STREAM_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://", "rtmp://", "udp://")


@dataclass(frozen=True)
class ReaderSettings:
    max_fps: float | None = None
    realtime: bool = True
    reconnect_initial_s: float = 0.5
    reconnect_max_s: float = 30.0
    max_attempts: int | None = None
    frozen_after_s: float = 10.0


@dataclass(frozen=True)
class CapturedFrame:
    seq: int
    ts: datetime
    image: NDArray[np.uint8]
    frozen: bool


@dataclass
class ReaderStats:
    opens: int = 0
    failed_opens: int = 0
    frames_read: int = 0
    frames_dropped: int = 0
    frozen_episodes: int = 0
    backoffs_s: list[float] = field(default_factory=list)


def source_kind(source: str) -> str:
    """``stream``, ``device`` or ``file``.

    >>> source_kind("rtsp://cam/1"), source_kind("0"), source_kind("clip.mp4")
    ('stream', 'device', 'file')
    """
    if source.lower().startswith(STREAM_SCHEMES):
        return "stream"
    if source.isdigit():
        return "device"
    return "file"


class FrozenWatch:
    """Tells when a picture has stopped changing."""

    def __init__(self, frozen_after_s: float) -> None:
        self.frozen_after_s = frozen_after_s
        self._thumbnail: NDArray[np.float32] | None = None
        self._changed_at: float | None = None

    def update(self, image: NDArray[np.uint8], t_s: float) -> bool:
        small = cv2.resize(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), (64, 36),
                           interpolation=cv2.INTER_AREA).astype(np.float32)
        if self._thumbnail is None or float(np.abs(small - self._thumbnail).mean()) > 0.05:
            self._changed_at = t_s
        self._thumbnail = small
        return (self._changed_at is not None
                and t_s - self._changed_at >= self.frozen_after_s - 1e-9)

    def reset(self) -> None:
        self._thumbnail, self._changed_at = None, None


class CameraReader:
    """Frames of one source; ``opener``, ``clock``, ``sleep`` and ``now`` are replaceable."""

    def __init__(self, source: str, settings: ReaderSettings | None = None, *,
                 opener: Callable[[Any], Any] = cv2.VideoCapture,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.source = source
        self.kind = source_kind(source)
        self.settings = settings or ReaderSettings()
        self.stats = ReaderStats()
        self._opener, self._clock, self._sleep, self._now = opener, clock, sleep, now
        self._stopped = False

    def stop(self) -> None:
        self._stopped = True

    def _open(self) -> Any:
        target: Any = int(self.source) if self.kind == "device" else self.source
        capture = self._opener(target)
        if capture is not None and capture.isOpened():
            self.stats.opens += 1
            return capture
        if capture is not None:
            capture.release()
        self.stats.failed_opens += 1
        return None

    def _back_off(self, delay_s: float) -> float:
        self.stats.backoffs_s.append(delay_s)
        log.warning("camera %s unavailable; retrying in %.1f s", self.source, delay_s)
        self._sleep(delay_s)
        return min(delay_s * 2, self.settings.reconnect_max_s)

    def frames(self) -> Iterator[CapturedFrame]:
        settings = self.settings
        delay_s = settings.reconnect_initial_s
        attempts = 0
        seq = 0
        watch = FrozenWatch(settings.frozen_after_s)
        min_interval_s = 1.0 / settings.max_fps if settings.max_fps else 0.0
        while not self._stopped:
            capture = self._open()
            attempts += 1
            if capture is None:
                if settings.max_attempts is not None and attempts >= settings.max_attempts:
                    return
                delay_s = self._back_off(delay_s)
                continue
            file_fps = capture.get(cv2.CAP_PROP_FPS) if self.kind == "file" else 0.0
            started_clock, started_at = self._clock(), self._now()
            last_emitted: float | None = None
            watch.reset()
            reopen = False
            try:
                while not self._stopped:
                    ok, image = capture.read()
                    if not ok or image is None:
                        break
                    self.stats.frames_read += 1
                    attempts, delay_s = 0, settings.reconnect_initial_s
                    if self.kind == "file" and file_fps > 0:
                        video_t = (self.stats.frames_read - 1) / file_fps
                        if settings.realtime:
                            ahead = video_t - (self._clock() - started_clock)
                            if ahead > 0:
                                self._sleep(ahead)
                        t_s = video_t
                        ts = started_at + timedelta(seconds=video_t)
                    else:
                        t_s, ts = self._clock(), self._now()
                    if last_emitted is not None and t_s - last_emitted < min_interval_s - 1e-9:
                        self.stats.frames_dropped += 1
                        continue
                    last_emitted = t_s
                    frozen = watch.update(np.asarray(image, np.uint8), t_s)
                    yield CapturedFrame(seq, ts, np.asarray(image, np.uint8), frozen)
                    seq += 1
                    if frozen and self.kind != "file":
                        self.stats.frozen_episodes += 1
                        log.warning("camera %s picture frozen for %.0f s; reopening",
                                    self.source, settings.frozen_after_s)
                        reopen = True
                        break
            finally:
                capture.release()
            if self.kind == "file" and not reopen:
                return
            if settings.max_attempts is not None and attempts >= settings.max_attempts:
                return
            delay_s = self._back_off(delay_s)
