"""``simpang worker``: one Faust worker process."""

from __future__ import annotations

import asyncio
import gc
import logging
import logging.config
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import faust
from aiokafka.errors import KafkaConnectionError
from pythonjsonlogger.json import JsonFormatter

from simpang.settings import Settings
from simpang.site_file import load_site
from streams.app import create_app
from streams.kafka import ensure_topics
from streams.sink import PointSink

log = logging.getLogger("simpang.worker")

EXIT_SHUTDOWN_TIMEOUT = 70
# EX_TEMPFAIL: start me again (a stalled table recovery; see streams.app).
EXIT_RECOVERY_STALLED = 75
DRAIN_TIMEOUT_S = 8.0


class BoundedWorker(faust.Worker):
    """A Faust worker that exits at most ``shutdown_timeout_s`` after SIGTERM/SIGINT.

    Leaving the consumer group can hang for tens of seconds; nothing is lost by cutting it
    short, because offsets are committed only for work that is done.
    """

    def __init__(
        self, *args: object, shutdown_timeout_s: float, sink: PointSink, **kwargs: object
    ) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        # Faust's terminal spinner, when on (log level warning or above), turns the root
        # logger to DEBUG so it can spin on every record: every client debug call then
        # builds a LogRecord, a tenth of the worker's CPU.
        self.spinner = None
        self.shutdown_timeout_s = shutdown_timeout_s
        self.sink = sink
        self._draining = False

    async def on_startup_finished(self) -> None:
        await super().on_startup_finished()
        # Everything built so far lives as long as the process; a full garbage collection
        # walked all of it (30-60 ms with the event loop stopped, the slowest HTTP answers
        # in bench/ingest.py). Frozen, it is no longer scanned.
        gc.freeze()

    async def on_stop(self) -> None:
        await super().on_stop()
        await self.sink.close()

    def _arm_deadline(self) -> None:
        timer = threading.Timer(self.shutdown_timeout_s, os._exit, args=(EXIT_SHUTDOWN_TIMEOUT,))
        timer.daemon = True
        timer.start()

    def _on_sigterm(self) -> None:
        self._stop_after_drain(super()._on_sigterm)

    def _on_sigint(self) -> None:
        self._stop_after_drain(super()._on_sigint)

    def _stop_after_drain(self, stop: Callable[[], None]) -> None:
        if self._draining:  # a second signal: stop without waiting for the drain
            stop()
            return
        self._draining = True
        self._arm_deadline()

        async def drain_then_stop() -> None:
            try:
                await asyncio.wait_for(drain(self.app), DRAIN_TIMEOUT_S)
            except Exception:  # a failed drain costs a replay, never the stop
                log.warning("drain before stop incomplete; the next worker reads the rest "
                            "again", exc_info=True)
            stop()

        self.add_future(drain_then_stop())


async def drain(app: Any) -> None:
    """Stop taking messages, let the agents finish what they hold, send every buffered
    message (table changelogs included), then commit.

    Faust's own stop commits after its buffer has begun to stop, when what is still in it may
    never go out; table changes would then be lost while the offsets they came from were
    committed. Done first, while everything still runs, the stop has nothing left to lose.
    """
    consumer = app.consumer
    assignment = consumer.assignment()
    # Faust's own revoke sequence: no more messages handed to the streams, and what was
    # fetched but not yet taken by an agent is dropped (uncommitted: read again later).
    consumer.stop_flow()
    app.flow_control.suspend()
    consumer.pause_partitions(assignment)
    app.flow_control.clear()
    await consumer.wait_empty()
    await app.producer.flush()  # streams.transport.DrainingProducer: the buffer too
    await consumer.commit()
    log.info("drained: every message taken is processed, sent and committed")


def json_logging_config(settings: Settings) -> dict[str, Any]:
    """A :func:`logging.config.dictConfig` for one JSON object per line: ts, level, logger,
    message, worker, and whatever a call passes in ``extra`` (intersection, camera, device).

    A new dict on every call: dictConfig and mode both consume keys of the one they get.
    """
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {
            "()": JsonFormatter,
            "fmt": ["levelname", "name", "message"],
            "rename_fields": {"levelname": "level", "name": "logger"},
            "static_fields": {"worker": settings.worker_id},
            "timestamp": "ts",
        }},
        # stderr, where mode's text handler writes too.
        "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "json",
                                 "stream": "ext://sys.stderr"}},
        "root": {"level": settings.log_level.upper(), "handlers": ["default"]},
    }


def prepare_topics(settings: Settings, *, timeout_s: float = 60.0) -> None:
    """Create the app's topics, waiting for the broker to come up."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            asyncio.run(ensure_topics(settings))
            return
        except KafkaConnectionError:
            if time.monotonic() > deadline:
                raise
            log.warning("broker %s not reachable yet; retrying", settings.kafka.brokers)
            time.sleep(1.0)


def run_worker(settings: Settings, *, shutdown_timeout_s: float = 15.0) -> None:
    json_logs = settings.log_format == "json"
    if json_logs:  # from the first line; the Worker sets the same config up again
        logging.config.dictConfig(json_logging_config(settings))
    site = load_site(settings.site_file)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    prepare_topics(settings)
    # Nothing is lost by the hard exit: offsets are committed only for work that is done.
    simpang_app = create_app(settings, site,
                             on_recovery_stalled=lambda: os._exit(EXIT_RECOVERY_STALLED))
    log.info("sink: %s", simpang_app.sink.description)
    worker = BoundedWorker(
        simpang_app.faust_app,
        loglevel=settings.log_level,
        # mode's Worker builds its own dictConfig (colored text) when it starts unless given
        # one; None keeps that text format.
        logging_config=json_logging_config(settings) if json_logs else None,
        shutdown_timeout_s=shutdown_timeout_s,
        sink=simpang_app.sink,
    )
    worker.execute_from_commandline()
