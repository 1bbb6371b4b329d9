"""Benchmark of the real path: Tansu → one ``simpang worker`` process → InfluxDB.

    .venv/bin/python bench/stream.py [--readings 120000] [--latency-s 60] [--profile]

Servers are started by the project's own code on free loopback ports, as in the tests:
Tansu, Debian's InfluxDB 1.6 and, in front of it, the tests' v2-write forwarder
(``tests/influx_v2_forwarder.py``; the sink speaks the v2 write API).

The site is synthetic: 125 intersections × 4 approaches × 2 lanes = 1,000 loop detectors,
each reporting 1-s intervals, so 1,000 readings/s is one reading per detector per second.
Two message shapes are compared side by side in the same run:

- ``single``: one reading per Kafka message (a detector publishing on its own) — baseline;
- ``per-intersection``: one JSON array per intersection and second (8 readings), as a signal
  controller or edge gateway reports its loops.

Throughput: the readings are produced first, then a fresh worker consumes them; the rate is
readings / (time its health counter ``readings_windowed`` reached the total − time it first
counted a reading), from health samples every 0.25 s. The readings span simulated time, so
windows close and metrics are emitted and written during the run.

Latency at 1,000 readings/s: readings stamped with the current second are sent at that
second; for every window row, latency = the wall-clock time it was first seen by an InfluxQL
poll (every 0.1 s) − the window's end. Windows are 10 s tumbling and 60 s every 10 s (many
window ends in a short run) and the grace is 1 s, so 1 s of every latency is the grace the
window waits for late readings by design.

The last line printed is JSON: ``readings_per_s`` (best shape), ``p50_latency_s`` and
``p99_latency_s`` (per-intersection shape), plus the baseline figures.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Run as a script, this folder would be first on the path, and its signal.py would shadow the
# standard library's signal module for everything imported after (subprocess among them).
sys.path[0] = str(REPO)

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from datetime import UTC, datetime, timedelta  # noqa: E402
from typing import Any  # noqa: E402

import yaml  # noqa: E402
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # noqa: E402

from dashboards.influxql import InfluxQL  # noqa: E402
from simpang.records import HealthSample  # noqa: E402
from simpang.settings import Settings  # noqa: E402
from simulator import synthetic  # noqa: E402
from simulator.synthetic import APPROACHES  # noqa: E402
from streams.embedded import InfluxDB1Server, TansuBroker, popen_child, stop_process  # noqa: E402
from streams.kafka import ensure_topics  # noqa: E402
from tests.influx_v2_forwarder import InfluxV2WriteForwarder  # noqa: E402

INTERSECTIONS = 125


def synthetic_site() -> dict[str, Any]:
    return synthetic.synthetic_site(INTERSECTIONS, site_id="bench",
                                    name="Synthetic benchmark site")


def readings_at(ts: datetime) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """Every detector's 1-s reading ending at ``ts``, grouped by intersection."""
    stamp = ts.isoformat()
    second = int(ts.timestamp())
    for n in range(INTERSECTIONS):
        iid = f"x{n:03d}"
        yield iid, [
            {"device_id": f"{iid}-{a[0]}{k}", "kind": "loop", "ts": stamp, "interval_s": 1,
             "counts": {"motorcycle": (second + n + k) % 3, "car": (second + k) % 2},
             "occupancy_pct": 10.0 + k, "speed_kmh": 30.0}
            for a in APPROACHES for k in (1, 2)
        ]


def encode(shape: str, group: list[dict[str, Any]]) -> list[bytes]:
    if shape == "single":
        return [json.dumps(r, separators=(",", ":")).encode() for r in group]
    return [json.dumps(group, separators=(",", ":")).encode()]


class Run:
    """One worker with its own app id, topics and database."""

    def __init__(self, broker: str, influx: InfluxDB1Server, forwarder: InfluxV2WriteForwarder,
                 site_file: Path, workdir: Path, **env: str) -> None:
        self.name = f"b{uuid.uuid4().hex[:8]}"
        self.broker = broker
        self.db = InfluxQL(influx.url, self.name)
        self.db.create_database()
        self.env = {
            **os.environ,
            "SIMPANG_KAFKA__BROKERS": broker,
            "SIMPANG_APP_ID": self.name,
            "SIMPANG_TOPICS__PREFIX": f"{self.name}-",
            "SIMPANG_SITE_FILE": str(site_file),
            "SIMPANG_INFLUX__URL": forwarder.url,
            "SIMPANG_INFLUX__BUCKET": self.name,
            "SIMPANG_DATA_DIR": str(workdir / "data"),
            "SIMPANG_HEALTH_INTERVAL_S": "0.25",
            "SIMPANG_LOG_LEVEL": "warning",
            **env,
        }
        self.log = workdir / f"{self.name}.log"
        self.worker: subprocess.Popen[bytes] | None = None
        saved = dict(os.environ)
        os.environ.update(self.env)
        try:
            self.settings = Settings()
        finally:
            os.environ.clear()
            os.environ.update(saved)
        asyncio.run(ensure_topics(self.settings))

    def topic(self, key: str) -> str:
        return self.settings.topics.name(key)

    def start_worker(self) -> None:
        with self.log.open("ab") as log:
            self.worker = popen_child([sys.executable, "-m", "simpang", "worker"],
                                      env=self.env, stdout=log, cwd=REPO)

    def stop(self) -> None:
        if self.worker is not None:
            stop_process(self.worker, timeout_s=20)
        self.db.drop_database()

    def check_alive(self) -> None:
        if self.worker is not None and self.worker.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"worker exited with {self.worker.returncode}:\n{tail}")

    async def health(self) -> AIOKafkaConsumer:
        consumer = AIOKafkaConsumer(self.topic("pipeline_health"), bootstrap_servers=self.broker,
                                    group_id=None, auto_offset_reset="earliest")
        await consumer.start()
        return consumer


async def produce(broker: str, topic: str, messages: Iterator[tuple[str, bytes]]) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=broker, linger_ms=20,
                                max_batch_size=512 * 1024, max_request_size=4 * 1024 * 1024)
    await producer.start()
    sent = 0
    pending = []
    try:
        for key, value in messages:
            pending.append(await producer.send(topic, value, key=key.encode()))
            sent += 1
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return sent


async def throughput(run: Run, shape: str, total_readings: int, profile_s: float) -> dict[str, Any]:
    seconds = total_readings // (INTERSECTIONS * 8)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)

    def messages() -> Iterator[tuple[str, bytes]]:
        for s in range(1, seconds + 1):
            for iid, group in readings_at(start + timedelta(seconds=s)):
                for payload in encode(shape, group):
                    yield iid, payload

    t0 = time.monotonic()
    sent = await produce(run.broker, run.topic("sensor_readings"), messages())
    produce_s = time.monotonic() - t0
    expected = seconds * INTERSECTIONS * 8
    consumer = await run.health()
    run.start_worker()
    profiler = None
    first: float | None = None
    done: float | None = None
    try:
        deadline = time.monotonic() + 900
        while done is None:
            if time.monotonic() > deadline:
                raise RuntimeError("throughput run did not finish in 900 s")
            run.check_alive()
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    sample = HealthSample.model_validate_json(record.value)
                    at = sample.ts.timestamp()
                    if first is None and sample.readings_in > 0:
                        first = at
                        if profile_s and shutil.which("py-spy") and run.worker is not None:
                            profiler = subprocess.Popen(
                                ["py-spy", "record", "-d", str(int(profile_s)), "-r", "50",
                                 "-p", str(run.worker.pid), "-f", "raw", "-o",
                                 str(run.log.with_suffix(".prof"))],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            )
                    if done is None and sample.readings_windowed >= expected:
                        done = at
    finally:
        await consumer.stop()
    assert first is not None
    top: list[tuple[str, float]] = []
    if profiler is not None:
        profiler.wait(timeout=profile_s + 60)
        top = top_functions(run.log.with_suffix(".prof"))
    elapsed = done - first
    return {"shape": shape, "readings": expected, "messages": sent,
            "produce_s": round(produce_s, 1), "consume_s": round(elapsed, 2),
            "readings_per_s": round(expected / elapsed), "profile_top": top}


def top_functions(raw_profile: Path, limit: int = 12) -> list[tuple[str, float]]:
    """Self time per function from py-spy's collapsed stacks, as shares of all samples."""
    self_samples: Counter[str] = Counter()
    total = 0
    for line in raw_profile.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        leaf = stack.split(";")[-1]
        self_samples[leaf] += int(count)
        total += int(count)
    return [(name, round(n / total, 3)) for name, n in self_samples.most_common(limit)]


async def latency(run: Run, shape: str, duration_s: float, rate_per_s: int) -> dict[str, Any]:
    assert rate_per_s == INTERSECTIONS * 8, "one reading per detector per second"
    consumer = await run.health()
    run.start_worker()
    try:
        while not await consumer.getmany(timeout_ms=500):  # ready: it samples its health
            run.check_alive()
    finally:
        await consumer.stop()
    producer = AIOKafkaProducer(bootstrap_servers=run.broker, linger_ms=5)
    await producer.start()
    topic = run.topic("sensor_readings")
    seen: dict[tuple[str, int], int] = {}
    latencies: list[float] = []
    started = time.time()
    first_window_end = (int(started) // 10 + 2) * 10  # skip windows that began before us
    stop_at = started + duration_s

    async def pace() -> None:
        second = int(time.time()) + 1
        while second <= stop_at:
            await asyncio.sleep(max(0.0, second - time.time()))
            for iid, group in readings_at(datetime.fromtimestamp(second, UTC)):
                for payload in encode(shape, group):
                    await producer.send(topic, payload, key=iid.encode())
            second += 1
        await producer.flush()

    async def poll() -> None:
        query = ("SELECT count(readings) AS n FROM approach_metrics WHERE time >= "
                 f"{first_window_end * 10**9} GROUP BY time(10s), \"window\"")
        while time.time() < stop_at + 5:
            now = time.time()
            rows = await asyncio.to_thread(run.db.rows, query)
            for row in rows:
                key = (row["window"], row["time"])
                new = (row["n"] or 0) - seen.get(key, 0)
                if new > 0 and row["time"] // 10**9 + 10 <= stop_at:
                    latencies.extend([now - row["time"] / 10**9] * new)
                    seen[key] = row["n"]
            run.check_alive()
            await asyncio.sleep(max(0.0, 0.1 - (time.time() - now)))

    try:
        await asyncio.gather(pace(), poll())
    finally:
        await producer.stop()
    emitted = await emission_delays(run, first_window_end, stop_at)
    latencies.sort()
    return {"shape": shape, "rate_per_s": rate_per_s, "window_rows": len(latencies),
            "p50_emitted_s": round(statistics.median(emitted), 3),
            "p99_emitted_s": round(emitted[int(0.99 * (len(emitted) - 1))], 3),
            "p50_latency_s": round(statistics.median(latencies), 3),
            "p99_latency_s": round(latencies[int(0.99 * (len(latencies) - 1))], 3),
            "max_latency_s": round(latencies[-1], 3)}


async def emission_delays(run: Run, first_end: float, last_end: float) -> list[float]:
    """Window end → the metric's Kafka timestamp on approach-metrics (before the sink)."""
    consumer = AIOKafkaConsumer(run.topic("approach_metrics"), bootstrap_servers=run.broker,
                                group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    delays: list[float] = []
    try:
        while batches := await consumer.getmany(timeout_ms=1000):
            for records in batches.values():
                for record in records:
                    for row in json.loads(record.value):
                        end = datetime.fromisoformat(row["window_end"]).timestamp()
                        if first_end <= end <= last_end - 10:
                            delays.append(record.timestamp / 1000 - end)
    finally:
        await consumer.stop()
    return sorted(delays)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readings", type=int, default=120_000)
    parser.add_argument("--latency-s", type=float, default=60.0)
    parser.add_argument("--profile", action="store_true", help="py-spy the per-intersection run")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="simpang-bench-"))
    site_file = workdir / "bench-site.yaml"
    site_file.write_text(yaml.safe_dump(synthetic_site(), sort_keys=False))
    results: dict[str, Any] = {"throughput": [], "latency": []}
    with TansuBroker() as tansu, InfluxDB1Server() as influx:
        forwarder = InfluxV2WriteForwarder(influx.url).start()
        try:
            for shape in ("single", "per-intersection"):
                run = Run(tansu.bootstrap, influx, forwarder, site_file, workdir)
                try:
                    profile_s = 15.0 if args.profile and shape != "single" else 0.0
                    outcome = asyncio.run(throughput(run, shape, args.readings, profile_s))
                finally:
                    run.stop()
                results["throughput"].append(outcome)
                print(f"throughput {shape:>17}: {outcome['readings_per_s']:>6} readings/s "
                      f"({outcome['readings']} readings in {outcome['messages']} messages, "
                      f"consumed in {outcome['consume_s']} s; produced in "
                      f"{outcome['produce_s']} s)", flush=True)
                for name, share in outcome["profile_top"]:
                    print(f"    {share:6.1%}  {name}")
            for shape in ("single", "per-intersection"):
                run = Run(tansu.bootstrap, influx, forwarder, site_file, workdir,
                          SIMPANG_WINDOWS__WINDOWS="10,60/10", SIMPANG_WINDOWS__GRACE_S="1",
                          SIMPANG_INFLUX__BATCH_MAX_WAIT_S="0.1")
                try:
                    outcome = asyncio.run(latency(run, shape, args.latency_s, 1000))
                finally:
                    run.stop()
                results["latency"].append(outcome)
                print(f"latency {shape:>20} at {outcome['rate_per_s']} readings/s: "
                      f"p50 {outcome['p50_latency_s']} s, p99 {outcome['p99_latency_s']} s, "
                      f"max {outcome['max_latency_s']} s over {outcome['window_rows']} window "
                      f"rows (grace 1 s included); emitted to Kafka: p50 "
                      f"{outcome['p50_emitted_s']} s, p99 {outcome['p99_emitted_s']} s",
                      flush=True)
        finally:
            forwarder.close()
    shutil.rmtree(workdir, ignore_errors=True)
    by_shape_t = {r["shape"]: r for r in results["throughput"]}
    by_shape_l = {r["shape"]: r for r in results["latency"]}
    print(json.dumps({
        "readings_per_s": by_shape_t["per-intersection"]["readings_per_s"],
        "p50_latency_s": by_shape_l["per-intersection"]["p50_latency_s"],
        "p99_latency_s": by_shape_l["per-intersection"]["p99_latency_s"],
        "baseline_single_reading_messages": {
            "readings_per_s": by_shape_t["single"]["readings_per_s"],
            "p50_latency_s": by_shape_l["single"]["p50_latency_s"],
            "p99_latency_s": by_shape_l["single"]["p99_latency_s"],
        },
    }))


if __name__ == "__main__":
    main()
