"""Faust's aiokafka transport with the consumer's fetch long-poll wait (a setting Faust does
not expose) and a producer flush that really empties Faust's buffer before a commit.

Faust hard-codes ``fetch_max_wait_ms=1500``. Apache Kafka answers a waiting fetch as soon as
data arrives, so the value only bounds idle polls there; Tansu answers only when the wait
runs out, so every hop between agents (sensor-readings → ingest → normalised-readings →
metrics → approach-metrics → sink) can add up to the full wait. ``bench/stream.py`` measured
Tansu's delivery latency at a median of 0.48 s with 1,500 ms and 0.012 s with 100 ms.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiokafka
import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

log = logging.getLogger("simpang.transport")


class DrainingProducer(faust_aiokafka.Producer):
    """Faust's producer, with a flush that waits until its buffer (table changelog writes)
    is empty.

    Faust flushes before it commits offsets, but its buffer flush gives up after 0.1 s
    without progress; a commit could then cover table changes still in the buffer, and a
    crash right after lose them (the fault tests saw single readings go missing after a
    SIGKILL). The wait is bounded: a buffer that cannot drain (the broker gone) does not hold
    the worker forever.
    """

    drain_timeout_s = 30.0

    async def flush(self) -> None:
        deadline = time.monotonic() + self.drain_timeout_s
        while self.buffer.size and not self.buffer.should_stop:
            if time.monotonic() > deadline:
                log.warning("producer buffer still holds %d messages after %.0f s",
                            self.buffer.size, self.drain_timeout_s)
                break
            await asyncio.sleep(0.005)
        await super().flush()


def transport_with_fetch_wait(fetch_max_wait_ms: int) -> type[faust_aiokafka.Transport]:
    class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
            consumer = super()._create_worker_consumer(transport)
            # Read when the consumer starts its fetcher, which has not happened yet.
            consumer._fetch_max_wait_ms = fetch_max_wait_ms
            return consumer

    class FetchWaitConsumer(faust_aiokafka.Consumer):
        def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
            return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    class Transport(faust_aiokafka.Transport):
        Consumer = FetchWaitConsumer
        Producer = DrainingProducer

    return Transport


class SimpangFaustApp(faust.App):
    """A Faust app whose Kafka consumer polls with ``fetch_max_wait_ms``."""

    def __init__(self, *args: Any, fetch_max_wait_ms: int, **kwargs: Any) -> None:
        self._fetch_max_wait_ms = fetch_max_wait_ms
        super().__init__(*args, **kwargs)

    def _new_transport(self) -> Any:
        transport_cls = transport_with_fetch_wait(self._fetch_max_wait_ms)
        return transport_cls(self.conf.broker_consumer, self)
