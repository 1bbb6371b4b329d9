"""The counting agent on the real path: rendered JPEG frames → Tansu (camera-frames) → worker
(default ONNX model, tracker, counter) → vehicle-crossings, camera ApproachMetrics and camera
health in InfluxDB 1.6; bad frames → dead letters."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from dashboards.build import JSON_DIR
from simpang.settings import DEFAULT_MODEL_FILE
from simpang.site_file import load_site
from tests.camera_clips import render_clip
from tests.conftest import Pipeline
from tests.grafana_emulation import TimeRange, expander, panel, run_targets

pytestmark = pytest.mark.integration

CAMERA = "C-north-cam"
BEGIN_S = 7 * 3600 + 15 * 60
SECONDS = 90


def publish(pipeline: Pipeline, frames: list[tuple[bytes, list[tuple[str, bytes]]]]) -> None:
    async def go() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=pipeline.broker,
                                    max_request_size=2 * 1024 * 1024)
        await producer.start()
        try:
            for value, headers in frames:
                camera = dict(headers).get("camera_id", b"?")
                await producer.send(pipeline.topic("camera-frames"), value, key=camera,
                                    headers=headers)
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(go())


def test_counting_agent_counts_camera_frames_into_metrics(
    pipeline_factory: Callable[..., Pipeline], scenario_cache: Path, tmp_path: Path,
) -> None:
    assert DEFAULT_MODEL_FILE.is_file(), "the default model ships in models/"
    day = (datetime.now(UTC) - timedelta(days=1)).replace(hour=0, minute=0, second=0,
                                                           microsecond=0)
    clip = render_clip(scenario_cache, tmp_path / "sumo", camera=CAMERA, begin_s=BEGIN_S,
                       seconds=SECONDS, seed=5, day=day)
    site_file = clip.site_file
    frames = [(m.value, list(m.headers)) for m in clip.messages]
    truth = Counter(e.vehicle_class.value for e in clip.crossings
                    if e.direction == "in" and e.t_s <= BEGIN_S + SECONDS - 5)
    assert sum(truth.values()) >= 10, truth
    pipeline = pipeline_factory(SIMPANG_SITE_FILE=str(site_file),
                                SIMPANG_WINDOWS__GRACE_S="2")
    ts = dict(frames[5][1])["ts"]
    bad = [
        (b"not a jpeg", [("v", b"1"), ("camera_id", CAMERA.encode()), ("ts", ts)]),
        (frames[1][0][: len(frames[1][0]) // 2],  # cut off in transit
         [("v", b"1"), ("camera_id", CAMERA.encode()), ("ts", ts)]),
        (frames[0][0], [("v", b"1"), ("camera_id", CAMERA.encode()),  # camera clock wrong
                        ("ts", b"2099-01-01T00:00:00+00:00")]),
        (frames[0][0], [("v", b"1"), ("camera_id", b"no-such-cam"), ("ts", ts)]),
        (frames[0][0], [("v", b"1"), ("camera_id", CAMERA.encode())]),
        (frames[0][0], [("v", b"2"), ("camera_id", CAMERA.encode()), ("ts", ts)]),
    ]
    # Good frames, then a repeat of an early one (out of order), then the broken ones.
    publish(pipeline, [*frames, frames[5], *bad])

    # Every good frame processed (the repeat and the broken ones are not frames of it).
    pipeline.wait_rows(
        f"SELECT sum(frames) AS frames FROM camera_health WHERE camera = '{CAMERA}'",
        lambda r: bool(r) and r[0]["frames"] == len(frames), timeout_s=120)
    health = pipeline.wait_rows(
        f"SELECT * FROM camera_health WHERE camera = '{CAMERA}'",
        lambda r: sum(h["rejected"] for h in r) == 6,  # all but the unknown camera's frame
        timeout_s=30)
    assert all(h["inference_ms"] > 0 and h["frozen"] == 0 for h in health if h["frames"])
    crossings = pipeline.read_topic("vehicle-crossings", count=10_000, timeout_s=5)
    dead = pipeline.read_topic("dead-letters", count=7, timeout_s=60)
    reasons = sorted(d["reason_code"] for d in dead)
    assert reasons == ["future_timestamp", "invalid", "late", "malformed", "malformed",
                       "unknown_device", "unsupported_version"], dead
    assert any("not a decodable image" in d["reason"] for d in dead)
    assert any("truncated JPEG" in d["reason"] for d in dead)

    # Camera counts reach InfluxDB as ApproachMetrics of their own source, equal to the
    # crossings of the windows they cover.
    rows = pipeline.wait_rows(
        "SELECT * FROM approach_metrics WHERE source = 'camera' AND level = 'approach' "
        "AND \"window\" = '60s'", lambda r: len(r) >= 1, timeout_s=60)
    window_end = datetime.fromtimestamp(rows[0]["time"] / 1e9, UTC)
    in_window = Counter(c["vehicle_class"] for c in crossings if c["direction"] == "in" and
                        window_end - timedelta(seconds=60)
                        <= datetime.fromisoformat(c["ts"]) < window_end)
    assert {k: rows[0][f"count_{k}"] for k in in_window} == dict(in_window)
    assert rows[0]["approach"] == "north"

    inbound = Counter(c["vehicle_class"] for c in crossings if c["direction"] == "in"
                      and datetime.fromisoformat(c["ts"]) <= day + timedelta(
                          seconds=BEGIN_S + SECONDS - 5))
    error = sum(abs(inbound[k] - truth[k]) for k in truth | inbound)
    assert 1 - error / sum(truth.values()) >= 0.8, (inbound, truth)  # bench: the accuracy
    assert all(c["camera_id"] == CAMERA and c["approach"] == "north" for c in crossings)
    assert any(c["speed_kmh"] for c in crossings), "a calibrated camera gives speeds"


    # The dashboards' camera panels, expanded as Grafana expands them, read these points.
    site = load_site(site_file)
    intersection = next(i.id for i in site.intersections if any(c.id == CAMERA
                                                                 for c in i.cameras))
    now_ms = int(time.time() * 1000)
    recent = TimeRange(now_ms - 3600_000, now_ms, "5s")  # points after now are left out
    devices = json.loads((JSON_DIR / "simpang-devices.json").read_text())
    by_device = expander(devices, recent, site=[site.id], intersection=[intersection])
    cameras = run_targets(pipeline.db, panel(devices, "Cameras now"), by_device)["A"]
    latest = pipeline.db.rows(f"SELECT * FROM camera_health WHERE camera = '{CAMERA}'")[-1]
    assert {r["camera"] for r in cameras} == {
        c.id for i in site.intersections if i.id == intersection for c in i.cameras}
    assert next(r["time"] for r in cameras if r["camera"] == CAMERA) == latest["time"]
    inference = run_targets(pipeline.db, panel(devices, "Inference time per frame (ms)"),
                            by_device)["A"]
    assert {r["camera"] for r in inference} == {CAMERA}
    assert all(r["mean"] > 0 for r in inference)
    frames_per_s = run_targets(pipeline.db, panel(devices, "Camera frames per second"),
                               by_device)["A"]
    assert max(r["mean"] for r in frames_per_s) > 0
    queued = pipeline.db.rows(f"SELECT * FROM camera_health WHERE camera = '{CAMERA}' AND "
                              f"queue_length_m >= 0 AND time <= {now_ms}ms")
    view = json.loads((JSON_DIR / "simpang-intersection.json").read_text())
    queue = run_targets(pipeline.db, panel(view, "Queue (m)"), expander(
        view, recent, site=[site.id], intersection=[intersection], source=["camera"],
        window=["60s"]))["A"]
    buckets: dict[int, list[float]] = {}
    for h in queued:
        buckets.setdefault(h["time"] // 5_000_000_000 * 5_000_000_000, []).append(
            h["queue_length_m"])
    assert queued and {r["time"]: r["mean"] for r in queue} == pytest.approx(
        {t: sum(v) / len(v) for t, v in buckets.items()})
