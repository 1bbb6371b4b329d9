"""A small InfluxQL client over ``/query`` (InfluxDB 1.x, 2.x with a DBRP mapping, 3.x).

influxdb-client queries only in Flux, which InfluxDB 3 dropped; dashboards, tests and
benchmarks all read with InfluxQL through this.
"""

from __future__ import annotations

import json
from typing import Any

import urllib3


class InfluxQLError(RuntimeError):
    pass


class InfluxQL:
    def __init__(self, url: str, database: str, *, token: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.database = database
        self.headers = {"Authorization": f"Token {token}"} if token else {}
        self.http = urllib3.PoolManager(timeout=urllib3.Timeout(total=30))

    def raw(self, query: str, *, method: str = "GET") -> dict[str, Any]:
        response = self.http.request(
            method,
            f"{self.url}/query",
            fields={"db": self.database, "q": query, "epoch": "ns"},
            headers=self.headers,
        )
        if response.status >= 300:
            raise InfluxQLError(f"{response.status}: {response.data[:500]!r}")
        body: dict[str, Any] = json.loads(response.data)
        for result in body.get("results", []):
            if "error" in result:
                raise InfluxQLError(result["error"])
        return body

    def rows(self, query: str) -> list[dict[str, Any]]:
        """Rows of every series of the first statement, tags merged into each row."""
        out: list[dict[str, Any]] = []
        for result in self.raw(query).get("results", [])[:1]:
            for series in result.get("series", []):
                tags = series.get("tags", {})
                for values in series["values"]:
                    out.append({**tags, **dict(zip(series["columns"], values, strict=True))})
        return out

    def create_database(self) -> None:
        self.raw(f'CREATE DATABASE "{self.database}"', method="POST")

    def drop_database(self) -> None:
        self.raw(f'DROP DATABASE "{self.database}"', method="POST")
