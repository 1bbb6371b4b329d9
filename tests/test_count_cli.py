"""``simpang count`` on a rendered video with the default model, against the simulator's own
counting-line crossings."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import cv2

from tests.camera_clips import render_clip

REPO = Path(__file__).resolve().parent.parent
BEGIN_S = 7 * 3600 + 15 * 60
SECONDS = 120


def test_count_prints_line_class_direction_counts_and_writes_the_annotated_video(
        scenario_cache: Path, tmp_path: Path) -> None:
    clip = render_clip(scenario_cache, tmp_path / "sumo", camera="C-north-cam",
                       begin_s=BEGIN_S, seconds=SECONDS, seed=21,
                       day=datetime(2026, 11, 20, tzinfo=UTC))
    video = tmp_path / "north.mp4"
    clip.write_video(video)
    annotated = tmp_path / "annotated.mp4"
    done = subprocess.run(
        [sys.executable, "-m", "simpang", "count", str(video), "--site", str(clip.site_file),
         "--camera", "C-north-cam", "--annotated", str(annotated), "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["frames"] == len(clip.messages)

    counted = Counter({(line, cls, direction): n
                       for line, by_class in result["lines"].items()
                       for cls, by_direction in by_class.items()
                       for direction, n in by_direction.items() if n})
    truth = Counter((e.line_id, e.vehicle_class.value, e.direction) for e in clip.crossings)
    error = sum(abs(counted[k] - truth[k]) for k in truth | counted)
    assert sum(truth.values()) >= 15, truth
    # The accuracy figures come from bench/detector.py; this guards the chain end to end (a
    # wrong line direction, scaling or class mapping reads far lower).
    assert 1 - error / sum(truth.values()) >= 0.8, (sorted(counted.items()), sorted(truth.items()))
    assert result["speed_kmh_mean"] is not None and 5 < result["speed_kmh_mean"] < 70

    written = cv2.VideoCapture(str(annotated))
    assert int(written.get(cv2.CAP_PROP_FRAME_COUNT)) == len(clip.messages)
    ok, frame = written.read()
    assert ok and frame.shape[:2] == (360, 640)


def test_count_refuses_an_unknown_camera_and_a_missing_video(
        scenario_cache: Path, tmp_path: Path) -> None:
    from simulator.bundled import build_scenario

    site_file = build_scenario("four_arm", scenario_cache).site_file
    for args, message in (
        (["nothing.mp4", "--camera", "nope"], "camera 'nope' is not in"),
        (["nothing.mp4", "--camera", "C-north-cam"], "cannot open video nothing.mp4"),
    ):
        done = subprocess.run([sys.executable, "-m", "simpang", "count", *args, "--site",
                               str(site_file)], cwd=tmp_path, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 1 and message in done.stdout + done.stderr, done
