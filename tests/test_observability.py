"""Each worker's ``GET /metrics`` and JSON logs: the collector over known counters, camera
totals that survive health samples, and a real worker (Tansu, InfluxDB) fed known readings,
scraped and its log read back."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import urllib3
from numpy.typing import NDArray
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from detectors.detections import Detections
from simpang.records import RejectReason
from simpang.settings import Settings
from simulator.bundled import build_scenario
from streams.counting import CameraCounting, CameraTotals, RawFrame
from streams.embedded import free_port
from streams.health import PipelineCounters
from streams.metrics import COUNTERS, PipelineCollector, metrics_registry
from streams.worker import json_logging_config
from tests.conftest import Pipeline

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(text: str) -> Samples:
    """Every sample of a Prometheus text exposition, by name and labels."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def named(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


def test_the_collector_reads_the_counters_at_each_scrape() -> None:
    counters = PipelineCounters()
    for index, field in enumerate(COUNTERS, start=1):
        setattr(counters, field, index * 10)
    counters.dead_letters_by_reason.update({"invalid": 3, "late": 2})
    counters.sink_backlog_events = 7
    counters.sink_last_write_failed = True
    counters.started_at = datetime.now(UTC) - timedelta(seconds=120)
    lag = {("t-sensor-readings", 0): 5, ("t-sensor-readings", 3): 0}
    cameras = [CameraTotals("cam-n", "x1", 40, 1.5)]
    registry = metrics_registry(PipelineCollector(
        counters, worker="w1", lag=lambda: lag, cameras=lambda: cameras))

    samples = scrape(generate_latest(registry).decode())
    for index, field in enumerate(COUNTERS, start=1):
        assert value(samples, f"simpang_{field}_total", worker="w1") == index * 10
    dead = named(samples, "simpang_dead_letters_total")
    assert {dict(labels)["reason"]: v for labels, v in dead.items()} == {
        **{reason.value: 0 for reason in RejectReason}, "invalid": 3, "late": 2}
    assert ("simpang_dead_letters_total", frozenset({("worker", "w1")})) not in samples
    assert value(samples, "simpang_consumer_lag_messages", worker="w1",
                 topic="t-sensor-readings", partition="0") == 5
    assert len(named(samples, "simpang_consumer_lag_messages")) == 2
    assert value(samples, "simpang_sink_backlog_events", worker="w1") == 7
    assert value(samples, "simpang_sink_last_write_failed", worker="w1") == 1
    # No successful write yet: the age counts from the worker's start.
    assert 119 <= value(samples, "simpang_sink_last_success_age_seconds", worker="w1") < 130
    camera = {"worker": "w1", "camera": "cam-n", "intersection": "x1"}
    assert value(samples, "simpang_camera_frames_total", **camera) == 40
    assert value(samples, "simpang_camera_inference_seconds_total", **camera) == 1.5
    assert value(samples, "process_resident_memory_bytes") > 0

    # Nothing is cached: the next scrape sees the counters as they are then.
    counters.readings_in += 1
    counters.dead_letters_by_reason["invalid"] += 1
    counters.sink_backlog_events = 0
    counters.sink_last_write_failed = False
    counters.sink_last_success_at = datetime.now(UTC)
    lag[("t-sensor-readings", 0)] = 0
    samples = scrape(generate_latest(registry).decode())
    assert value(samples, "simpang_readings_in_total", worker="w1") == 11
    assert value(samples, "simpang_dead_letters_total", worker="w1", reason="invalid") == 4
    assert value(samples, "simpang_sink_backlog_events", worker="w1") == 0
    assert value(samples, "simpang_sink_last_write_failed", worker="w1") == 0
    assert value(samples, "simpang_sink_last_success_age_seconds", worker="w1") < 5
    assert value(samples, "simpang_consumer_lag_messages", worker="w1",
                 topic="t-sensor-readings", partition="0") == 0


class SleepingDetector:
    """Takes a known time per batch and finds nothing."""

    def __init__(self, batch_s: float) -> None:
        self.batch_s = batch_s

    def detect(self, frames: Sequence[NDArray[np.uint8]]) -> list[Detections]:
        time.sleep(self.batch_s)
        return [Detections.empty() for _ in frames]


def test_camera_totals_survive_health_samples(scenario_cache: Path) -> None:
    site = build_scenario("four_arm", scenario_cache).site()
    counting = CameraCounting(site, SleepingDetector(0.05))
    ok, jpeg = cv2.imencode(".jpg", np.zeros((120, 160, 3), np.uint8))
    assert ok
    start = datetime(2026, 11, 24, 7, 0, tzinfo=UTC)

    def frames(first: int, count: int) -> list[RawFrame]:
        return [RawFrame(jpeg.tobytes(), {"v": b"1", "camera_id": b"C-north-cam",
                                          "ts": (start + timedelta(seconds=i)).isoformat()
                                          .encode()}, b"C-north-cam", "camera-frames", 0, i)
                for i in range(first, first + count)]

    counting.process(frames(0, 4))
    [north] = [h for h in counting.health("w") if h.camera_id == "C-north-cam"]
    assert north.frames == 4
    counting.process(frames(4, 2))
    totals = {t.camera_id: t for t in counting.totals()}
    assert totals["C-north-cam"].frames == 6 and totals["C-south-cam"].frames == 0
    # Two batches of 0.05 s at least, shared among their frames.
    assert 0.1 <= totals["C-north-cam"].inference_s < 0.5
    assert totals["C-north-cam"].intersection == "C"

    registry = metrics_registry(PipelineCollector(
        PipelineCounters(), worker="w", lag=dict, cameras=counting.totals))
    samples = scrape(generate_latest(registry).decode())
    camera = {"worker": "w", "camera": "C-north-cam", "intersection": "C"}
    assert value(samples, "simpang_camera_frames_total", **camera) == 6
    assert value(samples, "simpang_camera_inference_seconds_total", **camera) == (
        totals["C-north-cam"].inference_s)
    assert len(named(samples, "simpang_camera_frames_total")) == 4  # every camera of the site


@pytest.mark.usefixtures("clean_env")
def test_json_log_lines_carry_the_worker_and_the_extra_keys() -> None:
    config = json_logging_config(Settings(worker_id="w7", log_format="json"))
    spec = dict(config["formatters"]["json"])
    formatter = spec.pop("()")(**spec)
    record = logging.getLogger("simpang.streams").makeRecord(
        "simpang.streams", logging.INFO, __file__, 1, "dead letter %s", ("d1",), None,
        extra={"device": "loop-1", "intersection": "x1"})
    line = json.loads(formatter.format(record))
    assert line["message"] == "dead letter d1" and line["level"] == "INFO"
    assert line["logger"] == "simpang.streams" and line["worker"] == "w7"
    assert line["device"] == "loop-1" and line["intersection"] == "x1"
    assert datetime.fromisoformat(line["ts"]).tzinfo is not None


N1 = "smd-lembuswana-n1-loop"
N2 = "smd-lembuswana-n2-loop"
KEY = "smd-lembuswana"


def reading(device: str, minute: int) -> dict[str, Any]:
    ts = (datetime.now(UTC) - timedelta(minutes=30 - minute)).replace(second=0, microsecond=0)
    return {"device_id": device, "kind": "loop", "ts": ts.isoformat(), "interval_s": 60,
            "counts": {"car": 3, "motorcycle": 5}, "occupancy_pct": 12.5}


def get(url: str) -> urllib3.BaseHTTPResponse:
    return urllib3.request("GET", url, timeout=5, retries=False)


@pytest.mark.integration
def test_a_worker_serves_its_metrics_and_logs_json(
    pipeline_factory: Callable[..., Pipeline],
) -> None:
    port = free_port()
    pipeline = pipeline_factory(SIMPANG_WEB_PORT=str(port), SIMPANG_LOG_FORMAT="json",
                                SIMPANG_WORKER_ID="obs-1")
    url = f"http://127.0.0.1:{port}"
    pipeline.wait_http(url, timeout_s=45)

    # 6 valid readings, in time order (none late); 1 malformed message, 1 unknown device,
    # 1 invalid count: 9 readings in.
    pipeline.send([
        (KEY, [reading(N1, 1), reading(N2, 1), reading(N1, 2), reading(N2, 2)]),
        (KEY, b"{not json"),
        (KEY, [reading(N1, 3), reading("no-such-loop", 3), {**reading(N2, 3), "counts": 5},
               reading(N2, 3)]),
    ])
    # One request without a token: an HTTP request, refused whole.
    refused = urllib3.request("POST", f"{url}/v1/readings", json=reading(N1, 4), timeout=10)
    assert refused.status == 401

    wanted = {"malformed": 1, "unknown_device": 1, "invalid": 1, "unauthorised": 1}
    deadline = time.monotonic() + 30
    while True:
        response = get(f"{url}/metrics")
        samples = scrape(response.data.decode())
        worker = {"worker": "obs-1"}
        dead = {dict(labels)["reason"]: v
                for labels, v in named(samples, "simpang_dead_letters_total").items()}
        # Ingest consumes all four partitions of sensor-readings on this one worker.
        sensor_lag = {dict(labels)["partition"]: v for labels, v in named(
            samples, "simpang_consumer_lag_messages").items()
            if dict(labels)["topic"] == pipeline.topic("sensor-readings")}
        settled = (value(samples, "simpang_readings_in_total", **worker) == 9
                   and all(dead[reason] == n for reason, n in wanted.items())
                   and value(samples, "simpang_points_written_total", **worker) > 0
                   and value(samples, "simpang_sink_backlog_events", **worker) == 0
                   and sensor_lag == {"0": 0, "1": 0, "2": 0, "3": 0})
        if settled:
            break
        pipeline.assert_worker_alive()
        assert time.monotonic() < deadline, (response.data.decode(), pipeline.log_tail())
        time.sleep(0.5)

    assert response.headers["Content-Type"] == CONTENT_TYPE_LATEST
    assert value(samples, "simpang_readings_accepted_total", **worker) == 6
    assert dead == {**{reason.value: 0 for reason in RejectReason}, **wanted}
    assert value(samples, "simpang_http_requests_total", **worker) == 1
    assert value(samples, "simpang_http_readings_in_total", **worker) == 1
    assert value(samples, "simpang_http_readings_accepted_total", **worker) == 0
    assert value(samples, "simpang_sink_write_errors_total", **worker) == 0
    assert value(samples, "simpang_sink_last_write_failed", **worker) == 0
    assert value(samples, "simpang_sink_last_success_age_seconds", **worker) < 10
    assert value(samples, "process_resident_memory_bytes") > 50e6
    assert value(samples, "process_cpu_seconds_total") > 0

    lines = pipeline.log_path.read_text().splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    assert records and all(isinstance(r, dict) for r in records)
    assert all({"ts", "level", "logger", "message"} <= r.keys() and r["worker"] == "obs-1"
               for r in records)
    assert any(r["logger"].startswith("faust") for r in records)  # Faust's own lines too
    letters = [r for r in records if r["logger"] == "simpang.streams"
               and r["message"].startswith("dead letter")]
    assert len(letters) == sum(wanted.values())
    assert {r.get("device") for r in letters} == {"no-such-loop", N2, None}
