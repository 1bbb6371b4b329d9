"""Test fixture: an HTTP server that turns InfluxDB v2 writes into InfluxDB 1.x writes.

The InfluxDB on the test machines is Debian's 1.6, which has ``/write`` but no
``/api/v2/write``. Simpang's sink speaks the v2 write API (influxdb-client), so the tests put
this in front of the real server: ``POST /api/v2/write?bucket=B&precision=P`` becomes
``POST /write?db=B&precision=p`` with the same line-protocol body, and the 1.x answer (204,
400 with the error, 404 for a missing database, ...) is passed back unchanged. Nothing else
is translated; queries go to the real server directly.
"""

from __future__ import annotations

import asyncio
import threading

import aiohttp
from aiohttp import web

from streams.embedded import free_port

V2_TO_V1_PRECISION = {"ns": "n", "us": "u", "ms": "ms", "s": "s"}


class InfluxV2WriteForwarder:
    def __init__(self, target_url: str) -> None:
        self.target_url = target_url.rstrip("/")
        self.port = free_port()
        self.writes = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _write(self, request: web.Request) -> web.Response:
        bucket = request.query.get("bucket")
        if not bucket:
            return web.json_response(
                {"code": "invalid", "message": "bucket is required"}, status=400
            )
        precision = V2_TO_V1_PRECISION.get(request.query.get("precision", "ns"))
        if precision is None:
            return web.json_response({"code": "invalid", "message": "bad precision"}, status=400)
        body = await request.read()
        assert self._session is not None
        async with self._session.post(
            f"{self.target_url}/write", params={"db": bucket, "precision": precision}, data=body
        ) as upstream:
            payload = await upstream.read()
            self.writes += 1
            return web.Response(
                status=upstream.status, body=payload,
                content_type=upstream.content_type if payload else None,
            )

    async def _start(self) -> None:
        self._session = aiohttp.ClientSession()
        application = web.Application(client_max_size=64 * 1024 * 1024)
        application.router.add_post("/api/v2/write", self._write)
        self._runner = web.AppRunner(application, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    def start(self) -> InfluxV2WriteForwarder:
        """Serve on ``self.port``; after :meth:`stop`, serves again on the same port."""
        if not self._thread.is_alive():
            self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    def stop(self) -> None:
        """Close the port (clients then get 'connection refused', as from a stopped server)."""
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=10)

    def close(self) -> None:
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
