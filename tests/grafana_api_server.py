"""Test fixture: a local HTTP server speaking the Grafana HTTP API endpoints that
``simpang dashboards push`` uses, as Grafana documents them (folders, datasources by uid,
dashboards by uid and ``/api/dashboards/db``, alert-rule provisioning). It keeps what it is
sent, answers reads from it (secrets withheld, bookkeeping fields added as Grafana adds them),
checks the bearer token, and records every request.
"""

from __future__ import annotations

import asyncio
import copy
import threading
from typing import Any

from aiohttp import web

from streams.embedded import free_port


class GrafanaAPIServer:
    def __init__(self, token: str) -> None:
        self.token = token
        self.port = free_port()
        self.requests: list[tuple[str, str]] = []
        self.bodies: list[tuple[str, str, Any]] = []
        self.folders: dict[str, dict[str, Any]] = {}
        self.datasources: dict[str, dict[str, Any]] = {}
        self.dashboards: dict[str, dict[str, Any]] = {}
        self.rules: dict[str, dict[str, Any]] = {}
        self._ids = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def writes(self) -> list[tuple[str, str]]:
        return [r for r in self.requests if r[0] != "GET"]

    def _next_id(self) -> int:
        self._ids += 1
        return self._ids

    def start(self) -> GrafanaAPIServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    def close(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    async def _start(self) -> None:
        app = web.Application(middlewares=[self._auth])
        app.router.add_get("/api/folders/{uid}", self.get_folder)
        app.router.add_post("/api/folders", self.create_folder)
        app.router.add_put("/api/folders/{uid}", self.update_folder)
        app.router.add_get("/api/datasources/uid/{uid}", self.get_datasource)
        app.router.add_post("/api/datasources", self.create_datasource)
        app.router.add_put("/api/datasources/uid/{uid}", self.update_datasource)
        app.router.add_get("/api/dashboards/uid/{uid}", self.get_dashboard)
        app.router.add_post("/api/dashboards/db", self.save_dashboard)
        app.router.add_get("/api/v1/provisioning/alert-rules/{uid}", self.get_rule)
        app.router.add_post("/api/v1/provisioning/alert-rules", self.create_rule)
        app.router.add_put("/api/v1/provisioning/alert-rules/{uid}", self.update_rule)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response({"message": "invalid API key"}, status=401)
        if request.can_read_body:
            self.bodies.append((request.method, request.path, await request.json()))
        response: web.StreamResponse = await handler(request)
        return response

    @staticmethod
    def _not_found(what: str) -> web.Response:
        return web.json_response({"message": f"{what} not found"}, status=404)

    async def get_folder(self, request: web.Request) -> web.Response:
        folder = self.folders.get(request.match_info["uid"])
        return web.json_response(folder) if folder else self._not_found("folder")

    async def create_folder(self, request: web.Request) -> web.Response:
        body = await request.json()
        if not body.get("title"):
            return web.json_response({"message": "folder title cannot be empty"}, status=400)
        if body.get("uid") in self.folders:
            return web.json_response({"message": "a folder with that uid exists"}, status=409)
        folder = {"id": self._next_id(), "uid": body["uid"], "title": body["title"],
                  "version": 1}
        self.folders[folder["uid"]] = folder
        return web.json_response(folder)

    async def update_folder(self, request: web.Request) -> web.Response:
        folder = self.folders.get(request.match_info["uid"])
        if folder is None:
            return self._not_found("folder")
        folder.update(title=(await request.json())["title"], version=folder["version"] + 1)
        return web.json_response(folder)

    async def get_datasource(self, request: web.Request) -> web.Response:
        found = self.datasources.get(request.match_info["uid"])
        if found is None:
            return self._not_found("data source")
        shown = {k: v for k, v in found.items() if k != "secureJsonData"}
        shown["secureJsonFields"] = {k: True for k in found.get("secureJsonData", {})}
        return web.json_response(shown)

    async def create_datasource(self, request: web.Request) -> web.Response:
        body = await request.json()
        if any(d["name"] == body.get("name") for d in self.datasources.values()):
            return web.json_response({"message": "data source with the same name already "
                                                 "exists"}, status=409)
        stored = {**body, "id": self._next_id(), "orgId": 1, "readOnly": False}
        self.datasources[body["uid"]] = stored
        return web.json_response({"datasource": stored, "id": stored["id"],
                                  "message": "Datasource added", "name": body["name"]})

    async def update_datasource(self, request: web.Request) -> web.Response:
        found = self.datasources.get(request.match_info["uid"])
        if found is None:
            return self._not_found("data source")
        body = await request.json()
        secure = body.get("secureJsonData") or found.get("secureJsonData")
        found.clear()
        found.update({**body, "id": found.get("id", self._next_id()), "orgId": 1})
        if secure:
            found["secureJsonData"] = secure
        return web.json_response({"datasource": found, "message": "Datasource updated"})

    async def get_dashboard(self, request: web.Request) -> web.Response:
        found = self.dashboards.get(request.match_info["uid"])
        if found is None:
            return self._not_found("dashboard")
        return web.json_response(copy.deepcopy(found))

    async def save_dashboard(self, request: web.Request) -> web.Response:
        body = await request.json()
        dashboard = body["dashboard"]
        folder = body.get("folderUid")
        if folder and folder not in self.folders:
            return web.json_response({"message": "folder not found"}, status=400)
        existing = self.dashboards.get(dashboard.get("uid", ""))
        if existing and not body.get("overwrite"):
            return web.json_response({"message": "version-mismatch"}, status=412)
        version = existing["dashboard"]["version"] + 1 if existing else 1
        dashboard_id = existing["dashboard"]["id"] if existing else self._next_id()
        stored = {**dashboard, "id": dashboard_id, "version": version}
        self.dashboards[dashboard["uid"]] = {"dashboard": stored,
                                             "meta": {"folderUid": folder, "slug": "x"}}
        return web.json_response({"id": dashboard_id, "uid": dashboard["uid"],
                                  "status": "success", "version": version})

    async def get_rule(self, request: web.Request) -> web.Response:
        found = self.rules.get(request.match_info["uid"])
        return web.json_response(found) if found else self._not_found("alert rule")

    def _rule_problem(self, body: dict[str, Any]) -> str | None:
        if body.get("folderUID") not in self.folders:
            return "folder does not exist"
        for key in ("title", "condition", "data", "ruleGroup", "for", "noDataState",
                    "execErrState"):
            if key not in body:
                return f"{key} is required"
        if body["condition"] not in {step["refId"] for step in body["data"]}:
            return "condition is not a refId of data"
        return None

    async def create_rule(self, request: web.Request) -> web.Response:
        body = await request.json()
        problem = self._rule_problem(body)
        if problem:
            return web.json_response({"message": problem}, status=400)
        stored = {**body, "id": self._next_id(), "updated": "2026-01-01T00:00:00Z",
                  "provenance": "api"}
        self.rules[body["uid"]] = stored
        return web.json_response(stored, status=201)

    async def update_rule(self, request: web.Request) -> web.Response:
        found = self.rules.get(request.match_info["uid"])
        if found is None:
            return self._not_found("alert rule")
        body = await request.json()
        problem = self._rule_problem(body)
        if problem:
            return web.json_response({"message": problem}, status=400)
        found.update(body)
        return web.json_response(found)
