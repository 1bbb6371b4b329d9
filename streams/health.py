"""Pipeline counters kept by each worker and sampled into :class:`HealthSample` records."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from simpang.records import HealthSample


@dataclass
class PipelineCounters:
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    readings_in: int = 0
    readings_accepted: int = 0
    dead_letters: int = 0
    readings_windowed: int = 0
    metrics_emitted: int = 0
    points_written: int = 0
    metric_points_written: int = 0
    sink_write_errors: int = 0
    http_requests: int = 0
    http_readings_in: int = 0
    http_readings_accepted: int = 0
    http_duplicates: int = 0

    def sample(self, worker: str, consumer_lag: dict[str, int]) -> HealthSample:
        return HealthSample(
            worker=worker,
            ts=datetime.now(UTC),
            started_at=self.started_at,
            readings_in=self.readings_in,
            readings_accepted=self.readings_accepted,
            dead_letters=self.dead_letters,
            readings_windowed=self.readings_windowed,
            metrics_emitted=self.metrics_emitted,
            points_written=self.points_written,
            metric_points_written=self.metric_points_written,
            sink_write_errors=self.sink_write_errors,
            http_requests=self.http_requests,
            http_readings_in=self.http_readings_in,
            http_readings_accepted=self.http_readings_accepted,
            http_duplicates=self.http_duplicates,
            consumer_lag=consumer_lag,
        )
