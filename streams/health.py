"""Pipeline counters kept by each worker and sampled into :class:`HealthSample` records."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from simpang.records import HealthSample


@dataclass
class PipelineCounters:
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    readings_in: int = 0
    readings_accepted: int = 0
    dead_letters: int = 0
    dead_letters_by_reason: Counter[str] = field(default_factory=Counter)
    readings_windowed: int = 0
    readings_resent: int = 0
    metrics_emitted: int = 0
    points_written: int = 0
    metric_points_written: int = 0
    sink_write_errors: int = 0
    # Events the sink agents have taken off their topics but not yet written and acked.
    sink_backlog_events: int = 0
    sink_last_success_at: datetime | None = None
    sink_last_write_failed: bool = False
    http_requests: int = 0
    http_readings_in: int = 0
    http_readings_accepted: int = 0
    http_duplicates: int = 0

    def sample(self, worker: str, consumer_lag: dict[str, int], *,
               ingest_position: dict[str, int] | None = None) -> HealthSample:
        return HealthSample(
            worker=worker,
            ts=datetime.now(UTC),
            started_at=self.started_at,
            readings_in=self.readings_in,
            readings_accepted=self.readings_accepted,
            dead_letters=self.dead_letters,
            readings_windowed=self.readings_windowed,
            readings_resent=self.readings_resent,
            metrics_emitted=self.metrics_emitted,
            points_written=self.points_written,
            metric_points_written=self.metric_points_written,
            sink_write_errors=self.sink_write_errors,
            http_requests=self.http_requests,
            http_readings_in=self.http_readings_in,
            http_readings_accepted=self.http_readings_accepted,
            http_duplicates=self.http_duplicates,
            consumer_lag=consumer_lag,
            ingest_position=ingest_position or {},
        )


def consumer_lag(app: Any, topics: Iterable[str]) -> dict[tuple[str, int], int]:
    """Messages not yet committed, per (topic, partition) this worker consumes among
    ``topics``: the partition's high-water mark minus the committed offset."""
    wanted = set(topics)
    consumer = app.consumer
    lag: dict[tuple[str, int], int] = {}
    for tp in app.assignor.assigned_actives():
        highwater = consumer.highwater(tp)
        if tp.topic in wanted and highwater is not None:  # None until the first fetch
            committed = consumer._committed_offset.get(tp) or 0  # no public accessor
            lag[(tp.topic, tp.partition)] = max(0, highwater - committed)
    return lag
