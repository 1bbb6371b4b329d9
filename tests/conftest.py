"""Real servers for the tests, each started on a free loopback port by the project's own code:
Tansu (Kafka protocol), InfluxDB 1.x behind the v2-write forwarder, and Simpang workers as
separate processes."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from dashboards.influxql import InfluxQL
from streams.embedded import InfluxDB1Server, TansuBroker, popen_child, stop_process
from tests.influx_v2_forwarder import InfluxV2WriteForwarder

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No SIMPANG_* variable of the caller's shell leaks into a test."""
    for name in list(os.environ):
        if name.startswith("SIMPANG_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def tansu() -> Iterator[TansuBroker]:
    with TansuBroker() as broker:
        yield broker


@pytest.fixture(scope="session")
def influxdb() -> Iterator[InfluxDB1Server]:
    with InfluxDB1Server() as server:
        yield server


@pytest.fixture(scope="session")
def influx_forwarder(influxdb: InfluxDB1Server) -> Iterator[InfluxV2WriteForwarder]:
    forwarder = InfluxV2WriteForwarder(influxdb.url).start()
    yield forwarder
    forwarder.close()


class Pipeline:
    """One worker process with its own topics and its own InfluxDB database."""

    def __init__(self, broker: str, influx_url: str, write_url: str, workdir: Path,
                 env: dict[str, str]) -> None:
        self.name = f"t{uuid.uuid4().hex[:8]}"
        self.broker = broker
        self.db = InfluxQL(influx_url, self.name)
        self.db.create_database()
        self.prefix = f"{self.name}-"
        self.log_path = workdir / f"{self.name}-worker.log"
        self.env = {
            **os.environ,
            "SIMPANG_KAFKA__BROKERS": broker,
            "SIMPANG_APP_ID": self.name,
            "SIMPANG_TOPICS__PREFIX": self.prefix,
            "SIMPANG_INFLUX__URL": write_url,
            "SIMPANG_INFLUX__BUCKET": self.name,
            "SIMPANG_INFLUX__RETRY_MAX_S": "1",
            "SIMPANG_DATA_DIR": str(workdir / "data"),
            "SIMPANG_HEALTH_INTERVAL_S": "1",
            "SIMPANG_WINDOWS__TICK_INTERVAL_S": "0.2",
            **env,
        }
        self.worker = None

    def start_worker(self) -> None:
        log = self.log_path.open("ab")
        self.worker = popen_child(
            [sys.executable, "-m", "simpang", "worker"], env=self.env, stdout=log, cwd=REPO
        )

    def wait_log(self, text: str, *, timeout_s: float = 45) -> None:
        """Wait until the worker's log contains ``text``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.log_path.exists() and text in self.log_path.read_text(errors="replace"):
                return
            self.assert_worker_alive()
            time.sleep(0.2)
        raise AssertionError(f"worker never logged {text!r}:\n{self.log_tail()}")

    def stop_worker(self) -> int | None:
        if self.worker is None:
            return None
        code = stop_process(self.worker, timeout_s=20)
        self.worker = None
        return code

    def topic(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def send(self, messages: list[tuple[str, bytes | dict[str, Any] | list[Any]]]) -> None:
        """Produce raw sensor messages in order, each acknowledged before the next."""

        async def go() -> None:
            producer = AIOKafkaProducer(bootstrap_servers=self.broker)
            await producer.start()
            try:
                for key, value in messages:
                    payload = value if isinstance(value, bytes) else json.dumps(value).encode()
                    await producer.send_and_wait(
                        self.topic("sensor-readings"), payload, key=key.encode()
                    )
            finally:
                await producer.stop()

        asyncio.run(go())

    def read_topic(self, name: str, *, count: int, timeout_s: float = 30) -> list[dict[str, Any]]:
        """Read ``count`` JSON records from a topic (all partitions, from the start)."""

        async def go() -> list[dict[str, Any]]:
            consumer = AIOKafkaConsumer(
                self.topic(name), bootstrap_servers=self.broker, group_id=None,
                auto_offset_reset="earliest",
            )
            await consumer.start()
            out: list[dict[str, Any]] = []
            try:
                deadline = time.monotonic() + timeout_s
                while len(out) < count and time.monotonic() < deadline:
                    batches = await consumer.getmany(timeout_ms=500)
                    for records in batches.values():
                        out.extend(json.loads(r.value) for r in records)
            finally:
                await consumer.stop()
            return out

        return asyncio.run(go())

    def wait_rows(
        self, query: str, until: Callable[[list[dict[str, Any]]], bool], *, timeout_s: float = 45
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        rows: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            rows = self.db.rows(query)
            if until(rows):
                return rows
            self.assert_worker_alive()
            time.sleep(0.25)
        raise AssertionError(
            f"timed out waiting on {query!r}; last rows {rows}\nworker log tail:\n"
            + self.log_tail()
        )

    def wait_http(self, url: str, *, timeout_s: float = 60) -> None:
        """Wait until the worker's web server answers ``GET /v1/health`` with 200."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if urllib3.request("GET", f"{url}/v1/health", timeout=2,
                                   retries=False).status == 200:
                    return
            except urllib3.exceptions.HTTPError:
                pass
            self.assert_worker_alive()
            assert time.monotonic() < deadline, self.log_tail()
            time.sleep(0.3)

    def assert_worker_alive(self) -> None:
        if self.worker is not None and self.worker.poll() is not None:
            raise AssertionError(f"worker exited with {self.worker.returncode}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture
def pipeline_factory(
    tansu: TansuBroker, influxdb: InfluxDB1Server, influx_forwarder: InfluxV2WriteForwarder,
    tmp_path: Path,
) -> Iterator[Callable[..., Pipeline]]:
    made: list[Pipeline] = []

    def make(*, write_url: str | None = None, start: bool = True, **env: str) -> Pipeline:
        pipeline = Pipeline(tansu.bootstrap, influxdb.url, write_url or influx_forwarder.url,
                            tmp_path, env)
        made.append(pipeline)
        if start:
            pipeline.start_worker()
        return pipeline

    yield make
    for pipeline in made:
        pipeline.stop_worker()
        pipeline.db.drop_database()


@pytest.fixture(scope="session")
def scenario_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where bundled SUMO scenarios are built, once per test session."""
    return tmp_path_factory.mktemp("scenarios")
