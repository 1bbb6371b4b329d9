"""Faust's aiokafka transport with the consumer's fetch long-poll wait (a setting Faust does
not expose), high-water marks for table recovery taken from a fetch (Tansu's ListOffsets
answer is short of the last batch), a producer flush that really empties Faust's buffer
before a commit, and a recovery that seeks the stream partitions to their committed offsets
before it resumes them.

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
from collections.abc import Mapping
from typing import Any, cast

import aiokafka
import faust
from faust.tables import TableManager
from faust.tables.recovery import Recovery
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from streams.kafka import end_offsets_by_fetch

log = logging.getLogger("simpang.transport")


class DrainingProducer(faust_aiokafka.Producer):
    """Faust's producer, with a flush that waits until its buffer (table changelog writes)
    is empty and the message its sender has taken out of it is handed to the client.

    Faust flushes before it commits offsets and before a table recovery reads its changelog
    up to the end, but its buffer flush gives up after 0.1 s without progress, and the
    buffer's size does not count the message being sent; a commit could then cover table
    changes not yet written (the fault tests saw single readings go missing after a
    SIGKILL), and a recovery miss them. The wait is bounded: a buffer that cannot drain (the
    broker gone) does not hold the worker forever.
    """

    drain_timeout_s = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sending = 0
        send_one = self.buffer._send_pending

        async def send_counted(fut: Any) -> None:
            self.sending += 1
            try:
                await send_one(fut)
            finally:
                self.sending -= 1

        # Read by the buffer's sender task when it starts, after this.
        self.buffer._send_pending = send_counted  # type: ignore[method-assign]

    async def flush(self) -> None:
        deadline = time.monotonic() + self.drain_timeout_s
        while (self.buffer.size or self.sending) and not self.buffer.should_stop:
            if time.monotonic() > deadline:
                log.warning("producer buffer still holds %d messages after %.0f s",
                            self.buffer.size + self.sending, self.drain_timeout_s)
                break
            await asyncio.sleep(0.005)
        await super().flush()


class GuardedRecovery(Recovery):
    """Faust's table recovery, with the stream partitions put at their committed offsets
    while they are still paused, and a measure of a recovery that has stalled.

    Faust resumes them first and seeks afterwards. Records the consumer fetched in between,
    at whatever position it held for a newly assigned partition, reach the agents ahead of
    the older records the seek then brings back: after a takeover, the fault tests saw a
    partition's newest readings handled before the backlog, whose windows then closed early
    and whose readings counted as replays. A seek discards what was fetched at another
    position, so doing it first leaves nothing out of order.
    """

    async def on_recovery_completed(self, generation_id: int = 0) -> None:
        consumer = self.app.consumer
        if self.app.consumer_generation_id == generation_id and consumer.assignment():
            await self._wait(consumer.perform_seek(),
                             timeout=self.app.conf.broker_request_timeout)
        await super().on_recovery_completed(generation_id)

    def stalled_for_s(self) -> float:
        """Seconds this recovery has gone without a changelog record arriving for the active
        partitions it still has to read (since it started, or since the last record); 0 when
        it is not waiting so. A slow recovery (a long changelog) is not stalled: any record
        counts as progress."""
        started = self._recovery_started_at
        if not self.in_recovery or started is None or not self.need_recovery():
            return 0.0
        last = max(self._active_events_received_at.values(), default=started)
        return time.monotonic() - max(last, started)

    async def reseek_changelogs(self) -> dict[Any, int]:
        """Seek every active changelog partition with records left to just after the last
        record applied; returns the offsets sought.

        Faust's consumer drops records it has already taken from the client when the
        generation changes or the partition set moves under it (its stream partitions are
        sought back to their commits afterwards, its changelog partitions are not); a stalled
        recovery was seen with the client's positions at the changelog ends and not one
        record received. Records read twice are harmless: recovery applies an offset once.
        """
        offsets = {tp: max(0, self.active_offsets[tp] + 1)
                   for tp, remaining in self.active_remaining().items() if remaining > 0}
        if offsets:
            await self.app.consumer.seek_wait(offsets)
        return offsets


def recovery_diagnostics(app: Any) -> str:
    """The consumer's state as far as a stalled recovery is concerned, for the log."""

    def by_topic(tps: Any) -> str:
        topics: dict[str, list[int]] = {}
        for tp in tps:
            topics.setdefault(tp.topic, []).append(tp.partition)
        return " ".join(f"{t}{sorted(p)}" for t, p in sorted(topics.items()))

    consumer = app.consumer
    recovery = app.tables.recovery
    try:
        client = consumer._thread._ensure_consumer()
        fetcher = client._fetcher
        assignment = client._subscription.subscription.assignment
        positions = {f"{tp.topic}:{tp.partition}": assignment.state_value(tp).position
                     for tp in recovery.active_tps}
        return (f"flow_active={consumer.flow_active} "
                f"can_resume_flow={consumer.can_resume_flow.is_set()} "
                f"suspend_flow={consumer.suspend_flow.is_set()} "
                f"flow_control={app.flow_control.is_active()} "
                f"faust_active=[{by_topic(consumer._active_partitions or ())}] "
                f"client_paused=[{by_topic(client.paused())}] "
                f"positions={positions} "
                f"buffered=[{by_topic(fetcher._records)}] "
                f"fetch_task_done={fetcher._fetch_task.done()} "
                f"active_offsets={dict(recovery.active_offsets)} "
                f"active_highwaters={dict(recovery.active_highwaters)} "
                f"changelog_queue={app.tables.changelog_queue.qsize()}")
    except Exception as exc:  # diagnostics must never be what fails
        return f"diagnostics unavailable: {exc!r}"


class GuardedTableManager(TableManager):
    """Faust's table manager with :class:`GuardedRecovery`."""

    @property
    def recovery(self) -> GuardedRecovery:
        if self._recovery is None:
            self._recovery = GuardedRecovery(self.app, self, beacon=self.beacon,
                                             loop=self.loop)
        return cast(GuardedRecovery, self._recovery)


def transport_with_fetch_wait(fetch_max_wait_ms: int) -> type[faust_aiokafka.Transport]:
    class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
            consumer = super()._create_worker_consumer(transport)
            # Read when the consumer starts its fetcher, which has not happened yet.
            consumer._fetch_max_wait_ms = fetch_max_wait_ms
            return consumer

        async def _highwaters(self, partitions: list[TP]) -> Mapping[TP, int]:
            # Table recovery reads each changelog up to these; Tansu's ListOffsets answer
            # ends them inside the last record batch (see end_offsets_by_fetch).
            if self.consumer.in_transaction:
                return cast(Mapping[TP, int], await super()._highwaters(partitions))
            probe = self._create_client_consumer(self.transport)
            await probe.start()
            try:
                ends = await end_offsets_by_fetch(
                    probe, partitions, timeout_s=self.app.conf.broker_request_timeout)
            finally:
                await probe.stop()
            return {tp: ends[tp] for tp in partitions}

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
