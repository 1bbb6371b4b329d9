"""``simpang mqtt-bridge``: readings that field devices publish over MQTT, into Kafka.

Devices publish to ``PREFIX/SITE/DEVICE/readings`` (QoS 1), one reading or a batch, the same
JSON as every other path. The bridge subscribes with a fixed client id and a persistent
session, validates each message like the ingest agent does, refuses readings that name
another device than their topic (a device may publish only under its own topic; the broker's
ACL, e.g. Mosquitto's ``pattern write simpang/+/%u/readings``, enforces the same at the
broker), drops re-sends (device + ``seq``), and produces the rest to ``sensor-readings`` and
every refusal to ``dead-letters``. A message is acknowledged to the MQTT broker only after
Kafka has acknowledged what came of it, so a bridge that dies loses nothing: the broker
sends the unacknowledged messages again (at least once).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiomqtt
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from simpang.devices import SeqDeduplicator
from simpang.records import DeadLetter, NormalisedReading, RejectReason
from simpang.settings import Settings
from simpang.site import Site
from streams.ingest import FieldError, ReadingValidator, Rejection, Screened, screen
from streams.kafka import aiokafka_kwargs

log = logging.getLogger("simpang.mqtt")


@dataclass
class BridgeCounters:
    messages: int = 0
    readings_in: int = 0
    accepted: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    reconnects: int = 0


class MqttDecision:
    """What becomes of one MQTT message (pure; the bridge does the I/O)."""

    def __init__(self, validator: ReadingValidator, *, topic_prefix: str) -> None:
        self.validator = validator
        self.site_id = validator.site.id
        self.prefix = topic_prefix.strip("/")
        self.dedup = SeqDeduplicator()

    @property
    def subscription(self) -> str:
        return f"{self.prefix}/{self.site_id}/+/readings"

    def device_of(self, topic: str) -> str | None:
        parts = topic.split("/")
        prefix = self.prefix.split("/")
        if (len(parts) != len(prefix) + 3 or parts[:len(prefix)] != prefix
                or parts[-3] != self.site_id or parts[-1] != "readings" or not parts[-2]):
            return None
        return parts[-2]

    def handle(self, topic: str, payload: bytes, *, message_id: str,
               received_at: datetime) -> tuple[Screened, int]:
        """The screened readings and how many the message held."""
        source = f"mqtt:{topic}"
        device = self.device_of(topic)
        if device is None:
            rejection = Rejection(None, RejectReason.FORBIDDEN, (FieldError(
                "", f"topic {topic!r} is not {self.prefix}/{self.site_id}/<device>/readings"),))
            letter = DeadLetter.of(id=message_id, source=source,
                                   reason_code=rejection.reason_code, reason=rejection.reason,
                                   raw=payload, ts=received_at)
            return Screened(rejections=[rejection], dead_letters=[letter]), 1
        result = self.validator.validate(payload, source=source, message_id=message_id,
                                         received_at=received_at)

        def forbidden(reading: NormalisedReading) -> str | None:
            if reading.device_id == device:
                return None
            return f"published under {topic!r} but names device {reading.device_id!r}"

        return screen(result, forbidden=forbidden, dedup=self.dedup, message_id=message_id,
                      source=source, received_at=received_at), result.readings_in


async def run_bridge(settings: Settings, site: Site, *, stop: asyncio.Event | None = None,
                     ready: asyncio.Event | None = None) -> BridgeCounters:
    """Bridge until ``stop`` is set, reconnecting to the MQTT broker with backoff."""
    stop = stop or asyncio.Event()
    mqtt = settings.mqtt
    decision = MqttDecision(
        ReadingValidator(site, max_future_skew_s=settings.windows.max_future_skew_s),
        topic_prefix=mqtt.topic_prefix)
    counters = BridgeCounters()
    producer = AIOKafkaProducer(**aiokafka_kwargs(settings.kafka), acks="all",
                                linger_ms=5)
    await producer.start()
    backoff_s = 0.5
    try:
        while not stop.is_set():
            client = aiomqtt.Client(
                mqtt.host, mqtt.port, username=mqtt.username,
                password=mqtt.password.get_secret_value() if mqtt.password else None,
                identifier=mqtt.client_id, clean_session=False, keepalive=30)
            # Acknowledge (PUBACK) only once Kafka has the readings; aiomqtt does not expose
            # paho's manual acknowledgement, so reach its client for it.
            client._client.manual_ack_set(True)
            try:
                async with client:
                    await client.subscribe(decision.subscription, qos=1)
                    log.info("mqtt-bridge: subscribed to %s on %s:%d", decision.subscription,
                             mqtt.host, mqtt.port)
                    backoff_s = 0.5
                    if ready is not None:
                        ready.set()
                    await _pump(client, decision, producer, settings, counters, stop)
            except (aiomqtt.MqttError, KafkaError) as exc:
                # Unacknowledged messages come again on the next session.
                if stop.is_set():
                    break
                counters.reconnects += 1
                log.warning("mqtt-bridge: %s; reconnecting in %.1f s", exc, backoff_s)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff_s)
                backoff_s = min(backoff_s * 2, 30.0)
    finally:
        await producer.stop()
    return counters


async def _pump(client: aiomqtt.Client, decision: MqttDecision, producer: AIOKafkaProducer,
                settings: Settings, counters: BridgeCounters, stop: asyncio.Event) -> None:
    sensor_topic = settings.topics.name("sensor_readings")
    dead_topic = settings.topics.name("dead_letters")
    messages = aiter(client.messages)
    stopping = asyncio.ensure_future(stop.wait())
    logged_at = 0.0
    try:
        while True:
            following = asyncio.ensure_future(anext(messages))
            done, _ = await asyncio.wait({following, stopping},
                                         return_when=asyncio.FIRST_COMPLETED)
            if stopping in done:
                following.cancel()
                return
            batch = [following.result()]
            while len(client.messages) and len(batch) < settings.mqtt.max_batch_messages:
                batch.append(await anext(messages))
            await _forward(batch, decision, producer, sensor_topic, dead_topic, counters)
            for message in batch:
                client._client.ack(message.mid, message.qos)
            if not len(client.messages) and time.monotonic() - logged_at >= 1.0:
                # Caught up: say how far (at most once a second).
                logged_at = time.monotonic()
                log.info("mqtt-bridge: caught up; %d messages, %d readings accepted, %d "
                         "re-sends, %d dead letters", counters.messages, counters.accepted,
                         counters.duplicates, counters.dead_letters)
    finally:
        stopping.cancel()


async def _forward(batch: list[aiomqtt.Message], decision: MqttDecision,
                   producer: AIOKafkaProducer, sensor_topic: str, dead_topic: str,
                   counters: BridgeCounters) -> None:
    received_at = datetime.now(UTC)
    futures: list[Any] = []
    fresh: list[tuple[str, int]] = []
    try:
        await _send(batch, decision, producer, sensor_topic, dead_topic, counters, futures,
                    fresh, received_at)
        await asyncio.gather(*futures)
    except BaseException:
        # Not stored: the broker sends these messages again, and they must not look re-sent.
        for device_id, seq in fresh:
            decision.dedup.forget(device_id, seq)
        raise


async def _send(batch: list[aiomqtt.Message], decision: MqttDecision,
                producer: AIOKafkaProducer, sensor_topic: str, dead_topic: str,
                counters: BridgeCounters, futures: list[Any], fresh: list[tuple[str, int]],
                received_at: datetime) -> None:
    for message in batch:
        payload = message.payload if isinstance(message.payload, bytes) else (
            str(message.payload or "").encode())
        screened, readings = decision.handle(
            str(message.topic), payload, received_at=received_at,
            message_id=f"mqtt:{message.topic}:{time.time_ns()}:{message.mid}")
        counters.messages += 1
        counters.readings_in += readings
        counters.accepted += screened.accepted
        counters.duplicates += screened.duplicates
        counters.dead_letters += len(screened.dead_letters)
        fresh.extend(screened.fresh)
        for intersection, items in screened.batches.items():
            futures.append(await producer.send(
                sensor_topic, json.dumps(items, separators=(",", ":")).encode(),
                key=intersection.encode()))
        for letter in screened.dead_letters:
            log.info("mqtt-bridge: dead letter (%s): %s", letter.reason_code.value,
                     letter.reason)
            futures.append(await producer.send(
                dead_topic, letter.model_dump_json().encode(),
                key=(letter.device_id or letter.source).encode()))
