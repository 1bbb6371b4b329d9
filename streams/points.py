"""Records → InfluxDB line protocol, following :mod:`simpang.schema` exactly."""

from __future__ import annotations

import zlib
from datetime import datetime

from influxdb_client import Point, WritePrecision

from simpang.records import (
    ApproachMetrics,
    CameraHealth,
    DeadLetter,
    DetectorHealth,
    HealthSample,
    TimingRecommendation,
)
from simpang.schema import (
    APPROACH_METRICS,
    CAMERA_HEALTH,
    CONSUMER_LAG,
    DEAD_LETTERS,
    DETECTOR_HEALTH,
    PIPELINE_HEALTH,
    TIMING_APPROACHES,
    TIMING_PHASES,
    TIMING_RECOMMENDATIONS,
    count_field,
)
from simpang.vehicles import VehicleClass


def _ns(ts: datetime) -> int:
    return round(ts.timestamp() * 1_000_000) * 1000


def approach_metrics_line(m: ApproachMetrics) -> str:
    point = (
        Point(APPROACH_METRICS.name)
        .tag("site", m.site)
        .tag("intersection", m.intersection)
        .tag("approach", m.approach)
        .tag("level", "approach" if m.lane is None else "lane")
        .tag("source", m.source)
        .tag("window", m.window)
        .field("flow_veh_per_hour", float(m.flow_veh_per_hour))
        .field("flow_pcu_per_hour", float(m.flow_pcu_per_hour))
        .field("readings", int(m.readings))
        .time(_ns(m.window_end), WritePrecision.NS)
    )
    if m.lane is not None:
        point.tag("lane", m.lane)
    if m.occupancy_pct is not None:
        point.field("occupancy_pct", float(m.occupancy_pct))
    if m.mean_speed_kmh is not None:
        point.field("mean_speed_kmh", float(m.mean_speed_kmh))
    for vehicle_class in VehicleClass:
        point.field(count_field(vehicle_class), int(m.counts.get(vehicle_class, 0)))
    return str(point.to_line_protocol())


def dead_letter_line(dl: DeadLetter) -> str:
    # Many rejections can share one timestamp; a stable offset from the id keeps each its own
    # point, and a replayed rejection (same id) overwrites itself instead of counting twice.
    tie_break_ns = zlib.crc32(dl.id.encode()) % 1000
    point = (
        Point(DEAD_LETTERS.name)
        .tag("source", dl.source)
        .tag("reason_code", dl.reason_code.value)
        .field("count", 1)
        .field("reason", _one_line(dl.reason[:1000]))
        .time(_ns(dl.ts) + tie_break_ns, WritePrecision.NS)
    )
    if dl.device_id:
        point.field("device_id", _one_line(dl.device_id))
    return str(point.to_line_protocol())


def _one_line(text: str) -> str:
    """Line protocol cannot carry newlines in string fields; show them as ``\\n``."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def health_lines(sample: HealthSample) -> list[str]:
    ts = _ns(sample.ts)
    health = (
        Point(PIPELINE_HEALTH.name)
        .tag("worker", sample.worker)
        .field("readings_in", sample.readings_in)
        .field("readings_accepted", sample.readings_accepted)
        .field("dead_letters", sample.dead_letters)
        .field("readings_windowed", sample.readings_windowed)
        .field("readings_resent", sample.readings_resent)
        .field("metrics_emitted", sample.metrics_emitted)
        .field("points_written", sample.points_written)
        .field("metric_points_written", sample.metric_points_written)
        .field("sink_write_errors", sample.sink_write_errors)
        .field("consumer_lag", sum(sample.consumer_lag.values()))
        .field("http_requests", sample.http_requests)
        .field("http_readings_in", sample.http_readings_in)
        .field("http_readings_accepted", sample.http_readings_accepted)
        .field("http_duplicates", sample.http_duplicates)
        .field("uptime_s", (sample.ts - sample.started_at).total_seconds())
        .time(ts, WritePrecision.NS)
    )
    lines = [str(health.to_line_protocol())]
    for topic_partition, lag in sorted(sample.consumer_lag.items()):
        topic, _, partition = topic_partition.rpartition(":")
        lines.append(
            str(
                Point(CONSUMER_LAG.name)
                .tag("worker", sample.worker)
                .tag("topic", topic)
                .tag("partition", partition)
                .field("lag_messages", lag)
                .time(ts, WritePrecision.NS)
                .to_line_protocol()
            )
        )
    return lines


def camera_health_line(health: CameraHealth) -> str:
    point = (
        Point(CAMERA_HEALTH.name)
        .tag("camera", health.camera_id)
        .tag("worker", health.worker)
        .field("frames", health.frames)
        .field("fps", float(health.fps))
        .field("frozen", int(health.frozen))
        .field("rejected", health.rejected)
        .time(_ns(health.ts), WritePrecision.NS)
    )
    if health.intersection is not None:
        point.tag("intersection", health.intersection)
    optional = {"inference_ms": health.inference_ms, "lag_s": health.lag_s,
                "queue_length_m": health.queue_length_m}
    for name, value in optional.items():
        if value is not None:
            point.field(name, float(value))
    if health.queue_vehicles is not None:
        point.field("queue_vehicles", health.queue_vehicles)
    return str(point.to_line_protocol())


def detector_health_line(health: DetectorHealth) -> str:
    return str(
        Point(DETECTOR_HEALTH.name)
        .tag("site", health.site).tag("intersection", health.intersection)
        .tag("approach", health.approach).tag("lane", health.lane)
        .tag("device", health.device_id).tag("kind", health.kind)
        .field("readings", health.readings)
        .field("silent_s", float(health.silent_s))
        .field("dead", int(health.dead))
        .field("stuck_on", int(health.stuck_on))
        .field("stuck_off", int(health.stuck_off))
        .time(_ns(health.ts), WritePrecision.NS)
        .to_line_protocol()
    )


def timing_lines(r: TimingRecommendation,
                 position_deg: tuple[float, float] | None = None) -> list[str]:
    """A recommendation, its phases and its approaches; ``position_deg`` (latitude,
    longitude) puts the intersection on the control room's map."""
    ts = _ns(r.ts)
    max_ds = max((a.degree_of_saturation for a in r.approaches.values()), default=0.0)
    running_max_ds = max((a.degree_of_saturation for a in r.running_approaches.values()),
                         default=0.0)
    head = (
        Point(TIMING_RECOMMENDATIONS.name)
        .tag("site", r.site).tag("intersection", r.intersection)
        .tag("status", r.status).tag("mode", r.mode)
        .field("cycle_s", float(r.cycle_s)).field("offset_s", float(r.offset_s))
        .field("running_cycle_s", float(r.running_cycle_s))
        .field("expected_delay_s", float(r.expected_delay_s))
        .field("running_delay_s", float(r.running_delay_s))
        .field("max_degree_of_saturation", float(max_ds))
        .field("running_max_degree_of_saturation", float(running_max_ds))
        .field("reasons", _one_line(" | ".join(r.reasons))[:4000])
        .time(ts, WritePrecision.NS))
    if position_deg is not None:
        head.field("latitude", float(position_deg[0]))
        head.field("longitude", float(position_deg[1]))
    lines = [str(head.to_line_protocol())]
    for phase, green in r.greens_s.items():
        point = (Point(TIMING_PHASES.name)
                 .tag("site", r.site).tag("intersection", r.intersection).tag("phase", phase)
                 .field("green_s", float(green))
                 .field("running_green_s", float(r.running_greens_s.get(phase, green)))
                 .time(ts, WritePrecision.NS))
        if phase in r.flow_ratios:
            point.field("flow_ratio", float(r.flow_ratios[phase]))
        lines.append(str(point.to_line_protocol()))
    for approach, assessed in r.approaches.items():
        running = r.running_approaches.get(approach, assessed)
        lines.append(str(
            Point(TIMING_APPROACHES.name)
            .tag("site", r.site).tag("intersection", r.intersection).tag("approach", approach)
            .field("flow_pcu_per_hour", float(assessed.flow_pcu_per_hour))
            .field("degree_of_saturation", float(assessed.degree_of_saturation))
            .field("running_degree_of_saturation", float(running.degree_of_saturation))
            .field("delay_s", float(assessed.delay_s))
            .field("running_delay_s", float(running.delay_s))
            .time(ts, WritePrecision.NS).to_line_protocol()))
    return lines
