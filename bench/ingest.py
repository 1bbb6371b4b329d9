"""Benchmark of field-device ingest: batched HTTP posts into one worker, and MQTT through
``simpang mqtt-bridge``, beside the same batches produced straight to Kafka (the baseline:
no authentication, no validation, no HTTP/MQTT).

    .venv/bin/python bench/ingest.py [--seconds 20] [--devices 200] [--batch 100]
                                     [--concurrency 16]

Servers are started by the project's own code on free loopback ports: Tansu, Mosquitto, one
``simpang worker`` (web port on, a devices file with one token per emulated device; points
go to its line-protocol file) and one ``simpang mqtt-bridge``. The site is bench/stream.py's
synthetic 1,000-detector site; ``--devices`` of its loops are emulated. Every message is one
device's last ``--batch`` 1-s readings (a backlog upload), with increasing ``seq``.

- HTTP, paced: requests on a fixed schedule offering ``--http-rate`` readings/s (5,000, the
  target) for ``--seconds``; p50/p99 per request counted from its scheduled time (the answer
  comes after the broker acknowledged). Then flat out: ``--concurrency`` clients post as fast
  as they are answered for ``--seconds``; readings/s = readings accepted / elapsed. The
  worker runs its agents meanwhile (ingest, windows, sink), as in production.
- MQTT: the worker is stopped (the bridge is measured, not the worker); ``--concurrency``
  publishers send ``--mqtt-readings`` in QoS 1 messages, faster than the bridge takes them
  (Mosquitto queues them for its session); readings/s = readings the bridge put on
  ``sensor-readings`` (acknowledged by Kafka) / (the bridge's "caught up" log time − first
  publish).
- Kafka baseline: the same messages produced with aiokafka for ``--seconds``.

The last line printed is JSON: ``http_readings_per_s`` (flat out), ``mqtt_readings_per_s``,
``http_p99_ms`` (at the offered rate) and the baseline.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Run as a script, this folder would be first on the path, and its signal.py would shadow the
# standard library's signal module for everything imported after.
sys.path[0] = str(REPO)

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from datetime import UTC, datetime, timedelta  # noqa: E402
from typing import Any  # noqa: E402

import aiohttp  # noqa: E402
import aiomqtt  # noqa: E402
import yaml  # noqa: E402
from aiokafka import AIOKafkaProducer  # noqa: E402

from bench.stream import APPROACHES, INTERSECTIONS, synthetic_site  # noqa: E402
from simpang.devices import DevicesFile, issue_token  # noqa: E402
from simpang.settings import Settings  # noqa: E402
from streams.embedded import (  # noqa: E402
    MosquittoServer,
    TansuBroker,
    free_port,
    popen_child,
    stop_process,
)
from streams.kafka import ensure_topics  # noqa: E402


def device_ids(count: int) -> list[str]:
    every = [f"x{n:03d}-{a[0]}{k}" for n in range(INTERSECTIONS) for a in APPROACHES
             for k in (1, 2)]
    return every[:count]


class Backlogs:
    """Each device's next batch: its last ``size`` 1-s readings, ``seq`` counting up."""

    def __init__(self, devices: list[str], size: int) -> None:
        self.devices = devices
        self.size = size
        self.seq = dict.fromkeys(devices, 0)
        self.turn = 0

    def next(self) -> tuple[str, bytes]:
        device = self.devices[self.turn % len(self.devices)]
        self.turn += 1
        end = datetime.now(UTC).replace(microsecond=0)
        items = []
        for back in range(self.size, 0, -1):
            self.seq[device] += 1
            ts = end - timedelta(seconds=back - 1)
            items.append({"device_id": device, "kind": "loop", "ts": ts.isoformat(),
                          "interval_s": 1, "seq": self.seq[device],
                          "counts": {"car": back % 2, "motorcycle": back % 3},
                          "occupancy_pct": 11.0})
        return device, json.dumps(items, separators=(",", ":")).encode()


async def post(session: aiohttp.ClientSession, url: str, token: str, body: bytes
               ) -> tuple[int, int]:
    """One batch: the status and how many readings were accepted."""
    async with session.post(f"{url}/v1/readings", data=body, headers={
            "Authorization": f"Bearer {token}", "Content-Type": "application/json"}) as response:
        answer = await response.json()
    return response.status, int(answer.get("accepted", 0))


async def http_load(url: str, tokens: dict[str, str], devices: list[str], *, batch: int,
                    seconds: float, concurrency: int) -> dict[str, Any]:
    latencies_ms: list[float] = []
    accepted = 0
    statuses: dict[int, int] = {}
    deadline = time.monotonic() + seconds

    async def client(index: int) -> None:
        nonlocal accepted
        backlogs = Backlogs(devices[index::concurrency], batch)
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                device, body = backlogs.next()
                started = time.perf_counter()
                status, taken = await post(session, url, tokens[device], body)
                latencies_ms.append((time.perf_counter() - started) * 1000)
                statuses[status] = statuses.get(status, 0) + 1
                accepted += taken

    started = time.monotonic()
    await asyncio.gather(*(client(i) for i in range(concurrency)))
    elapsed = time.monotonic() - started
    quantiles = statistics.quantiles(latencies_ms, n=100)
    return {"readings_per_s": round(accepted / elapsed), "requests": len(latencies_ms),
            "statuses": statuses, "p50_ms": round(quantiles[49], 1),
            "p99_ms": round(quantiles[98], 1)}


async def http_paced(url: str, tokens: dict[str, str], devices: list[str], *, batch: int,
                     seconds: float, rate: float) -> dict[str, Any]:
    """Requests sent on a fixed schedule (``rate`` readings/s); each latency counts from its
    scheduled time, so a stalled server is charged for the requests waiting behind it."""
    backlogs = Backlogs(devices, batch)
    interval_s = batch / rate
    latencies_ms: list[float] = []
    accepted = 0
    statuses: dict[int, int] = {}

    async def one(session: aiohttp.ClientSession, due: float) -> None:
        nonlocal accepted
        device, body = backlogs.next()
        status, taken = await post(session, url, tokens[device], body)
        latencies_ms.append((time.perf_counter() - due) * 1000)
        statuses[status] = statuses.get(status, 0) + 1
        accepted += taken

    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(connector=connector) as session:
        start = time.perf_counter()
        tasks = []
        for n in range(int(seconds * rate / batch)):
            due = start + n * interval_s
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            tasks.append(asyncio.ensure_future(one(session, due)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    quantiles = statistics.quantiles(latencies_ms, n=100)
    return {"readings_per_s": round(accepted / elapsed), "requests": len(latencies_ms),
            "statuses": statuses, "p50_ms": round(quantiles[49], 1),
            "p99_ms": round(quantiles[98], 1), "max_ms": round(max(latencies_ms), 1)}


def caught_up_at(log_path: Path, readings: int, timeout_s: float) -> float:
    """Wall time of the bridge's first "caught up" log line with ``readings`` accepted."""
    pattern = re.compile(r"^(\S+ \S+) INFO simpang.mqtt: mqtt-bridge: caught up; \d+ "
                         r"messages, (\d+) readings accepted")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for line in log_path.read_text(errors="replace").splitlines():
            match = pattern.match(line)
            if match and int(match.group(2)) >= readings:
                stamp = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f")
                return stamp.timestamp()
        time.sleep(0.5)
    raise RuntimeError(f"the bridge never caught up with {readings} readings")


async def mqtt_load(port: int, site: str, log_path: Path, devices: list[str], *,
                    batch: int, readings: int, concurrency: int) -> dict[str, Any]:
    sent = 0

    async def publisher(index: int) -> None:
        nonlocal sent
        backlogs = Backlogs(devices[index::concurrency], batch)
        async with aiomqtt.Client("127.0.0.1", port, identifier=f"bench-{index}") as client:
            while sent < readings:
                sent += batch
                device, body = backlogs.next()
                await client.publish(f"simpang/{site}/{device}/readings", body, qos=1)

    started = time.time()
    await asyncio.gather(*(publisher(i) for i in range(concurrency)))
    published_s = time.time() - started
    done = caught_up_at(log_path, sent, timeout_s=300)
    return {"readings_per_s": round(sent / (done - started)), "readings": sent,
            "published_per_s": round(sent / published_s)}


async def kafka_load(broker: str, topic: str, devices: list[str], *, batch: int,
                     seconds: float) -> dict[str, Any]:
    producer = AIOKafkaProducer(bootstrap_servers=broker, linger_ms=5)
    await producer.start()
    backlogs = Backlogs(devices, batch)
    sent = 0
    started = time.monotonic()
    try:
        while time.monotonic() - started < seconds:
            futures = []
            for _ in range(50):
                device, body = backlogs.next()
                futures.append(await producer.send(topic, body, key=device.encode()))
                sent += batch
            await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return {"readings_per_s": round(sent / (time.monotonic() - started))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--http-rate", type=float, default=5000.0,
                        help="Offered HTTP load for the latency figure, readings/s.")
    parser.add_argument("--mqtt-readings", type=int, default=300_000,
                        help="Readings published over MQTT (faster than the bridge takes them).")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="simpang-bench-ingest-"))
    site_file = workdir / "site.yaml"
    site_file.write_text(yaml.safe_dump(synthetic_site()))
    devices = device_ids(args.devices)
    tokens: dict[str, str] = {}
    entries = []
    for device in devices:
        tokens[device], entry = issue_token(device, devices=[device],
                                            max_readings_per_s=100_000,
                                            burst_readings=1_000_000)
        entries.append(entry)
    devices_file = workdir / "devices.yaml"
    devices_file.write_text(yaml.safe_dump(DevicesFile(tokens=entries).model_dump(
        mode="json", exclude_none=True)))

    with TansuBroker() as tansu, MosquittoServer(max_queued_messages=0) as mosquitto:
        prefix = f"b{uuid.uuid4().hex[:6]}-"
        web_port = free_port()
        env = {**os.environ, "SIMPANG_KAFKA__BROKERS": tansu.bootstrap,
               "SIMPANG_APP_ID": prefix.rstrip("-"), "SIMPANG_TOPICS__PREFIX": prefix,
               "SIMPANG_SITE_FILE": str(site_file), "SIMPANG_DATA_DIR": str(workdir / "data"),
               "SIMPANG_WEB_PORT": str(web_port), "SIMPANG_INGEST__DEVICES_FILE":
               str(devices_file), "SIMPANG_WINDOWS__GRACE_S": "150",
               "SIMPANG_LOG_LEVEL": "warning", "SIMPANG_TIMING__ENABLED": "false",
               "SIMPANG_MQTT__PORT": str(mosquitto.port),
               "SIMPANG_MQTT__CLIENT_ID": f"{prefix}bridge"}
        settings = Settings(kafka={"brokers": tansu.bootstrap}, topics={"prefix": prefix})
        asyncio.run(ensure_topics(settings))

        worker = popen_child([sys.executable, "-m", "simpang", "worker"], env=env,
                             stdout=(workdir / "worker.log").open("ab"), cwd=REPO)
        url = f"http://127.0.0.1:{web_port}"
        try:
            asyncio.run(wait_http(url, worker))
            paced = asyncio.run(http_paced(url, tokens, devices, batch=args.batch,
                                           seconds=args.seconds, rate=args.http_rate))
            http = asyncio.run(http_load(url, tokens, devices, batch=args.batch,
                                         seconds=args.seconds,
                                         concurrency=args.concurrency))
        finally:
            stop_process(worker, timeout_s=30)
        print(f"http at {args.http_rate:g} readings/s offered: {paced['readings_per_s']} "
              f"readings/s  p50 {paced['p50_ms']} ms  p99 {paced['p99_ms']} ms  "
              f"max {paced['max_ms']} ms  ({paced['requests']} requests {paced['statuses']})")
        print(f"http flat out ({args.concurrency} clients): {http['readings_per_s']} "
              f"readings/s  p50 {http['p50_ms']} ms  p99 {http['p99_ms']} ms  "
              f"({http['requests']} requests {http['statuses']})")

        bridge_env = {**env, "SIMPANG_TOPICS__PREFIX": f"{prefix}m-", "SIMPANG_LOG_LEVEL": "info"}
        bridge_settings = Settings(kafka={"brokers": tansu.bootstrap},
                                   topics={"prefix": f"{prefix}m-"})
        asyncio.run(ensure_topics(bridge_settings))
        bridge = popen_child([sys.executable, "-m", "simpang", "mqtt-bridge"], env=bridge_env,
                             stdout=(workdir / "bridge.log").open("ab"), cwd=REPO)
        try:
            wait_log(workdir / "bridge.log", "subscribed to", bridge)
            mqtt = asyncio.run(mqtt_load(
                mosquitto.port, "bench", workdir / "bridge.log", devices, batch=args.batch,
                readings=args.mqtt_readings, concurrency=args.concurrency))
        finally:
            stop_process(bridge, timeout_s=30)
        print(f"mqtt   {mqtt['readings_per_s']:>7} readings/s through the bridge "
              f"(published at {mqtt['published_per_s']}/s)")

        kafka = asyncio.run(kafka_load(tansu.bootstrap, f"{prefix}baseline", devices,
                                       batch=args.batch, seconds=args.seconds))
        print(f"kafka  {kafka['readings_per_s']:>7} readings/s produced directly "
              f"(baseline: no HTTP/MQTT, no checks)")
    print(json.dumps({
        "http_readings_per_s": http["readings_per_s"], "mqtt_readings_per_s":
        mqtt["readings_per_s"], "http_p99_ms": paced["p99_ms"],
        "http_p99_ms_at_rate": args.http_rate, "http_p50_ms": paced["p50_ms"],
        "http_p99_ms_flat_out": http["p99_ms"],
        "baseline_kafka_readings_per_s": kafka["readings_per_s"],
        "batch": args.batch, "devices": args.devices, "concurrency": args.concurrency,
        "seconds": args.seconds,
    }))


async def wait_http(url: str, worker: Any, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(f"{url}/v1/health") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the worker did not come up")
            await asyncio.sleep(0.3)


def wait_log(path: Path, text: str, process: Any, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not (path.exists() and text in path.read_text(errors="replace")):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{path.name}: never logged {text!r}")
        time.sleep(0.2)


if __name__ == "__main__":
    main()
