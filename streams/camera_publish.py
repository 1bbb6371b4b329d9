"""``simpang camera publish``: a camera's frames as JPEG to ``camera-frames``.

Each frame is one message keyed by the camera id (so one worker sees a camera's frames in
order) with headers ``v`` = 1, ``camera_id``, ``ts`` (capture time, ISO 8601 UTC), ``seq`` and
``frozen`` (1 when the reader saw the picture stop changing). A frame over ``max_bytes`` is
re-encoded at lower quality, then at smaller sizes, until it fits: Kafka refuses messages over
its limit (1 MiB by default), and a dropped frame would be silent.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import cv2
import numpy as np
from aiokafka import AIOKafkaProducer
from numpy.typing import NDArray

from detectors.camera_input import CameraReader, CapturedFrame
from simpang.settings import Settings
from streams.counting import MAX_FRAME_BYTES
from streams.kafka import aiokafka_kwargs

log = logging.getLogger("simpang.camera")


class FrameTooLargeError(ValueError):
    """Even the smallest re-encoding does not fit."""


def encode_capped(image: NDArray[np.uint8], quality: int, max_bytes: int) -> bytes:
    """JPEG of ``image`` at most ``max_bytes`` long: lower quality first, then smaller.

    >>> import numpy as np
    >>> noisy = np.random.default_rng(0).integers(0, 255, (720, 1280, 3), dtype=np.uint8)
    >>> len(encode_capped(noisy, 90, 60_000)) <= 60_000
    True
    """
    current = image
    while True:
        for q in sorted({quality, 70, 50, 35}, reverse=True):
            if q > quality:
                continue
            ok, data = cv2.imencode(".jpg", current, [cv2.IMWRITE_JPEG_QUALITY, q])
            if ok and len(data) <= max_bytes:
                return bytes(data.tobytes())
        height, width = current.shape[:2]
        if width < 160:
            raise FrameTooLargeError(f"a frame does not fit in {max_bytes} bytes")
        current = np.asarray(cv2.resize(current, (width * 3 // 4, height * 3 // 4),
                                        interpolation=cv2.INTER_AREA), np.uint8)


def frame_headers(camera_id: str, frame: CapturedFrame) -> list[tuple[str, bytes]]:
    return [("v", b"1"), ("camera_id", camera_id.encode()),
            ("ts", frame.ts.isoformat().encode()), ("seq", str(frame.seq).encode()),
            ("frozen", b"1" if frame.frozen else b"0")]


@dataclass
class PublishSummary:
    frames: int = 0
    bytes: int = 0
    frozen: int = 0


async def publish_camera(settings: Settings, camera_id: str, reader: CameraReader, *,
                         quality: int = 80, max_bytes: int = MAX_FRAME_BYTES,
                         max_frames: int | None = None) -> PublishSummary:
    """Read ``reader`` (blocking, in a thread) and publish every frame it yields."""
    topic = settings.topics.name("camera_frames")
    producer = AIOKafkaProducer(**aiokafka_kwargs(settings.kafka),
                                max_request_size=max_bytes + 64 * 1024, linger_ms=5)
    await producer.start()
    summary = PublishSummary()
    frames = reader.frames()
    done = object()
    try:
        while max_frames is None or summary.frames < max_frames:
            frame = await asyncio.to_thread(next, frames, done)
            if frame is done:
                break
            assert isinstance(frame, CapturedFrame)
            payload = await asyncio.to_thread(encode_capped, frame.image, quality, max_bytes)
            await producer.send(topic, payload, key=camera_id.encode(),
                                headers=frame_headers(camera_id, frame))
            summary.frames += 1
            summary.bytes += len(payload)
            summary.frozen += int(frame.frozen)
        await producer.flush()
    finally:
        reader.stop()
        await producer.stop()
    return summary
