"""The embedded runtime: servers start on free ports, stop cleanly, fail with a clear message,
and never outlive the process that started them."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streams.embedded import (
    InfluxDB1Server,
    MotoS3Server,
    ServerStartError,
    TansuBroker,
    free_port,
)

pytestmark = pytest.mark.integration


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is gone for our purposes once it is not running.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def wait_until(condition: object, timeout_s: float) -> bool:
    assert callable(condition)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return bool(condition())


def test_tansu_starts_on_a_free_port_and_stops() -> None:
    with TansuBroker() as broker:
        assert broker.process is not None
        pid = broker.process.pid
        assert port_open(broker.port)
        assert broker.bootstrap == f"127.0.0.1:{broker.port}"
        workdir = broker.workdir
        assert workdir is not None and workdir.exists()
    assert not port_open(broker.port)
    assert not pid_alive(pid)
    assert not workdir.exists()


def test_failed_start_names_the_server_and_cleans_up() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        broker = InfluxDB1Server(port=port)
        with pytest.raises(ServerStartError, match="influxdb") as failure:
            broker.start(timeout_s=10)
    # InfluxDB refuses the taken port and says so; its output is in the message.
    assert "address already in use" in str(failure.value)
    assert broker.process is None and broker.workdir is None


def test_missing_binary_is_a_clear_error() -> None:
    server = InfluxDB1Server()
    server.binary = "/nonexistent/influxd"
    with pytest.raises(ServerStartError, match=r"influxdb: cannot run '/nonexistent/influxd'"):
        server.start()
    assert server.workdir is None


def test_children_die_with_a_parent_killed_outright(tmp_path: Path) -> None:
    """SIGKILL gives the parent no chance to clean up; the kernel kills its servers."""
    script = (
        "import sys, time\n"
        "from streams.embedded import TansuBroker, InfluxDB1Server\n"
        "b = TansuBroker().start(); i = InfluxDB1Server().start()\n"
        "print(b.process.pid, b.port, i.process.pid, i.port, flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        assert parent.stdout is not None
        tansu_pid, tansu_port, influx_pid, influx_port = map(int, parent.stdout.readline().split())
        assert pid_alive(tansu_pid) and pid_alive(influx_pid)
        assert port_open(tansu_port) and port_open(influx_port)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        assert wait_until(lambda: not pid_alive(tansu_pid) and not pid_alive(influx_pid), 10)
        # A many-threaded server can look dead (its leader a zombie) while its other threads
        # still hold the listening socket for a moment.
        assert wait_until(lambda: not port_open(tansu_port) and not port_open(influx_port), 10)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        assert sock.getsockname()[1] == port


def _produce_then_count_after_kill(broker: TansuBroker, messages: int) -> int:
    """Produce ``messages`` (acknowledged), SIGKILL and restart the broker, count what it
    still holds."""
    async def produce() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic("kept", 2, 1)])
        finally:
            await admin.close()
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
        await producer.start()
        try:
            for n in range(messages):
                await producer.send_and_wait("kept", str(n).encode(), key=str(n).encode())
        finally:
            await producer.stop()

    async def count() -> int:
        consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None,
                                    auto_offset_reset="earliest")
        await consumer.start()
        try:
            if "kept" not in await consumer.topics():
                return 0
            consumer.subscribe(["kept"])
            seen: set[bytes] = set()
            deadline = time.monotonic() + 10
            while len(seen) < messages and time.monotonic() < deadline:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    seen.update(r.value for r in records if r.value is not None)
            return len(seen)
        finally:
            await consumer.stop()

    asyncio.run(produce())
    broker.halt(kill=True)
    broker.start()
    return asyncio.run(count())


def test_a_durable_broker_keeps_every_message_through_sigkill() -> None:
    with MotoS3Server() as s3, TansuBroker(storage=s3.storage()) as durable:
        assert _produce_then_count_after_kill(durable, 100) == 100
    with TansuBroker() as in_memory:  # the contrast: memory storage keeps nothing
        assert _produce_then_count_after_kill(in_memory, 100) == 0


def test_simpang_broker_serves_durably_and_leaves_nothing_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "broker.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "simpang", "broker", "--durable"], stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "SIMPANG_BROKER__PORT": str(port)})
    try:
        assert wait_until(lambda: "broker at" in log.read_text(), 60), log.read_text()
        assert f"127.0.0.1:{port}, topics in a local S3" in log.read_text()
        children = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True,
                                  text=True).stdout.split()
        assert len(children) == 2, children  # the local S3 and Tansu
        broker = TansuBroker(port)
        assert asyncio.run(_metadata_ok(broker.bootstrap))
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    assert not port_open(port)
    assert not any(pid_alive(int(pid)) for pid in children)


async def _metadata_ok(bootstrap: str) -> bool:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        return isinstance(await consumer.topics(), set)
    finally:
        await consumer.stop()
