"""``simpang dead-letters tail``: the latest rejected messages, from the ``dead-letters`` topic.

Prints the latest rejected messages of the past day (newest last, across partitions by
time), optionally keeps following, and filters by source prefix or reason code.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError

from simpang.records import DeadLetter
from simpang.settings import Settings
from streams.kafka import aiokafka_kwargs


@dataclass(frozen=True)
class LetterFilter:
    source_prefix: str | None = None
    reason_code: str | None = None

    def keeps(self, letter: DeadLetter) -> bool:
        if self.source_prefix and not letter.source.startswith(self.source_prefix):
            return False
        return not self.reason_code or letter.reason_code.value == self.reason_code


async def tail(settings: Settings, *, count: int, follow: bool, only: LetterFilter,
               since_s: float = 86_400.0, idle_s: float = 1.5
               ) -> AsyncIterator[DeadLetter | str]:
    """The last ``count`` matching letters of the past ``since_s`` (oldest first), then new
    ones if ``follow``. A record that is not a dead letter is yielded as a string saying so.

    The backlog is read until the topic has been quiet for ``idle_s``, not up to the
    partitions' end offsets: Tansu reports an end offset per record batch, not per record."""
    topic = settings.topics.name("dead_letters")
    consumer = AIOKafkaConsumer(**aiokafka_kwargs(settings.kafka), group_id=None,
                                enable_auto_commit=False,
                                fetch_max_wait_ms=settings.kafka.fetch_max_wait_ms)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p)
                      for p in sorted(consumer.partitions_for_topic(topic) or [])]
        if not partitions:
            return
        consumer.assign(partitions)
        since_ms = int((time.time() - since_s) * 1000)
        found = await consumer.offsets_for_times({tp: since_ms for tp in partitions})
        for tp in partitions:
            at = found.get(tp)
            if at is None:
                await consumer.seek_to_end(tp)
            else:
                consumer.seek(tp, at.offset)
        backlog: deque[tuple[int, DeadLetter | str]] = deque()
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < idle_s:
            batches = await consumer.getmany(timeout_ms=int(idle_s * 500))
            for records in batches.values():
                quiet_since = time.monotonic()
                for record in records:
                    item = _letter(record.value, only)
                    if item is not None:
                        backlog.append((record.timestamp, item))
        for _, item in sorted(backlog, key=lambda pair: pair[0])[-count:]:
            yield item
        while follow:
            batches = await consumer.getmany(timeout_ms=1000)
            for records in batches.values():
                for record in records:
                    item = _letter(record.value, only)
                    if item is not None:
                        yield item
    finally:
        await consumer.stop()


def _letter(raw: bytes | None, only: LetterFilter) -> DeadLetter | str | None:
    try:
        letter = DeadLetter.model_validate_json(raw or b"")
    except ValidationError:
        return f"(not a dead letter: {(raw or b'')[:200]!r})"
    return letter if only.keeps(letter) else None


def collect(settings: Settings, *, count: int, only: LetterFilter) -> list[DeadLetter | str]:
    async def gather() -> list[DeadLetter | str]:
        return [item async for item in tail(settings, count=count, follow=False, only=only)]

    return asyncio.run(gather())
