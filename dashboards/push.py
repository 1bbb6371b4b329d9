"""``simpang dashboards push``: create or update, idempotently, the Simpang folder, the InfluxQL
datasource, the dashboards and the alert rules in a running Grafana (grafana-client).

Each object is read first and written only when it differs, so a second push changes nothing.
Secrets are never returned by Grafana: the datasource's token is written when the datasource is
created, when it has no token, or with ``rotate_token``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from grafana_client import GrafanaApi
from grafana_client.client import GrafanaClientError

from dashboards.build import FOLDER_TITLE, FOLDER_UID, JSON_DIR
from dashboards.provisioning import alert_rules, datasource

RULE_GROUP = "simpang"
# Fields Grafana adds to what it stores; they say nothing about what the object shows.
_DASHBOARD_BOOKKEEPING = {"id", "version"}


@dataclass
class PushReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (f"created {len(self.created)}, updated {len(self.updated)}, "
                f"unchanged {len(self.unchanged)}")


@dataclass(frozen=True)
class InfluxTarget:
    """The InfluxDB as Grafana reaches it (often another address than the workers')."""

    url: str
    database: str
    token: str | None = None


def _missing(exc: GrafanaClientError) -> bool:
    return exc.status_code == 404


def _datasource_body(influx: InfluxTarget) -> dict[str, Any]:
    [spec] = datasource()["datasources"]
    body = {k: v for k, v in spec.items() if k not in ("editable", "secureJsonData")}
    body["url"] = influx.url
    body["jsonData"] = {**spec["jsonData"], "dbName": influx.database}
    return body


def _differs(wanted: dict[str, Any], found: dict[str, Any]) -> bool:
    return any(found.get(key) != value for key, value in wanted.items())


def push(grafana: GrafanaApi, influx: InfluxTarget, *, rotate_token: bool = False
         ) -> PushReport:
    report = PushReport()
    _push_folder(grafana, report)
    _push_datasource(grafana, influx, report, rotate_token=rotate_token)
    for path in sorted(JSON_DIR.glob("*.json")):
        _push_dashboard(grafana, json.loads(path.read_text()), report)
    for rule in alert_rules():
        _push_rule(grafana, rule, report)
    return report


def _push_folder(grafana: GrafanaApi, report: PushReport) -> None:
    name = f"folder {FOLDER_UID}"
    try:
        found = grafana.folder.get_folder(FOLDER_UID)
    except GrafanaClientError as exc:
        if not _missing(exc):
            raise
        grafana.folder.create_folder(FOLDER_TITLE, uid=FOLDER_UID)
        report.created.append(name)
        return
    if found.get("title") != FOLDER_TITLE:
        grafana.folder.update_folder(FOLDER_UID, title=FOLDER_TITLE, overwrite=True)
        report.updated.append(name)
    else:
        report.unchanged.append(name)


def _push_datasource(grafana: GrafanaApi, influx: InfluxTarget, report: PushReport, *,
                     rotate_token: bool) -> None:
    wanted = _datasource_body(influx)
    name = f"datasource {wanted['uid']}"
    secure = ({"secureJsonData": {"httpHeaderValue1": f"Token {influx.token}"}}
              if influx.token else {})
    try:
        found = grafana.datasource.get_datasource_by_uid(wanted["uid"])
    except GrafanaClientError as exc:
        if not _missing(exc):
            raise
        grafana.datasource.create_datasource({**wanted, **secure})
        report.created.append(name)
        return
    has_token = bool(found.get("secureJsonFields", {}).get("httpHeaderValue1"))
    token_needed = bool(secure) and (rotate_token or not has_token)
    if _differs(wanted, found) or token_needed:
        grafana.datasource.update_datasource_by_uid(
            wanted["uid"], {**wanted, **(secure if token_needed else {})})
        report.updated.append(name)
    else:
        report.unchanged.append(name)


def _push_dashboard(grafana: GrafanaApi, dashboard: dict[str, Any], report: PushReport) -> None:
    name = f"dashboard {dashboard['uid']}"
    try:
        found = grafana.dashboard.get_dashboard(dashboard["uid"])
    except GrafanaClientError as exc:
        if not _missing(exc):
            raise
        found = None
    if found is not None:
        stored = {k: v for k, v in found["dashboard"].items()
                  if k not in _DASHBOARD_BOOKKEEPING}
        if stored == dashboard and found.get("meta", {}).get("folderUid") == FOLDER_UID:
            report.unchanged.append(name)
            return
    grafana.dashboard.update_dashboard({
        "dashboard": {**dashboard, "id": None}, "folderUid": FOLDER_UID, "overwrite": True,
        "message": "simpang dashboards push",
    })
    (report.created if found is None else report.updated).append(name)


def _push_rule(grafana: GrafanaApi, rule: dict[str, Any], report: PushReport) -> None:
    wanted = {**rule, "folderUID": FOLDER_UID, "ruleGroup": RULE_GROUP, "orgID": 1}
    name = f"alert rule {rule['uid']}"
    try:
        found = grafana.alertingprovisioning.get_alertrule(rule["uid"])
    except GrafanaClientError as exc:
        if not _missing(exc):
            raise
        grafana.alertingprovisioning.create_alertrule(wanted)
        report.created.append(name)
        return
    if _differs(wanted, found):
        grafana.alertingprovisioning.update_alertrule(rule["uid"], wanted)
        report.updated.append(name)
    else:
        report.unchanged.append(name)

