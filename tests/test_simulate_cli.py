"""``simpang simulate run/replay/render`` as a user runs them, against a real broker (Tansu)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
from aiokafka import AIOKafkaConsumer

from simpang.records import SensorReading
from simulator.stream_io import read_record
from streams.embedded import TansuBroker

Message = tuple[str, str, bytes, tuple[tuple[str, bytes], ...]]


def _simpang(args: list[str], env: dict[str, str]) -> dict[str, object]:
    result = subprocess.run([sys.executable, "-m", "simpang", *args], capture_output=True,
                            text=True, env={**os.environ, **env}, check=False, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def _consume(bootstrap: str, topics: list[str], count: int) -> list[Message]:
    async def go() -> list[Message]:
        consumer = AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap,
                                    auto_offset_reset="earliest", enable_auto_commit=False)
        await consumer.start()
        out: list[Message] = []
        try:
            async with asyncio.timeout(60):
                while len(out) < count:
                    batch = await consumer.getmany(timeout_ms=500)
                    for records in batch.values():
                        for r in records:
                            role = r.topic.split("-", 1)[1].replace("-", "_")
                            out.append((role, (r.key or b"").decode(), r.value or b"",
                                        tuple(r.headers)))
        finally:
            await consumer.stop()
        return out

    return asyncio.run(go())


def _by_key(messages: list[Message]) -> dict[tuple[str, str], list[Message]]:
    """Kafka keeps order per key (one partition), not across keys."""
    grouped: dict[tuple[str, str], list[Message]] = defaultdict(list)
    for message in messages:
        grouped[(message[0], message[1])].append(message)
    return dict(grouped)


def test_run_record_then_replay_publishes_the_same_stream(
    tansu: TansuBroker, tmp_path: Path, clean_env: None
) -> None:
    env = {"SIMPANG_KAFKA__BROKERS": tansu.bootstrap, "SIMPANG_DATA_DIR": str(tmp_path),
           "SIMPANG_TOPICS__PREFIX": "rec-"}
    record = tmp_path / "stream.jsonl"
    ran = _simpang(["simulate", "run", "--scenario", "t_junction", "--duration", "180",
                    "--begin", "07:00", "--interval", "30", "--cameras", "--camera-fps", "0.2",
                    "--record", str(record)], env)
    assert ran["reading_messages"] == 6 and ran["readings"] == 6 * 6
    assert ran["frames"] == 3 * (180 * 0.2)

    header, recorded_iter = read_record(record)
    assert header["scenario"] == "t_junction" and header["seed"] == 42
    recorded = [(m.topic, m.key, m.value, m.headers) for m in recorded_iter]
    assert len(recorded) == 6 + 108
    published = _consume(tansu.bootstrap, ["rec-sensor-readings", "rec-camera-frames"],
                         len(recorded))
    assert _by_key(published) == _by_key(recorded)

    for topic, _, value, headers in recorded:
        if topic == "sensor_readings":
            for reading in json.loads(value):
                SensorReading.model_validate(reading)
        else:
            image = cv2.imdecode(np.frombuffer(value, np.uint8), cv2.IMREAD_COLOR)
            assert image.shape == (360, 640, 3)
            assert {k for k, _ in headers} == {"v", "camera_id", "ts", "seq"}

    replayed = _simpang(["simulate", "replay", str(record)],
                        {**env, "SIMPANG_TOPICS__PREFIX": "again-"})
    assert replayed == {"messages": len(recorded)}
    again = _consume(tansu.bootstrap, ["again-sensor-readings", "again-camera-frames"],
                     len(recorded))
    assert _by_key(again) == _by_key(published)


def test_no_kafka_writes_files_and_replay_reproduces_them(tmp_path: Path, clean_env: None) -> None:
    env = {"SIMPANG_DATA_DIR": str(tmp_path)}
    _simpang(["simulate", "run", "--scenario", "four_arm", "--duration", "300", "--begin",
              "17:00", "--no-kafka", "--out", str(tmp_path / "first"), "--record",
              str(tmp_path / "r.jsonl")], env)
    _simpang(["simulate", "replay", str(tmp_path / "r.jsonl"), "--no-kafka", "--out",
              str(tmp_path / "second")], env)
    first = (tmp_path / "first" / "sensor_readings.jsonl").read_text()
    assert first == (tmp_path / "second" / "sensor_readings.jsonl").read_text()
    lines = [json.loads(line) for line in first.splitlines()]
    assert len(lines) == 5 and {line["key"] for line in lines} == {"C"}
    # Evening peak: every approach saw traffic in five minutes.
    totals: dict[str, int] = defaultdict(int)
    for line in lines:
        for reading in line["value"]:
            totals[reading["device_id"].split("-")[1][0]] += sum(reading["counts"].values())
    assert set(totals) == {"n", "e", "s", "w"} and min(totals.values()) > 10


def test_unknown_scenario_and_missing_out_are_clear_errors(tmp_path: Path,
                                                           clean_env: None) -> None:
    env = {**os.environ, "SIMPANG_DATA_DIR": str(tmp_path)}
    unknown = subprocess.run([sys.executable, "-m", "simpang", "simulate", "run", "--scenario",
                              "atlantis", "--no-kafka", "--out", str(tmp_path)],
                             capture_output=True, text=True, env=env, check=False)
    assert unknown.returncode == 1
    assert "neither a bundled scenario (corridor, four_arm, t_junction)" in unknown.stdout
    no_out = subprocess.run([sys.executable, "-m", "simpang", "simulate", "run", "--no-kafka"],
                            capture_output=True, text=True, env=env, check=False)
    assert no_out.returncode == 1 and "--no-kafka needs --out" in no_out.stdout


def test_render_writes_a_labelled_dataset(tmp_path: Path, clean_env: None) -> None:
    out = tmp_path / "set"
    summary = _simpang(["simulate", "render", "--frames", "24", "--out", str(out),
                        "--scenario", "four_arm", "--warmup", "120", "--seed", "3"],
                       {"SIMPANG_DATA_DIR": str(tmp_path)})
    assert summary["frames"] == 24
    records = [json.loads(line) for line in (out / "annotations.jsonl").read_text().splitlines()]
    assert len(records) == 24 == len(list((out / "images").glob("*.jpg")))
    assert (out / "classes.txt").read_text().split() == [
        "motorcycle", "car", "bus", "truck", "bicycle"]
    boxes = 0
    for record in records:
        label_lines = (out / record["label"]).read_text().splitlines()
        assert len(label_lines) == len(record["boxes"])
        for line, box in zip(label_lines, record["boxes"], strict=True):
            index, cx, cy, w, h = line.split()
            x1, y1, x2, y2 = box["box_xyxy"]
            assert int(index) == ["motorcycle", "car", "bus", "truck", "bicycle"].index(
                box["class"])
            assert abs(float(cx) * 640 - (x1 + x2) / 2) < 0.1
            assert abs(float(cy) * 360 - (y1 + y2) / 2) < 0.1
            assert abs(float(w) * 640 - (x2 - x1)) < 0.1 and abs(float(h) * 360 - (y2 - y1)) < 0.1
            boxes += 1
    assert boxes == summary["boxes"] > 24
    again = tmp_path / "again"
    _simpang(["simulate", "render", "--frames", "24", "--out", str(again), "--scenario",
              "four_arm", "--warmup", "120", "--seed", "3"], {"SIMPANG_DATA_DIR": str(tmp_path)})
    assert (again / "annotations.jsonl").read_text() == (out / "annotations.jsonl").read_text()
