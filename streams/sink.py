"""Where points go: InfluxDB (v2 write API through influxdb-client's async client) or a
line-protocol file. Both raise :class:`RetryableSinkError` for faults worth retrying and
:class:`PermanentSinkError` for data the server refuses; the sink agents hold their Kafka
offsets until a write succeeds, so retries and outages lose nothing."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Protocol

import aiohttp
from influxdb_client import WritePrecision
from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync
from influxdb_client.rest import ApiException

from simpang.settings import InfluxSettings


class RetryableSinkError(Exception):
    """The write may succeed later (server down, timeout, 5xx, 429)."""


class PermanentSinkError(Exception):
    """The server refused the data itself (4xx); retrying cannot help."""


class PointSink(Protocol):
    description: str

    async def start(self) -> None: ...

    async def write(self, lines: list[str]) -> None: ...

    async def close(self) -> None: ...


class InfluxSink:
    def __init__(self, settings: InfluxSettings) -> None:
        if not settings.url:
            raise ValueError("InfluxSink needs influx.url")
        self.settings = settings
        self.description = f"InfluxDB {settings.url} bucket {settings.bucket!r}"
        self._client: InfluxDBClientAsync | None = None

    async def start(self) -> None:
        token = self.settings.token.get_secret_value() if self.settings.token else ""
        self._client = InfluxDBClientAsync(
            url=self.settings.url,
            token=token,
            org=self.settings.org,
            timeout=int(self.settings.timeout_s * 1000),
        )

    async def write(self, lines: list[str]) -> None:
        assert self._client is not None, "start() first"
        try:
            await self._client.write_api().write(
                bucket=self.settings.bucket,
                org=self.settings.org,
                record="\n".join(lines),
                write_precision=WritePrecision.NS,
            )
        except ApiException as exc:
            if exc.status is None or exc.status == 429 or exc.status >= 500:
                raise RetryableSinkError(f"InfluxDB answered {exc.status}: {exc.body}") from exc
            raise PermanentSinkError(
                f"InfluxDB refused the points ({exc.status}): {exc.body}"
            ) from exc
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise RetryableSinkError(f"InfluxDB unreachable: {exc!r}") from exc

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


class LineProtocolFileSink:
    """Appends line protocol to a file, synced per batch; load it later with ``influx write``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.description = f"line-protocol file {path}"

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)

    async def write(self, lines: list[str]) -> None:
        try:
            await asyncio.to_thread(self._append, lines)
        except OSError as exc:
            raise RetryableSinkError(f"cannot write {self.path}: {exc}") from exc

    def _append(self, lines: list[str]) -> None:
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    async def close(self) -> None:
        return None


def sink_from_settings(settings: InfluxSettings, default_file: Path) -> PointSink:
    if settings.url:
        return InfluxSink(settings)
    return LineProtocolFileSink(settings.line_protocol_file or default_file)
