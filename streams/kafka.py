"""Kafka connection settings shared by the Faust app and plain aiokafka clients (SASL/TLS
passed through), topic pre-creation, and end offsets that are right on Tansu too."""

from __future__ import annotations

import contextlib
import logging
import ssl
import time
from collections.abc import Iterable
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaTimeoutError, TopicAlreadyExistsError

from simpang.settings import KafkaSettings, Settings

log = logging.getLogger("simpang.kafka")

APP_TOPICS = (
    "sensor_readings",
    "camera_frames",
    "normalised_readings",
    "approach_metrics",
    "dead_letters",
    "vehicle_crossings",
    "camera_health",
    "detector_health",
    "pipeline_health",
    "timing_recommendations",
    "signal_plans",
)


def _ssl_context(kafka: KafkaSettings) -> ssl.SSLContext | None:
    if kafka.security_protocol not in ("SSL", "SASL_SSL"):
        return None
    context = ssl.create_default_context(cafile=str(kafka.ssl_cafile) if kafka.ssl_cafile else None)
    if kafka.ssl_certfile:
        context.load_cert_chain(
            str(kafka.ssl_certfile), str(kafka.ssl_keyfile) if kafka.ssl_keyfile else None
        )
    return context


def aiokafka_kwargs(kafka: KafkaSettings) -> dict[str, Any]:
    """Connection keyword arguments for aiokafka producers, consumers and admin clients."""
    kwargs: dict[str, Any] = {
        "bootstrap_servers": kafka.broker_list(),
        "security_protocol": kafka.security_protocol,
    }
    context = _ssl_context(kafka)
    if context is not None:
        kwargs["ssl_context"] = context
    if kafka.security_protocol.startswith("SASL"):
        kwargs["sasl_mechanism"] = kafka.sasl_mechanism
        kwargs["sasl_plain_username"] = kafka.sasl_username
        kwargs["sasl_plain_password"] = (
            kafka.sasl_password.get_secret_value() if kafka.sasl_password else None
        )
    return kwargs


def faust_credentials(kafka: KafkaSettings) -> faust.SASLCredentials | faust.SSLCredentials | None:
    context = _ssl_context(kafka)
    if kafka.security_protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=kafka.sasl_username,
            password=kafka.sasl_password.get_secret_value() if kafka.sasl_password else None,
            mechanism=kafka.sasl_mechanism,
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


async def ensure_topics(settings: Settings) -> None:
    """Create the application's topics with the configured partitions, if missing."""
    admin = AIOKafkaAdminClient(**aiokafka_kwargs(settings.kafka))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(
                settings.topics.name(topic),
                settings.topics.partitions,
                settings.topics.replication_factor,
            )
            for topic in APP_TOPICS
            if settings.topics.name(topic) not in existing
        ]
        if wanted:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(wanted)
    finally:
        await admin.close()


async def end_offsets_by_fetch(consumer: AIOKafkaConsumer, partitions: Iterable[TopicPartition],
                               *, timeout_s: float = 10.0) -> dict[TopicPartition, int]:
    """The offset the next record of each partition will get, read from a fetch response.

    Tansu answers ListOffsets (``end_offsets``) with the last record *batch*'s base offset
    + 1: after one batch of three records at offsets 0-2 it says 1 where Kafka says 3.
    Whatever reads a partition "up to its end" then stops inside the last batch; Faust's
    table recovery did, and a worker taking over partitions rebuilt its windows without the
    last few changelog records. A fetch response's high-water mark is right on both brokers,
    so each non-empty partition is fetched from just before the end ListOffsets named (in
    the last batch on Tansu, the last record on Kafka) and its high-water mark taken.

    ``consumer``: started, in no group and used for nothing else meanwhile; it is left
    assigned to ``partitions`` at unspecified positions.
    """
    wanted = [TopicPartition(tp.topic, tp.partition) for tp in partitions]
    ends: dict[TopicPartition, int] = dict(await consumer.end_offsets(wanted))
    non_empty = [tp for tp in wanted if ends[tp] > 0]
    consumer.assign(wanted)
    for tp in non_empty:
        consumer.seek(tp, ends[tp] - 1)
    listed = dict(ends)
    pending = set(non_empty)
    deadline = time.monotonic() + timeout_s
    while pending:
        if time.monotonic() > deadline:
            raise KafkaTimeoutError(f"no fetch answered for {sorted(map(str, pending))} in "
                                    f"{timeout_s:g} s")
        await consumer.getmany(*pending, timeout_ms=200)
        for tp in list(pending):
            highwater = consumer.highwater(tp)
            if highwater is not None:
                ends[tp] = max(ends[tp], highwater)
                pending.discard(tp)
    short = {f"{tp.topic}:{tp.partition}": f"{listed[tp]}→{ends[tp]}"
             for tp in wanted if ends[tp] != listed[tp]}
    if short:
        log.info("end offsets: ListOffsets answered short of the fetched ends: %s", short)
    return ends
