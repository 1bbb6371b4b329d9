"""Fault scenarios on real servers, shared by ``tests/test_faults.py`` (asserts) and
``bench/faults.py`` (figures).

A :class:`Rig` owns its own Tansu (memory, or durable on a local S3), InfluxDB 1.6 behind the
v2-write forwarder, and ``simpang worker`` processes; it can stop, kill and restart each of
them. A :class:`Feeder` plays a synthetic site's loop detectors in real time: every detector
reports a 1-s reading each wall second (stamped with that second, and with that second as its
``seq``), one Kafka message per intersection keyed by it, as a signal controller or edge
gateway would. A batch the broker did not acknowledge is sent again after a pause, as a device
gateway would; the broker may have stored it all the same (an acknowledgement lost in a broker
restart), and the ``seq`` is what lets the windows count such a re-send once.

Accounting, the same in every scenario, window by window: *sent* is the readings the broker
acknowledged per (junction, window end); *stored* is the ``readings`` field summed over the
lane rows of that junction's window (10 s, or ``count_window_s``) in InfluxDB once the
pipeline is quiet. ``lost`` adds up what windows are short, ``duplicated`` what they are
over; the two never cancel out. InfluxDB keeps one point per series and timestamp, so a
window written twice (a replay after a crash) is one point; a window counted twice shows as
``duplicated``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from dashboards.influxql import InfluxQL
from simpang.settings import Settings
from simulator.synthetic import APPROACHES, DETECTORS_PER_INTERSECTION, synthetic_site
from streams.embedded import (
    InfluxDB1Server,
    MotoS3Server,
    TansuBroker,
    popen_child,
    stop_process,
)
from streams.kafka import end_offsets_by_fetch, ensure_topics
from streams.worker import EXIT_RECOVERY_STALLED
from tests.influx_v2_forwarder import InfluxV2WriteForwarder

REPO = Path(__file__).resolve().parent.parent
WINDOW_S = 10


def intersection_readings(n: int, second: int) -> list[dict[str, Any]]:
    """Junction ``n``'s eight 1-s readings ending at ``second`` (Unix time), each with the
    second as its detector's sequence number."""
    stamp = datetime.fromtimestamp(second, UTC).isoformat()
    return [{"device_id": f"x{n:03d}-{a[0]}{k}", "kind": "loop", "ts": stamp, "interval_s": 1,
             "seq": second,
             "counts": {"motorcycle": (second + n + k) % 3, "car": (second + k) % 2},
             "occupancy_pct": 10.0 + k, "speed_kmh": 30.0}
            for a in APPROACHES for k in (1, 2)]


class Feeder:
    """Real-time loop detectors of a synthetic site, in a thread with its own event loop."""

    def __init__(self, bootstrap: str, topic: str, intersections: int) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.intersections = intersections
        self.sent_readings = 0
        # (Unix time acknowledged, partition → highest offset acknowledged by then)
        self.acked_offsets: list[tuple[float, dict[int, int]]] = []
        self.sent_seconds: list[int] = []  # reading times, every junction's acknowledged
        self.resent_batches = 0
        self.extra: list[tuple[str, bytes]] = []
        self._extra_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self.error: BaseException | None = None

    def start(self) -> Feeder:
        self._thread.start()
        return self

    def inject(self, messages: list[tuple[str, bytes]]) -> None:
        """Raw messages to send with the next second's readings (bad input, for example)."""
        with self._extra_lock:
            self.extra.extend(messages)

    def acked_by(self, unix_s: float) -> dict[int, int]:
        """Partition → highest offset the broker had acknowledged by ``unix_s``."""
        return max(((t, o) for t, o in self.acked_offsets if t <= unix_s),
                   key=lambda pair: pair[0], default=(0.0, {}))[1]

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(timeout=120)
        if self.error is not None:
            raise RuntimeError("feeder failed") from self.error
        return self.sent_readings

    async def _run(self) -> None:
        try:
            producer = await self._producer()
            try:
                second = int(time.time())
                while not self._stop.is_set():
                    await asyncio.sleep(max(0.0, second + 1 - time.time()))
                    second += 1
                    with self._extra_lock:
                        extra, self.extra = self.extra, []
                    batch = [(f"x{n:03d}", json.dumps(intersection_readings(n, second)).encode())
                             for n in range(self.intersections)]
                    producer, offsets = await self._send(producer, batch + extra)
                    self.sent_readings += len(batch) * DETECTORS_PER_INTERSECTION
                    latest = dict(self.acked_offsets[-1][1]) if self.acked_offsets else {}
                    for partition, offset in offsets.items():
                        latest[partition] = max(offset, latest.get(partition, -1))
                    self.acked_offsets.append((time.time(), latest))
                    self.sent_seconds.append(second)
            finally:
                await producer.stop()
        except BaseException as exc:
            self.error = exc

    async def _producer(self) -> AIOKafkaProducer:
        while True:
            producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all",
                                        linger_ms=5, request_timeout_ms=5000)
            try:
                await producer.start()
                return producer
            except KafkaError:
                await producer.stop()
                await asyncio.sleep(0.5)

    async def _send(self, producer: AIOKafkaProducer, batch: list[tuple[str, bytes]]
                    ) -> tuple[AIOKafkaProducer, dict[int, int]]:
        """Send until the broker acknowledges every message of ``batch``; a message that failed
        is sent again, so it may be stored twice (at-least-once, as devices do). Returns the
        highest offset acknowledged per partition."""
        pending = batch
        offsets: dict[int, int] = {}
        while pending:
            futures = [await producer.send(self.topic, value, key=key.encode())
                       for key, value in pending]
            results = await asyncio.gather(*futures, return_exceptions=True)
            for result in results:
                if not isinstance(result, BaseException):
                    offsets[result.partition] = max(result.offset,
                                                    offsets.get(result.partition, -1))
            pending = [m for m, r in zip(pending, results, strict=True)
                       if isinstance(r, BaseException)]
            if pending:
                self.resent_batches += 1
                await asyncio.sleep(0.5)
                if self._stop.is_set() and self.resent_batches > 200:
                    raise RuntimeError("the broker never came back")
        return producer, offsets


@dataclass
class Worker:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    env: dict[str, str] = field(default_factory=dict)  # its own, beyond the rig's
    started_at: float = field(default_factory=time.monotonic)


class Rig:
    """Servers and workers of one scenario, each of which can be stopped and restarted."""

    def __init__(self, *, intersections: int = 8, durable: bool = False, grace_s: float = 2.0,
                 windows: str = str(WINDOW_S), count_window_s: int = WINDOW_S,
                 **env: str) -> None:
        self.intersections = intersections
        self.count_window_s = count_window_s
        self.workdir = Path(tempfile.mkdtemp(prefix="simpang-faults-"))
        self.name = f"f{uuid.uuid4().hex[:8]}"
        self.workers: dict[str, Worker] = {}
        self.feeder: Feeder | None = None
        self.restarts: list[str] = []  # workers started again after EXIT_RECOVERY_STALLED
        self._closing = threading.Event()
        threading.Thread(target=self._supervise, daemon=True).start()
        # Each server is stopped by close(), also when a later one fails to start.
        self._servers = contextlib.ExitStack()
        try:
            self.s3 = (self._servers.enter_context(MotoS3Server()) if durable else None)
            self.broker = self._servers.enter_context(
                TansuBroker(storage=self.s3.storage() if self.s3 else None))
            self.influx = self._servers.enter_context(InfluxDB1Server())
            self.forwarder = InfluxV2WriteForwarder(self.influx.url).start()
            self._servers.callback(self.forwarder.close)
        except BaseException:
            self._servers.close()
            shutil.rmtree(self.workdir, ignore_errors=True)
            raise
        self.db = InfluxQL(self.influx.url, self.name)
        self.db.create_database()
        site_file = self.workdir / "site.yaml"
        site_file.write_text(yaml.safe_dump(synthetic_site(intersections, site_id="faults")))
        self.env = {
            **os.environ,
            "SIMPANG_KAFKA__BROKERS": self.broker.bootstrap,
            "SIMPANG_APP_ID": self.name,
            "SIMPANG_TOPICS__PREFIX": f"{self.name}-",
            "SIMPANG_SITE_FILE": str(site_file),
            "SIMPANG_INFLUX__URL": self.forwarder.url,
            "SIMPANG_INFLUX__BUCKET": self.name,
            "SIMPANG_INFLUX__RETRY_MAX_S": "2",
            "SIMPANG_DATA_DIR": str(self.workdir / "data"),
            "SIMPANG_HEALTH_INTERVAL_S": "1",
            "SIMPANG_WINDOWS__WINDOWS": windows,
            "SIMPANG_WINDOWS__GRACE_S": str(grace_s),
            "SIMPANG_WINDOWS__TICK_INTERVAL_S": "0.5",
            "SIMPANG_TIMING__ENABLED": "false",
            "SIMPANG_DETECTOR__ENABLED": "false",
            **env,
        }
        self.settings = self._settings()
        asyncio.run(ensure_topics(self.settings))

    def _settings(self) -> Settings:
        saved = dict(os.environ)
        os.environ.update(self.env)
        try:
            return Settings()
        finally:
            os.environ.clear()
            os.environ.update(saved)

    def topic(self, key: str) -> str:
        return self.settings.topics.name(key)

    def start_worker(self, name: str = "w1", **env: str) -> Worker:
        log = self.workdir / f"{name}.log"
        with log.open("ab") as handle:
            process = popen_child([sys.executable, "-m", "simpang", "worker"],
                                  env={**self.env, "SIMPANG_WORKER_ID": name, **env},
                                  stdout=handle, cwd=REPO)
        self.workers[name] = Worker(name, process, log, env)
        return self.workers[name]

    def kill_worker(self, name: str = "w1") -> None:
        worker = self.workers.pop(name)
        worker.process.send_signal(signal.SIGKILL)
        worker.process.wait(timeout=10)

    def terminate_worker(self, name: str = "w1", *, timeout_s: float = 60) -> tuple[int, float]:
        """SIGTERM; returns (exit code, seconds to exit)."""
        worker = self.workers.pop(name)
        started = time.monotonic()
        worker.process.send_signal(signal.SIGTERM)
        code = worker.process.wait(timeout=timeout_s)
        return code, time.monotonic() - started

    def start_feeder(self) -> Feeder:
        self.feeder = Feeder(self.broker.bootstrap, self.topic("sensor_readings"),
                             self.intersections).start()
        return self.feeder

    def _supervise(self) -> None:
        """What a supervisor (compose's ``restart: unless-stopped``) does for a worker that
        asks to be started again; any other exit is left for :meth:`check_workers`."""
        while not self._closing.wait(0.5):
            for name, worker in list(self.workers.items()):
                if (worker.process.poll() == EXIT_RECOVERY_STALLED
                        and self.workers.get(name) is worker):
                    self.restarts.append(name)
                    self.start_worker(name, **worker.env)

    def check_workers(self) -> None:
        for worker in list(self.workers.values()):
            if worker.process.poll() not in (None, EXIT_RECOVERY_STALLED):
                raise AssertionError(f"worker {worker.name} exited with "
                                     f"{worker.process.returncode}:\n{self.log_tail(worker.name)}")

    def log_tail(self, name: str = "w1", lines: int = 40) -> str:
        path = self.workdir / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stored_readings(self) -> int:
        rows = self.db.rows(f"SELECT sum(readings) AS n FROM approach_metrics WHERE level = 'lane' "
                            f"AND \"window\" = '{self.count_window_s}s'")
        return int(rows[0]["n"]) if rows else 0

    def stored_by_window(self) -> Counter[tuple[str, int]]:
        """Readings in InfluxDB per (intersection, window end in Unix seconds)."""
        rows = self.db.rows(f"SELECT readings FROM approach_metrics WHERE level = 'lane' AND "
                            f"\"window\" = '{self.count_window_s}s' GROUP BY intersection")
        stored: Counter[tuple[str, int]] = Counter()
        for row in rows:
            stored[(row["intersection"], int(row["time"] // 1_000_000_000))] += row["readings"]
        return stored

    def readings_resent(self) -> int:
        """Re-sent readings the windows left out, summed over the workers (each worker's
        counter is its largest: it counts up from the worker's start)."""
        rows = self.db.rows("SELECT max(readings_resent) AS n FROM pipeline_health "
                            "GROUP BY worker")
        return sum(int(row["n"] or 0) for row in rows)

    def sent_by_window(self, feeder: Feeder) -> Counter[tuple[str, int]]:
        """Readings the broker acknowledged per (intersection, window end): a reading ending
        at second s is in the window (end − size, end] labelled by its end."""
        size = self.count_window_s
        sent: Counter[tuple[str, int]] = Counter()
        for second in feeder.sent_seconds:
            end = ((second - 1) // size + 1) * size
            for n in range(self.intersections):
                sent[(f"x{n:03d}", end)] += DETECTORS_PER_INTERSECTION
        return sent

    def wait_stored(self, expected: int, *, timeout_s: float = 90, quiet_s: float = 6) -> int:
        """Wait until ``expected`` readings are stored, or the count stops moving for
        ``quiet_s`` after the timeout's first half; returns the stored count."""
        deadline = time.monotonic() + timeout_s
        last, moved = -1, time.monotonic()
        while time.monotonic() < deadline:
            stored = self.stored_readings()
            if stored >= expected:
                time.sleep(quiet_s)  # anything counted twice would arrive now
                return self.stored_readings()
            if stored != last:
                last, moved = stored, time.monotonic()
            elif time.monotonic() - moved > max(quiet_s, timeout_s / 2):
                return stored
            self.check_workers()
            time.sleep(0.5)
        return self.stored_readings()

    def wait_first_rows(self, *, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while self.stored_readings() == 0:
            self.check_workers()
            if time.monotonic() > deadline:
                raise AssertionError(f"no rows after {timeout_s} s:\n{self.log_tail()}")
            time.sleep(0.5)

    def read_topic(self, key: str, *, timeout_s: float = 20) -> list[dict[str, Any]]:
        """Every JSON record a topic holds now: read up to the end offsets taken first."""

        async def go() -> list[dict[str, Any]]:
            consumer = AIOKafkaConsumer(bootstrap_servers=self.broker.bootstrap,
                                        group_id=None, auto_offset_reset="earliest")
            await consumer.start()
            out: list[dict[str, Any]] = []
            try:
                topic = self.topic(key)
                await consumer.topics()  # fetches the metadata partitions_for_topic reads
                partitions = [TopicPartition(topic, p)
                              for p in sorted(consumer.partitions_for_topic(topic) or ())]
                ends = await end_offsets_by_fetch(consumer, partitions)
                await consumer.seek_to_beginning(*partitions)
                deadline = time.monotonic() + timeout_s
                while time.monotonic() < deadline:
                    positions = {tp: await consumer.position(tp) for tp in partitions}
                    if all(positions[tp] >= ends[tp] for tp in partitions):
                        break
                    for records in (await consumer.getmany(timeout_ms=500)).values():
                        out.extend(json.loads(r.value) for r in records)
            finally:
                await consumer.stop()
            return out

        return asyncio.run(go())

    def dead_letters(self) -> list[dict[str, Any]]:
        return self.read_topic("dead_letters")

    def health_samples(self, since_s: float) -> list[dict[str, Any]]:
        """Pipeline-health samples stamped after ``since_s`` (Unix time)."""
        return [s for s in self.read_topic("pipeline_health")
                if datetime.fromisoformat(s["ts"]).timestamp() >= since_s]

    def close(self) -> None:
        self._closing.set()
        if self.feeder is not None:
            with contextlib.suppress(Exception):
                self.feeder.stop()
        for worker in self.workers.values():
            stop_process(worker.process, timeout_s=20)
        self.workers.clear()
        with contextlib.suppress(Exception):
            self.db.drop_database()
        self._servers.close()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Rig:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class Outcome:
    """What a scenario sent, what InfluxDB holds at the end, window by window, and its
    timings. A window short of readings counts in ``lost``, one over in ``duplicated``;
    the two never cancel out."""

    sent: int
    stored: int
    lost: int = 0
    duplicated: int = 0
    timings_s: dict[str, float] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)
    logs: dict[str, str] = field(default_factory=dict, repr=False)
    """The workers' last log lines, kept when a window came out short or over."""

    def report(self) -> str:
        """Everything, untruncated (pytest shortens an object's repr in a failed assert)."""
        lines = [f"sent {self.sent}, stored {self.stored}, lost {self.lost}, "
                 f"duplicated {self.duplicated}", f"timings {self.timings_s}"]
        lines += [f"{key}: {value}" for key, value in self.notes.items()]
        for name, tail in self.logs.items():
            lines += [f"--- {name}.log (last lines)", tail]
        return "\n".join(lines)


def finish(rig: Rig, feeder: Feeder, *, timeout_s: float = 90) -> Outcome:
    sent_total = feeder.stop()
    waited_from = time.monotonic()
    rig.wait_stored(sent_total, timeout_s=timeout_s)
    waited_s = time.monotonic() - waited_from
    sent, stored = rig.sent_by_window(feeder), rig.stored_by_window()
    assert sum(sent.values()) == sent_total
    late = [d for d in rig.dead_letters() if d["reason_code"] == "late"]
    short = sorted((key, n - stored[key]) for key, n in sent.items() if stored[key] < n)
    outcome = Outcome(
        sent=sent_total, stored=sum(stored.values()),
        lost=sum(missing for _, missing in short),
        duplicated=sum(max(0, n - sent[key]) for key, n in stored.items()),
        notes={"late_dead_letters": len(late), "resent_batches": feeder.resent_batches,
               "readings_resent_left_out": rig.readings_resent(),
               "short_windows": short[:5], "worker_restarts": list(rig.restarts),
               "last_window_end": max((end for _, end in sent), default=None),
               "stored_wait_s": round(waited_s, 1),
               "late_reasons": [(d.get("device_id"), d["reason"]) for d in late[:4]]})
    if outcome.lost or outcome.duplicated:
        outcome.logs = {path.stem: rig.log_tail(path.stem, 60)
                        for path in sorted(rig.workdir.glob("*.log"))}
    return outcome


def influx_outage(rig: Rig, *, outage_s: float = 60, before_s: float = 5,
                  after_s: float = 5) -> Outcome:
    """InfluxDB stopped for ``outage_s`` mid-run while readings keep coming, then restarted."""
    rig.start_worker()
    feeder = rig.start_feeder()
    rig.wait_first_rows()
    time.sleep(before_s)
    rig.influx.halt()
    time.sleep(outage_s)
    rig.check_workers()
    rig.influx.start()
    time.sleep(after_s)
    outcome = finish(rig, feeder)
    outcome.timings_s["outage_s"] = outage_s
    return outcome


def worker_kill(rig: Rig, *, before_s: float = 10, down_s: float = 5,
                after_s: float = 10) -> Outcome:
    """The only worker SIGKILLed mid-run and started again ``down_s`` later."""
    rig.start_worker()
    feeder = rig.start_feeder()
    rig.wait_first_rows()
    time.sleep(before_s)
    rig.kill_worker()
    time.sleep(down_s)
    rig.start_worker()
    time.sleep(after_s)
    return finish(rig, feeder)


def takeover(rig: Rig, *, before_s: float = 8, timeout_s: float = 90) -> Outcome:
    """Two workers share the partitions; one is SIGKILLed. ``takeover_s``: from the kill to
    the first health sample in which the survivor holds every partition of the readings topic
    and its ingest agent has handled, on each, every message the broker had acknowledged a
    second before the sample (``ingest_position`` against the feeder's acknowledged
    offsets)."""
    rig.start_worker("w1")
    rig.start_worker("w2")
    feeder = rig.start_feeder()
    rig.wait_first_rows()
    readings_topic = rig.topic("sensor_readings")
    partitions = rig.settings.topics.partitions
    deadline = time.monotonic() + 60
    owners: set[str] = set()
    while len(owners) < 2 and time.monotonic() < deadline:  # both hold partitions
        owners = {s["worker"] for s in rig.health_samples(time.time() - 3)
                  if _readings_partitions(s, readings_topic)}
        time.sleep(1)
    time.sleep(before_s)
    killed_at = time.time()
    rig.kill_worker("w1")
    takeover_s = None
    deadline = time.monotonic() + timeout_s
    while takeover_s is None and time.monotonic() < deadline:
        time.sleep(1)
        for sample in rig.health_samples(killed_at):
            ts = datetime.fromisoformat(sample["ts"]).timestamp()
            position = {int(k.rsplit(":", 1)[1]): v
                        for k, v in sample.get("ingest_position", {}).items()
                        if k.rsplit(":", 1)[0] == readings_topic}
            if (sample["worker"] == "w2" and len(position) == partitions
                    and all(position[p] > offset
                            for p, offset in feeder.acked_by(ts - 1.0).items())):
                takeover_s = ts - killed_at
                break
    outcome = finish(rig, feeder)
    outcome.timings_s["takeover_s"] = takeover_s if takeover_s is not None else float("inf")
    outcome.notes["owners_before_kill"] = sorted(owners)
    return outcome


def _readings_partitions(sample: dict[str, Any], topic: str) -> set[str]:
    return {k for k in sample["consumer_lag"] if k.rsplit(":", 1)[0] == topic}


def broker_restart(rig: Rig, *, before_s: float = 8, down_s: float = 5,
                   after_s: float = 10) -> Outcome:
    """The (durable) broker SIGKILLed mid-run and started again ``down_s`` later; the feeder
    and the worker carry on."""
    rig.start_worker()
    feeder = rig.start_feeder()
    rig.wait_first_rows()
    time.sleep(before_s)
    rig.broker.halt(kill=True)
    time.sleep(down_s)
    rig.broker.start()
    time.sleep(after_s)
    rig.check_workers()
    return finish(rig, feeder, timeout_s=120)


def sigterm(rig: Rig, *, before_s: float = 8) -> Outcome:
    """SIGTERM to a busy worker: ``sigterm_exit_s`` is the time to exit (it drains first:
    what it took is processed, sent and committed); then a new worker picks up and nothing
    is lost."""
    rig.start_worker()
    feeder = rig.start_feeder()
    rig.wait_first_rows()
    time.sleep(before_s)
    code, exit_s = rig.terminate_worker()
    rig.start_worker("w1b")
    time.sleep(5)
    outcome = finish(rig, feeder)
    outcome.timings_s["sigterm_exit_s"] = exit_s
    outcome.notes["exit_code"] = code
    outcome.notes["drained"] = "drained: every message taken" in rig.log_tail("w1", 200)
    return outcome


EXPECTED_REASONS = {"malformed": 2, "unknown_device": 1, "late": 1, "future_timestamp": 2}
"""The dead letters :func:`bad_input` causes, by reason."""


def bad_input(rig: Rig, *, before_s: float = 5, after_s: float = 8) -> Outcome:
    """Broken, unknown and clock-skewed messages among real-time good ones: each is a dead
    letter with its reason; the good readings all reach InfluxDB."""
    rig.start_worker()
    feeder = rig.start_feeder()
    rig.wait_first_rows()
    time.sleep(before_s)
    now = int(time.time())

    def one(n: int = 0, **change: Any) -> bytes:
        reading = intersection_readings(n, now)[0]
        reading.update(change)
        return json.dumps(reading).encode()

    feeder.inject([
        ("x000", b'{"device_id": "x000-n1", "kind": "loop", "ts": '),  # cut off
        ("x000", b"\x00\xff\x10 binary noise"),
        ("x000", one(device_id="no-such-loop")),
        ("x000", one(ts=datetime.fromtimestamp(now - 3600, UTC).isoformat())),  # clock behind
        ("x000", one(ts=datetime.fromtimestamp(now + 3600, UTC).isoformat())),  # clock ahead
        ("x000", one(ts="2099-01-01T00:00:00+00:00")),
    ])
    time.sleep(after_s)
    outcome = finish(rig, feeder)
    reasons: dict[str, int] = {}
    for letter in rig.dead_letters():
        reasons[letter["reason_code"]] = reasons.get(letter["reason_code"], 0) + 1
    outcome.notes["dead_letters_by_reason"] = reasons
    return outcome
