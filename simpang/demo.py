"""``simpang demo``: an embedded broker, one worker, and a bundled SUMO scenario whose loop
detectors and radars publish to it, run faster than real time so that the simulated clock ends
at *now* (or over a chosen time of day), with a live terminal view of per-approach flows and
the signal phase each intersection is in.

About 1 % of readings are broken on purpose (:class:`simulator.faults.FaultInjector`) so the
dead-letter path shows too. Everything it starts is stopped on the way out (normal end,
``--duration``, Ctrl-C or an error), and every child dies with it even if it is killed
outright.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml
from aiokafka import AIOKafkaConsumer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from simpang.devices import DevicesFile, issue_token
from simpang.records import (
    METRICS_LIST,
    ApproachMetrics,
    DeadLetter,
    HealthSample,
    TimingRecommendation,
)
from simpang.settings import Settings
from simulator.faults import DeviceMessage, FaultInjector
from simulator.simulate import (
    ResolvedScenario,
    latest_day_ending_before,
    resolve_scenario,
    run_simulation,
)
from simulator.stream_io import HttpDeviceSink, KafkaSink, MessageSink, StreamMessage
from simulator.sumo_run import SumoRun
from streams.embedded import broker_from_settings, free_port, popen_child, stop_process
from streams.kafka import aiokafka_kwargs, ensure_topics

DETECTOR_INTERVAL_S = 30.0


@dataclass
class DemoState:
    readings_sent: int = 0
    messages_sent: int = 0
    dead_letters: int = 0
    dead_letter_reasons: dict[str, int] = field(default_factory=dict)
    metrics_received: int = 0
    metric_points_written: int = 0
    latest: dict[tuple[str, str], ApproachMetrics] = field(default_factory=dict)
    phases: dict[str, str] = field(default_factory=dict)
    timing: dict[str, TimingRecommendation] = field(default_factory=dict)
    recommendations: int = 0
    sim_time: datetime | None = None
    last_metric_wall: float = 0.0


def demo_window(
    now: datetime, simulated_s: float, timezone: str, *, begin_s: float | None = None,
    interval_s: float = DETECTOR_INTERVAL_S,
) -> tuple[datetime, float]:
    """``(day, begin_s)``: the local midnight and the second of that day the demo starts at.

    Without ``begin_s`` the span ends at most one detector interval before ``now`` (it
    starts on an interval boundary, so every reading covers a whole interval); a span that
    would start before midnight covers the first ``simulated_s`` of yesterday instead. With
    ``begin_s`` (a time of day) it is the latest day on which the whole span is past.

    >>> now = datetime(2026, 11, 24, 9, 0, 10, tzinfo=UTC)  # 17:00:10 in Makassar
    >>> day, begin = demo_window(now, 1800, "Asia/Makassar")
    >>> day.isoformat(), begin / 3600
    ('2026-11-24T00:00:00+08:00', 16.5)
    >>> day, begin = demo_window(now, 1800, "Asia/Makassar", begin_s=17 * 3600)
    >>> day.isoformat(), begin / 3600
    ('2026-11-23T00:00:00+08:00', 17.0)
    """
    if begin_s is not None:
        return latest_day_ending_before(now, begin_s + simulated_s, timezone), begin_s
    local = now.astimezone(ZoneInfo(timezone))
    midnight = datetime(local.year, local.month, local.day, tzinfo=ZoneInfo(timezone))
    start_s = (now - midnight).total_seconds() - simulated_s
    if start_s < 0:
        return latest_day_ending_before(now, simulated_s, timezone), 0.0
    return midnight, math.floor(start_s / interval_s) * interval_s


def run_demo(
    settings: Settings,
    *,
    scenario: str,
    duration_s: float,
    out_dir: Path,
    speed: float,
    seed: int,
    begin_s: float | None = None,
    fault_fraction: float = 0.01,
    live: bool,
    console: Console,
    ingest: str = "kafka",
) -> dict[str, Any]:
    resolved = resolve_scenario(scenario, settings.data_dir / "scenarios")
    out_dir.mkdir(parents=True, exist_ok=True)
    lp_file = (out_dir / "metrics.lp").resolve()
    lp_file.unlink(missing_ok=True)
    simulated_s = duration_s * speed
    day, begin = demo_window(datetime.now(UTC), simulated_s, resolved.site.timezone,
                             begin_s=begin_s)
    run = SumoRun(resolved.site, resolved.sumocfg, (out_dir / "sumo").resolve(), seed=seed,
                  begin_s=begin, end_s=begin + simulated_s, interval_s=DETECTOR_INTERVAL_S,
                  day=day)
    state = DemoState()
    started = time.monotonic()
    with broker_from_settings(settings.broker) as broker:
        worker_env = dict(os.environ)
        worker_env.update(
            SIMPANG_KAFKA__BROKERS=broker.bootstrap,
            SIMPANG_APP_ID="simpang-demo",
            SIMPANG_SITE_FILE=str(resolved.site_file.resolve()),
            SIMPANG_DATA_DIR=str((out_dir / "data").resolve()),
            SIMPANG_HEALTH_INTERVAL_S="1",
            SIMPANG_INFLUX__LINE_PROTOCOL_FILE=str(lp_file),
        )
        http: tuple[str, str] | None = None
        if ingest == "http":
            # One gateway token for the site's detectors; only its hash is written down.
            token, entry = issue_token("demo-gateway", devices=["*"],
                                       max_readings_per_s=100_000, burst_readings=100_000)
            devices_file = (out_dir / "data" / "devices.yaml").resolve()
            devices_file.parent.mkdir(parents=True, exist_ok=True)
            devices_file.write_text(yaml.safe_dump(DevicesFile(tokens=[entry]).model_dump(
                mode="json", exclude_none=True)))
            web_port = free_port()
            worker_env.update(SIMPANG_WEB_PORT=str(web_port),
                              SIMPANG_INGEST__DEVICES_FILE=str(devices_file))
            http = (f"http://127.0.0.1:{web_port}", token)
        demo_settings = settings.model_copy(update={
            "kafka": settings.kafka.model_copy(update={"brokers": broker.bootstrap}),
            "site_file": resolved.site_file,
        })
        asyncio.run(ensure_topics(demo_settings))
        with (out_dir / "worker.log").open("wb") as worker_log:
            worker = popen_child(
                [sys.executable, "-m", "simpang", "worker"], env=worker_env, stdout=worker_log
            )
            faults = FaultInjector(fraction=fault_fraction, seed=seed)
            try:
                with _interrupt_raises():
                    asyncio.run(
                        _drive(demo_settings, resolved, run, faults, state, speed=speed,
                               live=live, console=console,
                               worker_alive=lambda: worker.poll() is None, http=http)
                    )
            finally:
                worker_exit = stop_process(worker, timeout_s=20.0)
    summary = {
        "scenario": resolved.name,
        "site": resolved.site.id,
        "simulated_from": run.timestamp(begin).isoformat(),
        "simulated_s": round(simulated_s),
        "sensors": sum(len(i.sensors) for i in resolved.site.intersections),
        "readings_in": state.readings_sent,
        "faults_injected": faults.injected,
        "metrics_points": state.metric_points_written if settings.influx.url
        else _count_metric_lines(lp_file),
        "dead_letters": state.dead_letters,
        "dead_letter_reasons": state.dead_letter_reasons,
        "metrics_emitted": state.metrics_received,
        "timing_recommendations": state.recommendations,
        "messages_sent": state.messages_sent,
        "ingest": ingest,
        "broker_storage": (f"s3 {settings.broker.s3_endpoint or 'local'}"
                           if settings.broker.durable else "memory"),
        "wall_s": round(time.monotonic() - started, 1),
        "sink": settings.influx.url or str(lp_file),
        "worker_exit_code": worker_exit,
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


class _FaultySink:
    """Publishes detector readings with a few broken on purpose, counting what it sends."""

    def __init__(self, kafka: MessageSink, faults: FaultInjector, state: DemoState) -> None:
        self._kafka = kafka
        self._faults = faults
        self._state = state

    async def send(self, message: StreamMessage) -> None:
        readings = len(json.loads(message.value))
        for sent in self._faults.apply([DeviceMessage(message.key, message.value, readings)]):
            await self._kafka.send(StreamMessage(message.t_s, message.topic, sent.key,
                                                 sent.payload))
            self._state.readings_sent += sent.readings
            self._state.messages_sent += 1

    async def close(self) -> None:
        await self._kafka.close()


@contextlib.contextmanager
def _interrupt_raises() -> Iterator[None]:
    """Ctrl-C raises KeyboardInterrupt wherever the event loop is. ``asyncio.run``'s own
    handler only cancels the main task, and a cancellation that lands while the Kafka
    clients start can be lost (the demo then ran on after Ctrl-C)."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


async def _drive(
    settings: Settings,
    scenario: ResolvedScenario,
    run: SumoRun,
    faults: FaultInjector,
    state: DemoState,
    *,
    speed: float,
    live: bool,
    console: Console,
    worker_alive: Callable[[], bool],
    http: tuple[str, str] | None = None,
) -> None:
    consumer = AIOKafkaConsumer(
        settings.topics.name("approach_metrics"),
        settings.topics.name("dead_letters"),
        settings.topics.name("pipeline_health"),
        settings.topics.name("timing_recommendations"),
        **aiokafka_kwargs(settings.kafka),
        group_id=None,
        auto_offset_reset="earliest",
    )
    devices: MessageSink
    if http is None:
        kafka = KafkaSink(settings)
        await kafka.start()
        devices = kafka
    else:
        await _wait_for_web(http[0], worker_alive)
        devices = HttpDeviceSink(http[0], http[1])
    await consumer.start()
    sink = _FaultySink(devices, faults, state)
    watcher = asyncio.create_task(_watch(consumer, settings, state))
    title = f"{scenario.site.name} ({scenario.name})"
    zone = ZoneInfo(scenario.site.timezone)
    try:
        with Live(_view(state, title, zone), console=console, auto_refresh=False,
                  transient=not live, redirect_stdout=False) as view:

            def on_interval(t_s: float, _: object) -> None:
                if not worker_alive():
                    raise RuntimeError("the worker stopped unexpectedly; see worker.log")
                state.sim_time = run.timestamp(t_s)
                if run.signals is not None:
                    state.phases = {i: run.signals.current_phase(i)
                                    for i in run.signals.intersections}
                if live:
                    view.update(_view(state, title, zone), refresh=True)

            with run:
                await run_simulation(run, [sink], speed=speed, on_interval=on_interval)
            await sink.close()
            quiet_since = time.monotonic()
            deadline = time.monotonic() + settings.windows.grace_s / speed + 20.0
            while time.monotonic() < deadline:
                await asyncio.sleep(0.5)
                if live:
                    view.update(_view(state, title, zone), refresh=True)
                if state.last_metric_wall > quiet_since:
                    quiet_since = state.last_metric_wall
                if time.monotonic() - quiet_since > 3.0 + settings.windows.grace_s:
                    break
            sink_deadline = time.monotonic() + 30.0
            while (state.metric_points_written < state.metrics_received
                   and time.monotonic() < sink_deadline):
                await asyncio.sleep(0.25)
            view.update(_view(state, title, zone), refresh=True)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await consumer.stop()
        await devices.close()


async def _watch(consumer: AIOKafkaConsumer, settings: Settings, state: DemoState) -> None:
    metrics_topic = settings.topics.name("approach_metrics")
    health_topic = settings.topics.name("pipeline_health")
    timing_topic = settings.topics.name("timing_recommendations")
    async for record in consumer:
        if record.topic == health_topic:
            sample = HealthSample.model_validate_json(record.value)
            state.metric_points_written = max(
                state.metric_points_written, sample.metric_points_written
            )
        elif record.topic == timing_topic:
            recommendation = TimingRecommendation.model_validate_json(record.value)
            state.recommendations += 1
            state.timing[recommendation.intersection] = recommendation
        elif record.topic == metrics_topic:
            for metric in METRICS_LIST.validate_json(record.value):
                state.metrics_received += 1
                state.last_metric_wall = time.monotonic()
                # The live table shows the field devices' rows (camera rows have no
                # occupancy and would overwrite them).
                if metric.lane is None and metric.window == "60s" and metric.source == "field":
                    state.latest[(metric.intersection, metric.approach)] = metric
        else:
            dl = DeadLetter.model_validate_json(record.value)
            state.dead_letters += 1
            reason = dl.reason_code.value
            state.dead_letter_reasons[reason] = state.dead_letter_reasons.get(reason, 0) + 1


def _view(state: DemoState, title: str, zone: ZoneInfo) -> Group:
    clock = state.sim_time.isoformat() if state.sim_time else "starting"
    phases = " · ".join(f"{i} {p}" for i, p in sorted(state.phases.items()))
    header = Text(
        f"Simpang demo · {title} · simulated time {clock} · readings sent "
        f"{state.readings_sent} · window metrics {state.metrics_received} · dead letters "
        f"{state.dead_letters}\nsignals: {phases or '-'}"
    )
    table = Table(title="Latest 60 s window per approach (site local time)")
    for column in ("intersection", "approach", "window end", "veh/h", "PCU/h", "occupancy %",
                   "speed km/h", "motorcycles %"):
        table.add_column(column, justify="right" if column[0].islower() and " " in column
                         else "left")
    for (intersection, approach), m in sorted(state.latest.items()):
        vehicles = sum(m.counts.values())
        motorcycles = m.counts.get("motorcycle", 0)  # type: ignore[call-overload]
        table.add_row(
            intersection, approach, m.window_end.astimezone(zone).strftime("%H:%M:%S"),
            f"{m.flow_veh_per_hour:.0f}", f"{m.flow_pcu_per_hour:.0f}",
            f"{m.occupancy_pct:.1f}" if m.occupancy_pct is not None else "-",
            f"{m.mean_speed_kmh:.1f}" if m.mean_speed_kmh is not None else "-",
            f"{100 * motorcycles / vehicles:.0f}" if vehicles else "-",
        )
    return Group(header, table, *(_timing_line(r, zone) for _, r in sorted(state.timing.items())))


def _timing_line(r: TimingRecommendation, zone: ZoneInfo) -> Text:
    """One intersection's latest recommendation, in a line."""
    at = r.ts.astimezone(zone).strftime("%H:%M")
    if r.status == "fallback":
        return Text(f"timing {r.intersection} {at}: keeps its {r.cycle_s:.0f} s plan — "
                    f"{r.reasons[0]}")
    greens = " ".join(f"{p} {g:.0f}" for p, g in r.greens_s.items())
    return Text(f"timing {r.intersection} {at}: cycle {r.cycle_s:.0f} s (was "
                f"{r.running_cycle_s:.0f}), greens {greens}; expected delay "
                f"{r.running_delay_s:.0f} → {r.expected_delay_s:.0f} s/PCU")


def _count_metric_lines(lp_file: Path) -> int:
    if not lp_file.exists():
        return 0
    with lp_file.open(encoding="utf-8") as handle:
        return sum(1 for line in handle if line.startswith("approach_metrics,"))



async def _wait_for_web(url: str, worker_alive: Callable[[], bool], timeout_s: float = 90.0
                        ) -> None:
    """Until the worker's web server answers /v1/health."""
    import aiohttp

    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"{url}/v1/health") as response:
                    if response.status == 200:
                        return
            if not worker_alive() or time.monotonic() > deadline:
                raise RuntimeError("the worker's web server did not come up; see worker.log")
            await asyncio.sleep(0.3)
