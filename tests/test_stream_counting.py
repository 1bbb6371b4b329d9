"""The counting agent's logic without Faust: frozen cameras and the per-line readings, with
the default model on real JPEG frames."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np

from detectors.onnx_detector import OnnxDetector
from simpang.settings import DEFAULT_MODEL_FILE
from simulator.bundled import build_scenario
from streams.counting import CameraCounting, RawFrame

CAMERA = "C-north-cam"


def frame(image: np.ndarray, ts: datetime, offset: int) -> RawFrame:
    ok, jpeg = cv2.imencode(".jpg", image)
    assert ok
    return RawFrame(jpeg.tobytes(), {"v": b"1", "camera_id": CAMERA.encode(),
                                     "ts": ts.isoformat().encode()},
                    CAMERA.encode(), "camera-frames", 0, offset)


def test_a_frozen_picture_is_reported_and_every_line_reads_each_interval(
        scenario_cache: Path) -> None:
    site = build_scenario("four_arm", scenario_cache).site()
    counting = CameraCounting(site, OnnxDetector(DEFAULT_MODEL_FILE), interval_s=10.0,
                              frozen_after_s=2.0)
    start = datetime(2026, 11, 24, 7, 0, tzinfo=UTC)
    still = np.random.default_rng(0).integers(0, 255, (360, 640, 3), np.uint8)
    out = counting.process([frame(still, start + timedelta(seconds=0.5 * i), i)
                            for i in range(8)])
    assert not out.dead_letters and not out.batches
    health = {h.camera_id: h for h in counting.health("w")}
    assert health[CAMERA].frozen and health[CAMERA].frames == 8
    assert health[CAMERA].inference_ms is not None and health[CAMERA].inference_ms > 0
    assert not health["C-south-cam"].frozen and health["C-south-cam"].frames == 0

    moved = np.roll(still, 40, axis=1)
    out = counting.process([frame(moved, start + timedelta(seconds=10.5), 8)])
    health = {h.camera_id: h for h in counting.health("w")}
    assert not health[CAMERA].frozen and health[CAMERA].frames == 1  # the picture moved
    # Crossing 07:00:10 closed the first interval: one reading per counting line, even with
    # nothing counted, as camera readings of the north approach.
    readings = out.batches["C"].readings
    north = next(c for i in site.intersections for c in i.cameras if c.id == CAMERA)
    assert sorted(r.device_id for r in readings) == sorted(
        f"{CAMERA}:{line.id}" for line in north.counting_lines)
    assert all(r.source == "camera" and r.approach == "north" and r.interval_s == 10.0
               and r.ts_ms == int((start + timedelta(seconds=10)).timestamp() * 1000)
               for r in readings)


def test_cut_off_and_far_future_frames_are_refused_and_later_frames_still_count(
        scenario_cache: Path) -> None:
    site = build_scenario("four_arm", scenario_cache).site()
    counting = CameraCounting(site, OnnxDetector(DEFAULT_MODEL_FILE), max_future_skew_s=120)
    now = datetime.now(UTC).replace(microsecond=0)
    picture = np.random.default_rng(1).integers(0, 255, (360, 640, 3), np.uint8)
    whole = frame(picture, now - timedelta(seconds=2), 0)
    cut = RawFrame(whole.value[: len(whole.value) // 2], whole.headers, whole.key,
                   whole.topic, 0, 1)
    ahead = frame(picture, now + timedelta(hours=1), 2)
    later = frame(picture, now - timedelta(seconds=1), 3)
    out = counting.process([cut, ahead, later])
    assert [(d.reason_code.value, d.id) for d in out.dead_letters] == [
        ("malformed", "camera-frames:0:1"), ("future_timestamp", "camera-frames:0:2")]
    assert "truncated JPEG" in out.dead_letters[0].reason
    health = {h.camera_id: h for h in counting.health("w")}
    assert health[CAMERA].frames == 1 and health[CAMERA].rejected == 2
