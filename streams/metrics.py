"""``GET /metrics``: one worker's counters, consumer lag, sink state, camera inference time
and process metrics in the Prometheus text format.

Values are read when Prometheus scrapes (:class:`PipelineCollector` over the live
:class:`PipelineCounters`), so nothing runs between scrapes. Each app has its own
:class:`CollectorRegistry`: tests and the demo run several apps in one process, and the
global default registry would mix them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from faust.web import Request, Response, View
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from simpang.records import RejectReason
from streams.counting import CameraTotals
from streams.health import PipelineCounters

PREFIX = "simpang"

COUNTERS: dict[str, str] = {
    "readings_in": "Readings taken off sensor-readings (an unreadable message counts as one).",
    "readings_accepted": "Readings that passed validation and went on to be windowed.",
    "readings_windowed": "Readings added to windows (replays of already-counted input "
                         "excluded).",
    "readings_resent": "Readings left out of their window as re-sends of a (device, seq) it "
                       "had counted (any path: HTTP, MQTT, Kafka).",
    "metrics_emitted": "Approach-metrics rows (lane and approach) emitted by closing windows.",
    "points_written": "Points the sink wrote to InfluxDB (or the line-protocol file).",
    "metric_points_written": "Approach-metrics points the sink wrote.",
    "sink_write_errors": "Failed sink writes (each retry of a batch counts).",
    "http_requests": "HTTP ingest requests answered.",
    "http_readings_in": "Readings in HTTP ingest requests (a refused request counts as one).",
    "http_readings_accepted": "HTTP readings the broker took.",
    "http_duplicates": "HTTP readings that were re-sends of a (device, seq) already accepted.",
}
"""PipelineCounters fields exposed as ``simpang_<field>_total``, with their help text."""

ConsumerLag = Callable[[], Mapping[tuple[str, int], int]]
CameraSource = Callable[[], Iterable[CameraTotals]]


class PipelineCollector:
    """Reads a worker's state at scrape time; every ``simpang_`` sample has its ``worker``."""

    def __init__(self, counters: PipelineCounters, *, worker: str, lag: ConsumerLag,
                 cameras: CameraSource | None = None) -> None:
        self.counters = counters
        self.worker = worker
        self.lag = lag
        self.cameras = cameras

    def collect(self) -> Iterable[Metric]:
        counters = self.counters
        worker = [self.worker]
        for field, help_text in COUNTERS.items():
            counter = CounterMetricFamily(f"{PREFIX}_{field}", help_text, labels=["worker"])
            counter.add_metric(worker, getattr(counters, field))
            yield counter

        # No unlabelled total beside the reasons: sum() gives it, and a twin in the family
        # would double every sum. Every reason is there from the start, so rate() sees the
        # first rejection of a kind.
        dead = CounterMetricFamily(f"{PREFIX}_dead_letters",
                                   "Messages rejected to dead-letters, by reason code.",
                                   labels=["worker", "reason"])
        by_reason = {reason.value: 0 for reason in RejectReason}
        by_reason.update(counters.dead_letters_by_reason)
        for reason, count in sorted(by_reason.items()):
            dead.add_metric([*worker, reason], count)
        yield dead

        lag = GaugeMetricFamily(
            f"{PREFIX}_consumer_lag_messages",
            "Messages on a partition this worker consumes that it has not committed yet "
            "(high-water mark minus committed offset).",
            labels=["worker", "topic", "partition"])
        for (topic, partition), behind in sorted(self.lag().items()):
            lag.add_metric([*worker, topic, str(partition)], behind)
        yield lag

        yield _gauge("sink_backlog_events", "Events the sink agents have taken off their "
                     "topics and not yet written and acknowledged.",
                     worker, counters.sink_backlog_events)
        since = counters.sink_last_success_at or counters.started_at
        yield _gauge("sink_last_success_age_seconds",
                     "Seconds since the sink last wrote successfully (since the worker "
                     "started, before its first write).",
                     worker, (datetime.now(UTC) - since).total_seconds())
        yield _gauge("sink_last_write_failed",
                     "1 while the sink's latest write attempt failed (InfluxDB down or "
                     "refusing points), 0 once one succeeds.",
                     worker, int(counters.sink_last_write_failed))

        if self.cameras is not None:
            labels = ["worker", "camera", "intersection"]
            frames = CounterMetricFamily(f"{PREFIX}_camera_frames",
                                         "Camera frames detected and counted.", labels=labels)
            inference = CounterMetricFamily(
                f"{PREFIX}_camera_inference_seconds",
                "Detector time spent on a camera's frames (a batch's time shared evenly "
                "among its frames); per frame: rate of this / rate of frames.",
                labels=labels)
            for camera in self.cameras():
                frames.add_metric([*worker, camera.camera_id, camera.intersection],
                                  camera.frames)
                inference.add_metric([*worker, camera.camera_id, camera.intersection],
                                     camera.inference_s)
            yield frames
            yield inference


def _gauge(name: str, help_text: str, worker: list[str], value: float) -> GaugeMetricFamily:
    gauge = GaugeMetricFamily(f"{PREFIX}_{name}", help_text, labels=["worker"])
    gauge.add_metric(worker, value)
    return gauge


def metrics_registry(collector: PipelineCollector) -> CollectorRegistry:
    """A registry of its own for one app: its pipeline and this process (RSS, CPU, files)."""
    registry = CollectorRegistry()
    registry.register(collector)
    ProcessCollector(registry=registry)
    return registry


def add_metrics_view(app: Any, registry: CollectorRegistry) -> None:
    """Mount ``GET /metrics`` on the Faust web server."""

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            # A header, not content_type=: aiohttp refuses a charset in content_type.
            response: Response = self.bytes(generate_latest(registry),
                                            headers={"Content-Type": CONTENT_TYPE_LATEST})
            return response
