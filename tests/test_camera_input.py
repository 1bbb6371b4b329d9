"""Camera input with real OpenCV captures (files, a refused RTSP port) and ``simpang camera
publish`` to a real Tansu broker."""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from aiokafka import AIOKafkaConsumer

from detectors.camera_input import CameraReader, ReaderSettings
from simulator.bundled import build_scenario
from streams.embedded import TansuBroker

REPO = Path(__file__).resolve().parent.parent


def write_clip(path: Path, frames: int, fps: float = 10.0, *, still_from: int | None = None
               ) -> None:
    """A noisy picture with a moving block; from ``still_from`` on, one frame repeated."""
    # Motion JPEG: every frame coded alone, so a repeated frame decodes identically.
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (320, 180))
    rng = np.random.default_rng(0)
    last = None
    for index in range(frames):
        if still_from is not None and index >= still_from and last is not None:
            writer.write(last)
            continue
        image = rng.integers(60, 120, (180, 320, 3), dtype=np.uint8)
        cv2.rectangle(image, (10 + 5 * index % 280, 60), (40 + 5 * index % 280, 90),
                      (0, 0, 255), -1)
        writer.write(image)
        last = image
    writer.release()


def test_a_file_is_read_whole_in_order_at_its_own_clock(tmp_path: Path) -> None:
    clip = tmp_path / "clip.avi"
    write_clip(clip, 25)
    frames = list(CameraReader(str(clip), ReaderSettings(realtime=False)).frames())
    assert [f.seq for f in frames] == list(range(25))
    gaps = {round((b.ts - a.ts).total_seconds(), 3) for a, b in itertools.pairwise(frames)}
    assert gaps == {0.1}
    assert not any(f.frozen for f in frames)


def test_frame_rate_is_capped_by_dropping_frames(tmp_path: Path) -> None:
    clip = tmp_path / "clip.avi"
    write_clip(clip, 30)
    reader = CameraReader(str(clip), ReaderSettings(realtime=False, max_fps=5))
    frames = list(reader.frames())
    assert len(frames) == 15 and reader.stats.frames_dropped == 15


def test_realtime_paces_a_file_at_its_frame_rate(tmp_path: Path) -> None:
    clip = tmp_path / "clip.avi"
    write_clip(clip, 10)
    sleeps: list[float] = []
    reader = CameraReader(str(clip), ReaderSettings(realtime=True), clock=lambda: 0.0,
                          sleep=sleeps.append)
    assert len(list(reader.frames())) == 10
    assert [round(s, 3) for s in sleeps] == [round(0.1 * i, 3) for i in range(1, 10)]


def test_a_frozen_picture_is_flagged(tmp_path: Path) -> None:
    clip = tmp_path / "frozen.avi"
    write_clip(clip, 40, still_from=10)
    frames = list(CameraReader(str(clip), ReaderSettings(realtime=False,
                                                         frozen_after_s=1.0)).frames())
    frozen = [f.seq for f in frames if f.frozen]
    # The picture last changed at frame 9 (0.9 s): frozen from 1.9 s, frame 19.
    assert frozen == list(range(19, 40))


def test_an_unreachable_stream_is_retried_with_growing_back_off() -> None:
    sleeps: list[float] = []
    reader = CameraReader("rtsp://127.0.0.1:1/stream",
                          ReaderSettings(max_attempts=5, reconnect_max_s=3.0),
                          sleep=sleeps.append)
    assert list(reader.frames()) == []
    assert reader.stats.failed_opens == 5
    assert sleeps == [0.5, 1.0, 2.0, 3.0]


def test_a_source_that_comes_back_is_read(tmp_path: Path) -> None:
    clip = tmp_path / "late.avi"

    def sleep(_: float) -> None:
        if len(reader.stats.backoffs_s) == 2:
            write_clip(clip, 5)

    reader = CameraReader(str(clip), ReaderSettings(realtime=False), sleep=sleep)
    frames = list(reader.frames())
    assert len(frames) == 5 and reader.stats.failed_opens == 2


@pytest.mark.integration
def test_camera_publish_sends_capped_jpeg_frames_keyed_by_camera(
    tmp_path: Path, tansu: TansuBroker, scenario_cache: Path,
) -> None:
    site_file = build_scenario("four_arm", scenario_cache).site_file
    clip = tmp_path / "clip.avi"
    write_clip(clip, 12)
    big = tmp_path / "big.mp4"
    writer = cv2.VideoWriter(str(big), cv2.VideoWriter.fourcc(*"mp4v"), 10, (1280, 720))
    for _ in range(3):
        writer.write(np.random.default_rng(1).integers(0, 255, (720, 1280, 3), np.uint8))
    writer.release()
    env = {**os.environ, "SIMPANG_KAFKA__BROKERS": tansu.bootstrap,
           "SIMPANG_TOPICS__PREFIX": "pub-", "SIMPANG_SITE_FILE": str(site_file),
           "SIMPANG_DATA_DIR": str(tmp_path / "data")}

    def publish(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "simpang", "camera", "publish", *args],
                              env=env, cwd=REPO, capture_output=True, text=True, timeout=60)

    done = publish("--camera", "C-north-cam", "--source", str(clip), "--no-realtime")
    assert done.returncode == 0, done.stderr
    assert '"frames": 12' in done.stdout
    done = publish("--camera", "C-east-cam", "--source", str(big), "--no-realtime",
                   "--max-bytes", "60000")
    assert done.returncode == 0, done.stderr
    refused = publish("--camera", "no-such-cam", "--source", str(clip))
    assert refused.returncode == 1 and "not in" in refused.stderr + refused.stdout

    async def read() -> list:
        consumer = AIOKafkaConsumer("pub-camera-frames", bootstrap_servers=tansu.bootstrap,
                                    group_id=None, auto_offset_reset="earliest")
        await consumer.start()
        out: list = []
        try:
            for _ in range(20):
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    out.extend(records)
                if len(out) >= 15:
                    break
        finally:
            await consumer.stop()
        return out

    records = asyncio.run(read())
    assert len(records) == 15
    north = [r for r in records if r.key == b"C-north-cam"]
    assert [dict(r.headers)["seq"] for r in north] == [str(i).encode() for i in range(12)]
    assert all(dict(r.headers)["v"] == b"1" for r in records)
    east = [r for r in records if r.key == b"C-east-cam"]
    assert len(east) == 3 and all(len(r.value) <= 60000 for r in east)
    image = cv2.imdecode(np.frombuffer(east[0].value, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape[1] < 1280  # re-encoded smaller to fit
