"""``simpang worker``: one Faust worker process."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time

import faust
from aiokafka.errors import KafkaConnectionError

from simpang.settings import Settings
from simpang.site_file import load_site
from streams.app import create_app
from streams.kafka import ensure_topics
from streams.sink import PointSink

log = logging.getLogger("simpang.worker")

EXIT_SHUTDOWN_TIMEOUT = 70


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

    async def on_stop(self) -> None:
        await super().on_stop()
        await self.sink.close()

    def _arm_deadline(self) -> None:
        timer = threading.Timer(self.shutdown_timeout_s, os._exit, args=(EXIT_SHUTDOWN_TIMEOUT,))
        timer.daemon = True
        timer.start()

    def _on_sigterm(self) -> None:
        self._arm_deadline()
        super()._on_sigterm()

    def _on_sigint(self) -> None:
        self._arm_deadline()
        super()._on_sigint()


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
    site = load_site(settings.site_file)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    prepare_topics(settings)
    simpang_app = create_app(settings, site)
    log.info("sink: %s", simpang_app.sink.description)
    worker = BoundedWorker(
        simpang_app.faust_app,
        loglevel=settings.log_level,
        shutdown_timeout_s=shutdown_timeout_s,
        sink=simpang_app.sink,
    )
    worker.execute_from_commandline()
