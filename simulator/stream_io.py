"""Where a simulated stream goes: Kafka, a record file, or plain files; and replaying a record.

A record file is JSON lines. The first line is a header
``{"format": "simpang-stream", "v": 1, ...run metadata}``; every other line is one message
as it was published::

    {"t": 12.5, "topic": "sensor_readings", "key": "C", "headers": {}, "value": "[...]"}
    {"t": 12.6, "topic": "camera_frames", "key": "C-north-cam",
     "headers": {"seq": "126", ...}, "value_b64": "/9j/4AAQ..."}

``t`` is simulated seconds since the run began; ``topic`` is the topic's role (the setting
name in ``Settings.topics``), so a record replays into a deployment whose topic names
differ. JSON values are kept as text, binary ones (JPEG frames) as base64.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from simpang.settings import Settings

RECORD_FORMAT = "simpang-stream"
TEXT_TOPICS = frozenset({"sensor_readings"})


@dataclass(frozen=True)
class StreamMessage:
    t_s: float
    topic: str
    key: str
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()

    def to_json(self) -> str:
        line: dict[str, Any] = {
            "t": round(self.t_s, 3),
            "topic": self.topic,
            "key": self.key,
            "headers": {k: v.decode() for k, v in self.headers},
        }
        if self.topic in TEXT_TOPICS:
            line["value"] = self.value.decode()
        else:
            line["value_b64"] = base64.b64encode(self.value).decode()
        return json.dumps(line, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> StreamMessage:
        line = json.loads(text)
        value = (line["value"].encode() if "value" in line
                 else base64.b64decode(line["value_b64"]))
        return cls(
            t_s=float(line["t"]),
            topic=line["topic"],
            key=line["key"],
            value=value,
            headers=tuple((k, v.encode()) for k, v in line.get("headers", {}).items()),
        )


class MessageSink(Protocol):
    async def send(self, message: StreamMessage) -> None: ...

    async def close(self) -> None: ...


class KafkaSink:
    """Publishes to the configured topics; :meth:`close` waits until every message is acked."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._producer: Any = None
        self._in_flight: list[asyncio.Future[Any]] = []
        self.sent = 0

    async def start(self) -> None:
        from aiokafka import AIOKafkaProducer

        from streams.kafka import aiokafka_kwargs, ensure_topics

        await ensure_topics(self._settings)
        # Not idempotent: Tansu does not grant producer ids, so delivery is at least once (a
        # send retried after a lost acknowledgement can arrive twice).
        producer = AIOKafkaProducer(
            **aiokafka_kwargs(self._settings.kafka), linger_ms=20, max_request_size=4 * 2**20,
            acks="all",
        )
        try:
            await producer.start()
        except BaseException:
            await producer.stop()
            raise
        self._producer = producer

    async def send(self, message: StreamMessage) -> None:
        delivery = await self._producer.send(
            self._settings.topics.name(message.topic),
            message.value,
            key=message.key.encode(),
            headers=list(message.headers),
        )
        self._in_flight.append(delivery)
        self.sent += 1
        if len(self._in_flight) >= 1000:
            self._check(done_only=True)

    def _check(self, *, done_only: bool) -> None:
        """Raise the first delivery failure; forget deliveries that succeeded."""
        still = []
        for delivery in self._in_flight:
            if delivery.done():
                delivery.result()
            elif done_only:
                still.append(delivery)
        self._in_flight = still

    async def close(self) -> None:
        if self._producer is not None:
            try:
                await self._producer.flush()
                if self._in_flight:
                    await asyncio.gather(*self._in_flight)
                self._check(done_only=False)
            finally:
                await self._producer.stop()
                self._producer = None


class RecordSink:
    """Writes a record file (see the module docstring)."""

    def __init__(self, path: Path, header: dict[str, Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] = path.open("w", encoding="utf-8")
        self._file.write(json.dumps({"format": RECORD_FORMAT, "v": 1, **header}) + "\n")

    async def send(self, message: StreamMessage) -> None:
        self._file.write(message.to_json() + "\n")

    async def close(self) -> None:
        self._file.close()


@dataclass
class DirectorySink:
    """Plain files: ``sensor_readings.jsonl`` (one message value per line, with its key and
    time) and ``frames/<camera>/<seq>.jpg`` with ``camera_frames.jsonl`` indexing them."""

    directory: Path
    _files: dict[str, IO[str]] = field(default_factory=dict)

    async def send(self, message: StreamMessage) -> None:
        headers = {k: v.decode() for k, v in message.headers}
        if message.topic in TEXT_TOPICS:
            entry: dict[str, Any] = {"t": message.t_s, "key": message.key,
                                     "value": json.loads(message.value)}
        else:
            frame = Path("frames") / message.key / f"{int(headers.get('seq', 0)):07d}.jpg"
            (self.directory / frame).parent.mkdir(parents=True, exist_ok=True)
            (self.directory / frame).write_bytes(message.value)
            entry = {"t": message.t_s, "key": message.key, "file": str(frame), **headers}
        self._file(message.topic).write(json.dumps(entry, separators=(",", ":")) + "\n")

    def _file(self, topic: str) -> IO[str]:
        if topic not in self._files:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._files[topic] = (self.directory / f"{topic}.jsonl").open("w", encoding="utf-8")
        return self._files[topic]

    async def close(self) -> None:
        for handle in self._files.values():
            handle.close()


@dataclass
class FramesOnly:
    """Another sink, for everything but device readings (which take another way)."""

    inner: MessageSink

    async def send(self, message: StreamMessage) -> None:
        if message.topic not in TEXT_TOPICS:
            await self.inner.send(message)

    async def close(self) -> None:
        await self.inner.close()


class HttpDeviceSink:
    """Field devices posting their readings to a worker's ``POST /v1/readings`` (one request
    per message, as a gateway would), honouring 429/503 ``Retry-After``. Camera frames are not
    device readings: they are left to the other sinks."""

    def __init__(self, url: str, token: str, *, max_retries: int = 20) -> None:
        self.url = url.rstrip("/") + "/v1/readings"
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.max_retries = max_retries
        self.accepted = 0
        self.refused: dict[int, int] = {}
        self._session: Any = None

    async def send(self, message: StreamMessage) -> None:
        if message.topic not in TEXT_TOPICS:
            return
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession()
        for _ in range(self.max_retries):
            async with self._session.post(self.url, data=message.value,
                                          headers=self.headers) as response:
                answer = await response.json(content_type=None)
                if response.status in (429, 503):
                    await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
                    continue
                self.accepted += int(answer.get("accepted", 0)) if isinstance(answer, dict) \
                    else 0
                if response.status != 202:
                    self.refused[response.status] = self.refused.get(response.status, 0) + 1
                return
        raise RuntimeError(f"{self.url} kept refusing (429/503) after {self.max_retries} tries")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class MqttDeviceSink:
    """Field devices publishing over MQTT: each device's readings to
    ``PREFIX/SITE/DEVICE/readings`` with QoS 1 (what ``simpang mqtt-bridge`` reads)."""

    def __init__(self, settings: Settings, site_id: str) -> None:
        self.mqtt = settings.mqtt
        self.site_id = site_id
        self.published = 0
        self._client: Any = None

    async def send(self, message: StreamMessage) -> None:
        if message.topic not in TEXT_TOPICS:
            return
        import aiomqtt

        if self._client is None:
            mqtt = self.mqtt
            self._client = aiomqtt.Client(
                mqtt.host, mqtt.port, username=mqtt.username,
                password=mqtt.password.get_secret_value() if mqtt.password else None)
            await self._client.__aenter__()
        by_device: dict[str, list[Any]] = {}
        parsed = json.loads(message.value)
        for reading in parsed if isinstance(parsed, list) else [parsed]:
            by_device.setdefault(str(reading.get("device_id")), []).append(reading)
        prefix = self.mqtt.topic_prefix.strip("/")
        for device, readings in by_device.items():
            await self._client.publish(f"{prefix}/{self.site_id}/{device}/readings",
                                       json.dumps(readings, separators=(",", ":")), qos=1)
            self.published += len(readings)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.__aexit__(None, None, None)
            self._client = None


def read_record(path: Path) -> tuple[dict[str, Any], Iterator[StreamMessage]]:
    """The header of a record file and an iterator over its messages."""
    handle = path.open(encoding="utf-8")
    header = json.loads(handle.readline() or "{}")
    if header.get("format") != RECORD_FORMAT:
        handle.close()
        raise ValueError(f"{path}: not a Simpang stream record (no {RECORD_FORMAT!r} header)")

    def messages() -> Iterator[StreamMessage]:
        with handle:
            for line in handle:
                if line.strip():
                    yield StreamMessage.from_json(line)

    return header, messages()


class Pacer:
    """Keeps simulated time ``speed`` times faster than wall time (``None``: no waiting)."""

    def __init__(self, speed: float | None) -> None:
        self.speed = speed
        self._wall_start = time.monotonic()
        self._sim_start: float | None = None

    async def wait_for(self, t_s: float) -> None:
        if self._sim_start is None:
            self._sim_start = t_s
        if self.speed is None:
            await asyncio.sleep(0)
            return
        due = self._wall_start + (t_s - self._sim_start) / self.speed
        delay = due - time.monotonic()
        await asyncio.sleep(max(delay, 0.0))


async def replay(path: Path, sinks: list[MessageSink], *, speed: float | None) -> int:
    """Publish a record again, message for message, paced by its ``t``; returns the count."""
    _, messages = read_record(path)
    pacer = Pacer(speed)
    count = 0
    for message in messages:
        await pacer.wait_for(message.t_s)
        for sink in sinks:
            await sink.send(message)
        count += 1
    return count
