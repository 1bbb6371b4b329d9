"""``simpang demo``: an embedded broker, one worker and emulated field devices for the demo
site, replayed faster than real time so that the simulated clock ends at *now*, with a live
terminal view of per-approach flows.

Everything it starts is stopped on the way out (normal end, ``--duration``, Ctrl-C or an
error), and every child dies with it even if it is killed outright.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from simpang.records import METRICS_LIST, ApproachMetrics, DeadLetter, HealthSample
from simpang.settings import Settings
from simpang.site_file import load_site
from simulator.emulator import FieldDeviceEmulator
from streams.embedded import TansuBroker, popen_child, stop_process
from streams.kafka import aiokafka_kwargs, ensure_topics


@dataclass
class DemoState:
    readings_sent: int = 0
    messages_sent: int = 0
    dead_letters: int = 0
    dead_letter_reasons: dict[str, int] = field(default_factory=dict)
    metrics_received: int = 0
    metric_points_written: int = 0
    latest: dict[tuple[str, str], ApproachMetrics] = field(default_factory=dict)
    sim_time: datetime | None = None
    last_metric_wall: float = 0.0


def run_demo(
    settings: Settings,
    *,
    duration_s: float,
    out_dir: Path,
    speed: float,
    seed: int,
    live: bool,
    console: Console,
) -> dict[str, Any]:
    site = load_site(settings.site_file)
    out_dir.mkdir(parents=True, exist_ok=True)
    lp_file = (out_dir / "metrics.lp").resolve()
    lp_file.unlink(missing_ok=True)
    state = DemoState()
    started = time.monotonic()
    with TansuBroker() as broker:
        worker_env = dict(os.environ)
        worker_env.update(
            SIMPANG_KAFKA__BROKERS=broker.bootstrap,
            SIMPANG_APP_ID="simpang-demo",
            SIMPANG_DATA_DIR=str((out_dir / "data").resolve()),
            SIMPANG_HEALTH_INTERVAL_S="1",
            SIMPANG_INFLUX__LINE_PROTOCOL_FILE=str(lp_file),
        )
        demo_settings = settings.model_copy(
            update={"kafka": settings.kafka.model_copy(update={"brokers": broker.bootstrap})}
        )
        asyncio.run(ensure_topics(demo_settings))
        with (out_dir / "worker.log").open("wb") as worker_log:
            worker = popen_child(
                [sys.executable, "-m", "simpang", "worker"], env=worker_env, stdout=worker_log
            )
            try:
                asyncio.run(
                    _drive(demo_settings, site.id, FieldDeviceEmulator(site, seed=seed), state,
                           duration_s=duration_s, speed=speed, live=live, console=console,
                           worker_alive=lambda: worker.poll() is None)
                )
            finally:
                worker_exit = stop_process(worker, timeout_s=20.0)
    summary = {
        "readings_in": state.readings_sent,
        "metrics_points": state.metric_points_written if settings.influx.url
        else _count_metric_lines(lp_file),
        "dead_letters": state.dead_letters,
        "dead_letter_reasons": state.dead_letter_reasons,
        "metrics_emitted": state.metrics_received,
        "messages_sent": state.messages_sent,
        "wall_s": round(time.monotonic() - started, 1),
        "simulated_s": round(duration_s * speed),
        "sink": settings.influx.url or str(lp_file),
        "worker_exit_code": worker_exit,
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


async def _drive(
    settings: Settings,
    site_id: str,
    emulator: FieldDeviceEmulator,
    state: DemoState,
    *,
    duration_s: float,
    speed: float,
    live: bool,
    console: Console,
    worker_alive: Any,
) -> None:
    kafka = aiokafka_kwargs(settings.kafka)
    producer = AIOKafkaProducer(**kafka, linger_ms=5)
    consumer = AIOKafkaConsumer(
        settings.topics.name("approach_metrics"),
        settings.topics.name("dead_letters"),
        settings.topics.name("pipeline_health"),
        **kafka,
        group_id=None,
        auto_offset_reset="earliest",
    )
    await producer.start()
    await consumer.start()
    watcher = asyncio.create_task(_watch(consumer, settings, state))
    interval = timedelta(seconds=emulator.interval_s)
    now = datetime.now(UTC).replace(microsecond=0)
    sim_start = now - timedelta(seconds=duration_s * speed)
    wall_start = time.monotonic()
    try:
        with Live(_view(state, site_id), console=console, auto_refresh=False,
                  transient=not live, redirect_stdout=False) as view:
            step = 1
            while True:
                sim_ts = sim_start + step * interval
                if sim_ts > now:
                    break
                await asyncio.sleep(
                    max(0.0, wall_start + step * emulator.interval_s / speed - time.monotonic())
                )
                if not worker_alive():
                    raise RuntimeError("the worker stopped unexpectedly; see worker.log")
                for message in emulator.messages_at(sim_ts):
                    await producer.send(
                        settings.topics.name("sensor_readings"), message.payload,
                        key=message.key.encode(),
                    )
                    state.readings_sent += message.readings
                    state.messages_sent += 1
                state.sim_time = sim_ts
                step += 1
                if live:
                    view.update(_view(state, site_id), refresh=True)
            await producer.flush()
            quiet_since = time.monotonic()
            deadline = time.monotonic() + settings.windows.grace_s / speed + 20.0
            while time.monotonic() < deadline:
                await asyncio.sleep(0.5)
                if live:
                    view.update(_view(state, site_id), refresh=True)
                if state.last_metric_wall > quiet_since:
                    quiet_since = state.last_metric_wall
                if time.monotonic() - quiet_since > 3.0 + settings.windows.grace_s:
                    break
            sink_deadline = time.monotonic() + 30.0
            while (state.metric_points_written < state.metrics_received
                   and time.monotonic() < sink_deadline):
                await asyncio.sleep(0.25)
            view.update(_view(state, site_id), refresh=True)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await consumer.stop()
        await producer.stop()


async def _watch(consumer: AIOKafkaConsumer, settings: Settings, state: DemoState) -> None:
    metrics_topic = settings.topics.name("approach_metrics")
    health_topic = settings.topics.name("pipeline_health")
    async for record in consumer:
        if record.topic == health_topic:
            sample = HealthSample.model_validate_json(record.value)
            state.metric_points_written = max(
                state.metric_points_written, sample.metric_points_written
            )
        elif record.topic == metrics_topic:
            for metric in METRICS_LIST.validate_json(record.value):
                state.metrics_received += 1
                state.last_metric_wall = time.monotonic()
                if metric.lane is None and metric.window == "60s":
                    state.latest[(metric.intersection, metric.approach)] = metric
        else:
            dl = DeadLetter.model_validate_json(record.value)
            state.dead_letters += 1
            reason = dl.reason_code.value
            state.dead_letter_reasons[reason] = state.dead_letter_reasons.get(reason, 0) + 1


def _view(state: DemoState, site_id: str) -> Group:
    clock = state.sim_time.isoformat() if state.sim_time else "starting"
    header = Text(
        f"Simpang demo · site {site_id} · simulated time {clock} · readings sent "
        f"{state.readings_sent} · window metrics {state.metrics_received} · dead letters "
        f"{state.dead_letters}"
    )
    table = Table(title="Latest 60 s window per approach")
    for column in ("intersection", "approach", "window end", "veh/h", "PCU/h", "occupancy %",
                   "speed km/h", "motorcycles %"):
        table.add_column(column, justify="right" if column[0].islower() and " " in column
                         else "left")
    for (intersection, approach), m in sorted(state.latest.items()):
        vehicles = sum(m.counts.values())
        motorcycles = m.counts.get("motorcycle", 0)  # type: ignore[call-overload]
        table.add_row(
            intersection, approach, m.window_end.strftime("%H:%M:%S"),
            f"{m.flow_veh_per_hour:.0f}", f"{m.flow_pcu_per_hour:.0f}",
            f"{m.occupancy_pct:.1f}" if m.occupancy_pct is not None else "-",
            f"{m.mean_speed_kmh:.1f}" if m.mean_speed_kmh is not None else "-",
            f"{100 * motorcycles / vehicles:.0f}" if vehicles else "-",
        )
    return Group(header, table)


def _count_metric_lines(lp_file: Path) -> int:
    if not lp_file.exists():
        return 0
    with lp_file.open(encoding="utf-8") as handle:
        return sum(1 for line in handle if line.startswith("approach_metrics,"))

