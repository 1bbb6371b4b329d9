"""The Faust application: topics, the windows table and the agents.

    sensor-readings ─ingest─▶ normalised-readings ─metrics─▶ approach-metrics ─sink─▶ InfluxDB
          │ invalid              ▲ ▲ watermark ticks │ late
          └────────────▶ dead-letters ◀──────────────┘
    camera-frames ─counting─┘ (line counts, source=camera) ─▶ vehicle-crossings
          │ bad frames ─▶ dead-letters
    approach-metrics ─timing─▶ timing-recommendations (every few cycles per intersection)
    signal-plans (controllers' PlanReport) ─plans─▶ the timing agent's running plans
    dead-letters, pipeline-health, camera-health, detector-health,
    timing-recommendations ─sink─▶ InfluxDB

``create_app`` builds everything from explicit settings, a site and a sink, so tests and the
demo can run several independent apps; nothing lives in module globals.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import faust
from faust.types import EventT, StreamT
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from simpang.detector_health import DetectorMonitor, DetectorThresholds
from simpang.devices import DevicesFile, TokenRegistry
from simpang.records import (
    METRICS_LIST,
    ApproachMetrics,
    CameraHealth,
    DeadLetter,
    DetectorHealth,
    HealthSample,
    MetricsInput,
    ReadingsBatch,
    RejectReason,
    TimingRecommendation,
    WatermarkTick,
)
from simpang.settings import Settings
from simpang.site import Site
from simpang.windows import WindowedAggregator
from streams.counting import CameraCounting, RawFrame
from streams.health import PipelineCounters, consumer_lag
from streams.http_ingest import HttpIngest, add_views
from streams.ingest import ReadingValidator, validate_plan_report
from streams.kafka import faust_credentials
from streams.metrics import PipelineCollector, add_metrics_view, metrics_registry
from streams.points import (
    approach_metrics_line,
    camera_health_line,
    dead_letter_line,
    detector_health_line,
    health_lines,
    timing_lines,
)
from streams.sink import PermanentSinkError, PointSink, RetryableSinkError, sink_from_settings
from streams.timing import TimingService
from streams.transport import (
    GuardedRecovery,
    GuardedTableManager,
    SimpangFaustApp,
    recovery_diagnostics,
)
from streams.watermarks import Decision, PartitionView, TickGate

log = logging.getLogger("simpang.streams")

TICK = WatermarkTick().model_dump_json().encode()
RESTART_TICK = WatermarkTick(restart_idle=True).model_dump_json().encode()


@dataclass
class SimpangApp:
    """The Faust app plus the parts tests and the CLI need to reach."""

    faust_app: faust.App
    settings: Settings
    site: Site
    sink: PointSink
    counters: PipelineCounters
    camera_counting: CameraCounting | None = None
    timing: TimingService | None = None
    metrics: CollectorRegistry | None = None


def create_app(settings: Settings, site: Site, *, sink: PointSink | None = None,
               on_recovery_stalled: Callable[[], None] | None = None) -> SimpangApp:
    """The Faust app and its agents. ``on_recovery_stalled`` is called when a table recovery
    has gone ``kafka.recovery_stall_s`` without one changelog record (``simpang worker``
    exits so that its supervisor starts it again); unset, the stall is only logged."""
    topics = settings.topics
    app = SimpangFaustApp(
        settings.app_id,
        fetch_max_wait_ms=settings.kafka.fetch_max_wait_ms,
        broker=[f"kafka://{broker}" for broker in settings.kafka.broker_list()],
        broker_credentials=faust_credentials(settings.kafka),
        store="memory://",
        topic_partitions=topics.partitions,
        topic_replication_factor=topics.replication_factor,
        broker_rebalance_timeout=settings.kafka.rebalance_timeout_s,
        broker_session_timeout=settings.kafka.session_timeout_s,
        broker_heartbeat_interval=settings.kafka.heartbeat_interval_s,
        consumer_auto_offset_reset="earliest",
        web_enabled=settings.web_port is not None,
        web_port=settings.web_port or 6066,
        web_bind=settings.web_bind,
        web_application_options={"client_max_size": settings.ingest.max_body_bytes},
        datadir=str(settings.data_dir / settings.app_id),
        autodiscover=False,
        TableManager=GuardedTableManager,
    )
    counters = PipelineCounters()
    point_sink = sink or sink_from_settings(
        settings.influx, settings.data_dir / settings.app_id / "metrics.lp"
    )

    def raw_topic(name: str) -> faust.TopicT:
        return app.topic(
            topics.name(name),
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=topics.partitions,
        )

    sensor_readings = raw_topic("sensor_readings")
    normalised_readings = raw_topic("normalised_readings")
    approach_metrics = raw_topic("approach_metrics")
    dead_letters = raw_topic("dead_letters")
    pipeline_health = raw_topic("pipeline_health")
    camera_frames = raw_topic("camera_frames")
    vehicle_crossings = raw_topic("vehicle_crossings")
    camera_health = raw_topic("camera_health")
    detector_health = raw_topic("detector_health")
    timing_recommendations = raw_topic("timing_recommendations")
    signal_plans = raw_topic("signal_plans")
    windows_table = app.Table(
        "windows",  # Faust names the changelog "{app_id}-windows-changelog"
        default=None,
        partitions=topics.partitions,
        key_type=str,
    )
    validator = ReadingValidator(site, max_future_skew_s=settings.windows.max_future_skew_s)
    diagnostics = settings.diagnostics
    detector_monitor = DetectorMonitor(site, DetectorThresholds(
        dead_after_s=diagnostics.dead_after_s,
        stuck_on_occupancy_pct=diagnostics.stuck_on_occupancy_pct,
        stuck_on_after_s=diagnostics.stuck_on_after_s,
        stuck_off_after_s=diagnostics.stuck_off_after_s,
    ))
    # Per readings partition: the last offset the ingest agent has handled completely.
    ingested: dict[int, int] = {}
    aggregator = WindowedAggregator(
        site.id,
        settings.windows.specs(),
        grace_s=settings.windows.grace_s,
        pcu=site.pcu_factors,
        protection=site.approach_protection(),
    )

    async def dead_letter(dl: DeadLetter) -> None:
        counters.dead_letters += 1
        counters.dead_letters_by_reason[dl.reason_code.value] += 1
        log.info("dead letter %s (%s): %s", dl.id, dl.reason_code.value, dl.reason,
                 extra={"device": dl.device_id} if dl.device_id else None)
        await dead_letters.send(
            key=(dl.device_id or dl.source).encode(), value=dl.model_dump_json().encode()
        )

    if settings.web_port is not None:
        devices_file = settings.ingest.devices_file
        registry = TokenRegistry(DevicesFile.load(devices_file) if devices_file
                                 else DevicesFile())
        if not len(registry):
            log.warning("HTTP ingest: no device tokens (SIMPANG_INGEST__DEVICES_FILE); every "
                        "request to /v1/readings will be refused")
        add_views(app, HttpIngest(validator, registry,
                                  max_body_bytes=settings.ingest.max_body_bytes),
                  sensor_readings=sensor_readings, signal_plans=signal_plans,
                  dead_letter=dead_letter, counters=counters,
                  worker=settings.worker_id, produce_timeout_s=settings.ingest.produce_timeout_s)

    @app.agent(sensor_readings, name="ingest")
    async def ingest(stream: StreamT[bytes]) -> None:
        async for event in stream.events():
            message = event.message
            result = validator.validate(
                event.value,
                source=f"kafka:{message.topic}",
                message_id=f"{message.topic}:{message.partition}:{message.offset}",
                received_at=datetime.fromtimestamp(message.timestamp, UTC),
            )
            counters.readings_in += result.readings_in
            counters.readings_accepted += result.accepted
            for intersection, readings in result.by_intersection.items():
                batch = ReadingsBatch(
                    source_partition=message.partition,
                    source_offset=message.offset,
                    readings=readings,
                )
                await normalised_readings.send(
                    key=intersection.encode(),
                    value=batch.model_dump_json().encode(),
                    timestamp=time.time(),
                )
            for dl in result.dead_letters:
                await dead_letter(dl)
            ingested[message.partition] = message.offset

    @app.agent(normalised_readings, name="metrics")
    async def metrics(stream: StreamT[bytes]) -> None:
        async for event in stream.events():
            message = event.message
            message_id = f"{message.topic}:{message.partition}:{message.offset}"
            arrival_ms = message.timestamp * 1000
            try:
                item = MetricsInput.validate_json(event.value)
            except ValidationError as exc:
                await dead_letter(
                    DeadLetter.of(
                        id=message_id, source=f"kafka:{message.topic}",
                        reason_code=RejectReason.MALFORMED, reason=str(exc), raw=event.value,
                    )
                )
                continue
            if isinstance(item, WatermarkTick):
                out = aggregator.on_tick(windows_table, message.partition, arrival_ms=arrival_ms,
                                         restart_idle=item.restart_idle)
            else:
                wall_s = time.time()
                for reading in item.readings:
                    detector_monitor.observe(reading, wall_s=wall_s)
                out = aggregator.on_batch(
                    windows_table, message.partition, item, arrival_ms=arrival_ms
                )
                if not out.replayed:
                    counters.readings_windowed += len(item.readings) - out.resent
                    counters.readings_resent += out.resent
            for index, (reading, reason) in enumerate(out.late):
                await dead_letter(
                    DeadLetter.of(
                        id=f"{message_id}:late:{index}", source=f"kafka:{message.topic}",
                        reason_code=RejectReason.LATE, reason=reason,
                        raw=reading.model_dump_json(), device_id=reading.device_id,
                        ts=datetime.fromtimestamp(message.timestamp, UTC),
                    )
                )
            # One message per intersection and close: consumers (sink, timing) want an
            # intersection's approaches together, and a send per row costs more than the row.
            # The rows wait in the windows table until the broker has them; after a crash
            # the first message of the partition sends what was left (an idempotent repeat
            # at worst).
            unsent = aggregator.unsent(windows_table, message.partition)
            if not unsent:
                continue
            by_intersection: dict[str, list[ApproachMetrics]] = {}
            for metric in unsent:
                by_intersection.setdefault(metric.intersection, []).append(metric)
            deliveries = []
            for intersection, rows in by_intersection.items():
                counters.metrics_emitted += len(rows)
                deliveries.append(await approach_metrics.send(
                    key=intersection.encode(), value=METRICS_LIST.dump_json(rows)
                ))
            await asyncio.gather(*deliveries)
            aggregator.mark_sent(windows_table, message.partition)

    tick_gate = TickGate(
        settle_s=settings.windows.resume_settle_s,
        # A long poll answers at least every fetch_max_wait_ms, data or not.
        stale_after_s=2.0 + 4 * settings.kafka.fetch_max_wait_ms / 1000,
        max_backlog_age_s=max(0.5, settings.windows.grace_s / 2),
    )

    def readings_partitions() -> dict[int, PartitionView] | None:
        """This worker's view of its readings partitions; None while it cannot tell."""
        readings_topic = sensor_readings.get_topic_name()
        consumer = app.consumer
        views = {}
        try:
            for tp in app.assignor.assigned_actives():
                if tp.topic != readings_topic:
                    continue
                # Faust keeps no public accessor for these two.
                committed = consumer._committed_offset.get(tp)
                polled_ms = consumer._thread._ensure_consumer().last_poll_timestamp(tp)
                handled = ingested.get(tp.partition, -1)
                if committed is not None:
                    handled = max(handled, committed - 1)
                views[tp.partition] = PartitionView(
                    highwater=consumer.highwater(tp),
                    polled_s=polled_ms / 1000 if polled_ms is not None else None,
                    handled_offset=handled)
        except Exception:  # mid-rebalance: the consumer and the assignor disagree
            return None
        return views

    last_decision: Decision | None = None

    @app.timer(interval=settings.windows.tick_interval_s)
    async def watermark_ticks() -> None:
        nonlocal last_decision
        decision = tick_gate.decide(readings_partitions(), now_s=time.time())
        if decision != last_decision:
            # Transitions only: a hold is rare and worth seeing, the ticks themselves are not.
            log.info("watermark ticks: %s%s", decision,
                     f" (readings partitions {tick_gate.behind} behind)"
                     if decision == "hold" else "")
            last_decision = decision
        if decision == "hold":
            return
        tick = TICK if decision == "advance" else RESTART_TICK
        for tp in app.assignor.assigned_actives():
            if tp.topic == normalised_readings.get_topic_name():
                await normalised_readings.send(
                    value=tick, partition=tp.partition, timestamp=time.time()
                )

    @app.on_partitions_revoked.connect
    async def restart_tick_gate(app: Any, revoked: Any, **kwargs: Any) -> None:
        ingested.clear()
        tick_gate.reset()

    recovery = cast(GuardedRecovery, app.tables.recovery)

    reseeked_at_stall_s = 0.0

    @app.timer(interval=0.5)
    async def recovery_watchdog() -> None:
        # Faust's recovery has been seen (rarely, after a takeover) to wait forever for
        # changelog records its consumer had dropped; seeking the changelogs again is the
        # first remedy, a fresh process (and rebalance) the second.
        nonlocal reseeked_at_stall_s
        stalled_s = recovery.stalled_for_s()
        if stalled_s < settings.kafka.recovery_stall_s / 2:
            reseeked_at_stall_s = 0.0
            return
        if not reseeked_at_stall_s:
            reseeked_at_stall_s = stalled_s
            log.warning("table recovery stalled: no changelog record in %.1f s (%s)",
                        stalled_s, recovery_diagnostics(app))
            try:
                offsets = await asyncio.wait_for(recovery.reseek_changelogs(),
                                                 settings.kafka.recovery_stall_s)
            except Exception:  # the restart below is still to come
                log.exception("seeking the changelogs again failed")
            else:
                log.warning("changelog partitions sought again: %s",
                            {f"{tp.topic}:{tp.partition}": o for tp, o in offsets.items()})
            return
        if stalled_s >= settings.kafka.recovery_stall_s:
            log.error("table recovery still stalled %.1f s after seeking the changelogs "
                      "again (%s)", stalled_s, recovery_diagnostics(app))
            if on_recovery_stalled is not None:
                on_recovery_stalled()

    lag_topics = {topics.name(t) for t in ("sensor_readings", "normalised_readings",
                                           "approach_metrics", "dead_letters",
                                           "pipeline_health", "camera_frames")}

    @app.timer(interval=settings.health_interval_s)
    async def health() -> None:
        lag = {f"{topic}:{partition}": behind
               for (topic, partition), behind in consumer_lag(app, lag_topics).items()}
        readings_topic = sensor_readings.get_topic_name()
        position = {f"{readings_topic}:{partition}": view.handled_offset + 1
                    for partition, view in (readings_partitions() or {}).items()}
        sample = counters.sample(settings.worker_id, lag, ingest_position=position)
        await pipeline_health.send(
            key=settings.worker_id.encode(), value=sample.model_dump_json().encode()
        )
        for detector in detector_monitor.sample(worker=settings.worker_id, wall_s=time.time()):
            await detector_health.send(key=detector.device_id.encode(),
                                       value=detector.model_dump_json().encode())

    @app.on_partitions_revoked.connect
    async def forget_detectors(app: Any, revoked: Any, **kwargs: Any) -> None:
        # The intersections may now belong to another worker, which reports their detectors.
        detector_monitor.forget()

    camera_counting = None
    has_lines = any(c.counting_lines for i in site.intersections for c in i.cameras)
    if settings.detector.enabled and has_lines and not settings.detector.model_path.is_file():
        # Field data must keep flowing; the frames wait in their topic for a model.
        log.error("camera counting is off: no detector model at %s (set "
                  "SIMPANG_DETECTOR__MODEL_PATH)", settings.detector.model_path)
    elif settings.detector.enabled and has_lines:
        from detectors.onnx_detector import OnnxDetector

        detector = settings.detector
        camera_counting = CameraCounting(
            site,
            OnnxDetector(detector.model_path, layout=detector.layout,
                         confidence=detector.confidence, iou=detector.iou,
                         batch_size=detector.batch_size, threads=detector.threads),
            interval_s=detector.interval_s, frozen_after_s=detector.frozen_after_s,
            max_future_skew_s=settings.windows.max_future_skew_s,
        )
        counting_state = camera_counting

        @app.agent(camera_frames, name="counting")
        async def counting(stream: StreamT[bytes]) -> None:
            events: list[EventT[Any]]
            async for events in stream.take_events(  # type: ignore[assignment]
                detector.batch_size, within=0.05
            ):
                frames = [RawFrame(e.value, dict(e.headers or {}), e.key, e.message.topic,
                                   e.message.partition, e.message.offset) for e in events]
                # Inference off the event loop: heartbeats and other agents keep running.
                out = await asyncio.to_thread(counting_state.process, frames)
                for crossing in out.crossings:
                    await vehicle_crossings.send(key=crossing.camera_id.encode(),
                                                 value=crossing.model_dump_json().encode())
                for intersection, batch in out.batches.items():
                    await normalised_readings.send(key=intersection.encode(),
                                                   value=batch.model_dump_json().encode(),
                                                   timestamp=time.time())
                for dl in out.dead_letters:
                    await dead_letter(dl)

        @app.timer(interval=settings.health_interval_s)
        async def cameras_health() -> None:
            for sample in counting_state.health(settings.worker_id):
                await camera_health.send(key=sample.camera_id.encode(),
                                         value=sample.model_dump_json().encode())

    sink_started = asyncio.Lock()
    started = False

    async def write_with_retry(lines: list[str], *, metric_points: bool) -> bool:
        nonlocal started
        async with sink_started:
            if not started:
                await point_sink.start()
                started = True
        backoff_s = settings.influx.retry_initial_s
        while True:
            try:
                await point_sink.write(lines)
            except RetryableSinkError as exc:
                counters.sink_write_errors += 1
                counters.sink_last_write_failed = True
                log.warning("sink write failed, retrying in %.1f s: %s", backoff_s, exc)
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, settings.influx.retry_max_s)
                continue
            except PermanentSinkError as exc:
                counters.sink_write_errors += 1
                counters.sink_last_write_failed = True
                log.error("sink refused %d points: %s", len(lines), exc)
                return False
            counters.points_written += len(lines)
            counters.sink_last_write_failed = False
            counters.sink_last_success_at = datetime.now(UTC)
            if metric_points:
                counters.metric_points_written += len(lines)
            return True

    def sink_agent(
        topic: faust.TopicT, name: str, to_lines: Callable[[bytes], list[str]],
        *, metric_points: bool = False,
    ) -> None:
        async def write_batch(stream: StreamT[bytes], events: list[EventT[Any]]) -> None:
            lines: list[str] = []
            for event in events:
                try:
                    lines.extend(to_lines(event.value))
                except (ValidationError, ValueError) as exc:
                    await dead_letter(
                        DeadLetter.of(
                            id=f"{event.message.topic}:{event.message.partition}:"
                            f"{event.message.offset}",
                            source=f"kafka:{event.message.topic}",
                            reason_code=RejectReason.MALFORMED, reason=str(exc),
                            raw=event.value,
                        )
                    )
            if (
                lines
                and not await write_with_retry(lines, metric_points=metric_points)
                and topic is not dead_letters
            ):
                await dead_letter(
                    DeadLetter.of(
                        id=f"{name}:{events[0].message.partition}:{events[0].message.offset}",
                        source=name, reason_code=RejectReason.SINK_REJECTED,
                        reason="InfluxDB refused the batch", raw="\n".join(lines),
                    )
                )
            for event in events:
                await stream.ack(event)

        async def drain(stream: StreamT[bytes]) -> None:
            events: list[EventT[Any]]
            async for events in stream.noack_take(  # type: ignore[assignment]
                settings.influx.batch_max_points, within=settings.influx.batch_max_wait_s
            ):
                counters.sink_backlog_events += len(events)
                try:
                    await write_batch(stream, events)
                finally:  # a cancelled agent must not leave its batch counted
                    counters.sink_backlog_events -= len(events)

        app.agent(topic, name=name)(drain)

    sink_agent(
        approach_metrics, "sink-metrics",
        lambda raw: [approach_metrics_line(m) for m in METRICS_LIST.validate_json(raw)],
        metric_points=True,
    )
    sink_agent(
        dead_letters, "sink-dead-letters",
        lambda raw: [dead_letter_line(DeadLetter.model_validate_json(raw))],
    )
    sink_agent(
        pipeline_health, "sink-health",
        lambda raw: health_lines(HealthSample.model_validate_json(raw)),
    )
    sink_agent(
        camera_health, "sink-camera-health",
        lambda raw: [camera_health_line(CameraHealth.model_validate_json(raw))],
    )
    sink_agent(
        detector_health, "sink-detector-health",
        lambda raw: [detector_health_line(DetectorHealth.model_validate_json(raw))],
    )

    timing = None
    labels = {spec.label for spec in settings.windows.specs()}
    if settings.timing.enabled and settings.timing.window not in labels:
        # A window nobody computes would leave every intersection on "no metrics yet".
        log.error("signal timing is off: timing window %r is not one of the windows %s",
                  settings.timing.window, sorted(labels))
    elif settings.timing.enabled:
        timing = TimingService(site, settings.timing)
        service = timing

        async def publish(made: list[TimingRecommendation]) -> None:
            for recommendation in made:
                log.info("timing %s %s: cycle %.0f s, %s", recommendation.intersection,
                         recommendation.status, recommendation.cycle_s,
                         recommendation.reasons[-1] if recommendation.reasons else "",
                         extra={"intersection": recommendation.intersection})
                await timing_recommendations.send(
                    key=recommendation.intersection.encode(),
                    value=recommendation.model_dump_json().encode())

        @app.agent(approach_metrics, name="timing")
        async def timing_agent(stream: StreamT[bytes]) -> None:
            async for raw in stream:
                try:
                    rows = METRICS_LIST.validate_json(raw)
                except ValidationError as exc:
                    log.error("timing: unreadable approach-metrics message: %s", exc)
                    continue
                await publish(service.on_metrics(rows))

        @app.timer(interval=settings.timing.check_interval_s)
        async def timing_watchdog() -> None:
            await publish(service.on_clock(datetime.now(UTC)))

        @app.agent(signal_plans, name="plans")
        async def plans_agent(stream: StreamT[bytes]) -> None:
            async for event in stream.events():
                message = event.message
                checked = validate_plan_report(
                    event.value, site, source=f"kafka:{message.topic}",
                    message_id=f"{message.topic}:{message.partition}:{message.offset}",
                    received_at=datetime.fromtimestamp(message.timestamp, UTC),
                    max_future_skew_s=settings.windows.max_future_skew_s)
                if isinstance(checked, DeadLetter):
                    await dead_letter(checked)
                elif service.on_plan(checked):
                    log.info("timing %s: controller %s runs cycle %.0f s %s",
                             checked.intersection, checked.device_id, checked.cycle_s,
                             checked.greens_s, extra={"intersection": checked.intersection,
                                                      "device": checked.device_id})

        @app.on_partitions_revoked.connect
        async def forget_timing(app: Any, revoked: Any, **kwargs: Any) -> None:
            # Another worker owns these intersections now; it will speak for them.
            service.forget()

    positions = {i.id: (i.lat, i.lon) for i in site.intersections}

    def timing_to_lines(raw: bytes) -> list[str]:
        recommendation = TimingRecommendation.model_validate_json(raw)
        return timing_lines(recommendation, positions.get(recommendation.intersection))

    sink_agent(timing_recommendations, "sink-timing", timing_to_lines)

    registry = metrics_registry(PipelineCollector(
        counters, worker=settings.worker_id, lag=lambda: consumer_lag(app, lag_topics),
        cameras=camera_counting.totals if camera_counting else None))
    if settings.web_port is not None:
        add_metrics_view(app, registry)
    return SimpangApp(app, settings, site, point_sink, counters, camera_counting, timing,
                      registry)

