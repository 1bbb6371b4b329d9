"""The embedded runtime: servers start on free ports, stop cleanly, fail with a clear message,
and never outlive the process that started them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streams.embedded import (
    InfluxDB1Server,
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
