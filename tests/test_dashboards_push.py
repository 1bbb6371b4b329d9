"""``simpang dashboards push`` against a local server speaking Grafana's documented HTTP API:
the requests it makes, what it stores, and that pushing again changes nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from dashboards.build import DATASOURCE_UID, FOLDER_UID, JSON_DIR
from dashboards.provisioning import alert_rules
from simpang.cli import app
from tests.grafana_api_server import GrafanaAPIServer

TOKEN = "glsa_test_token"
runner = CliRunner()


@pytest.fixture
def grafana() -> Iterator[GrafanaAPIServer]:
    server = GrafanaAPIServer(TOKEN).start()
    yield server
    server.close()


def push(grafana: GrafanaAPIServer, *extra: str, token: str = TOKEN) -> str:
    result = runner.invoke(app, ["dashboards", "push", "--grafana-url", grafana.url,
                                 "--token", token, "--influx-url", "http://influxdb:8086",
                                 *extra],
                           env={"SIMPANG_INFLUX_TOKEN": "influx-secret",
                                "SIMPANG_INFLUX_BUCKET": "traffic"})
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


@pytest.mark.usefixtures("clean_env")
def test_first_push_creates_everything_and_the_second_changes_nothing(
    grafana: GrafanaAPIServer,
) -> None:
    dashboards = {json.loads(p.read_text())["uid"]: json.loads(p.read_text())
                  for p in JSON_DIR.glob("*.json")}
    rules = {r["uid"]: r for r in alert_rules()}
    out = push(grafana)
    assert f"created {1 + 1 + len(dashboards) + len(rules)}, updated 0, unchanged 0" in out
    # The folder first: dashboards and rules are stored in it.
    writes = grafana.writes()
    assert writes[0] == ("POST", "/api/folders")
    assert writes.count(("POST", "/api/dashboards/db")) == len(dashboards)
    assert writes.count(("POST", "/api/v1/provisioning/alert-rules")) == len(rules)
    assert grafana.folders[FOLDER_UID]["title"] == "Simpang"

    source = grafana.datasources[DATASOURCE_UID]
    assert source["type"] == "influxdb" and source["url"] == "http://influxdb:8086"
    assert source["jsonData"]["dbName"] == "traffic"
    assert source["jsonData"]["version"] == "InfluxQL"
    assert source["secureJsonData"] == {"httpHeaderValue1": "Token influx-secret"}
    for uid, dashboard in dashboards.items():
        stored = grafana.dashboards[uid]
        assert stored["meta"]["folderUid"] == FOLDER_UID
        assert {k: v for k, v in stored["dashboard"].items() if k not in ("id", "version")
                } == dashboard
    for uid, rule in rules.items():
        stored = grafana.rules[uid]
        assert stored["folderUID"] == FOLDER_UID and stored["ruleGroup"] == "simpang"
        assert stored["data"] == rule["data"] and stored["for"] == rule["for"]

    grafana.requests.clear()
    out = push(grafana)
    assert f"created 0, updated 0, unchanged {2 + len(dashboards) + len(rules)}" in out
    assert grafana.writes() == []
    assert source["secureJsonData"] == {"httpHeaderValue1": "Token influx-secret"}


@pytest.mark.usefixtures("clean_env")
def test_push_puts_back_what_was_changed_in_grafana_and_only_that(
    grafana: GrafanaAPIServer,
) -> None:
    push(grafana)
    grafana.dashboards["simpang-control-room"]["dashboard"]["title"] = "edited by hand"
    grafana.datasources[DATASOURCE_UID]["url"] = "http://elsewhere:8086"
    grafana.rules["simpang-congestion"]["for"] = "1h"
    grafana.requests.clear()
    out = push(grafana)
    assert ("updated: datasource simpang-influxdb" in out
            and "updated: dashboard simpang-control-room" in out
            and "updated: alert rule simpang-congestion" in out)
    assert "updated 3" in out
    assert sorted(grafana.writes()) == sorted([
        ("PUT", f"/api/datasources/uid/{DATASOURCE_UID}"),
        ("POST", "/api/dashboards/db"),
        ("PUT", "/api/v1/provisioning/alert-rules/simpang-congestion"),
    ])
    assert grafana.dashboards["simpang-control-room"]["dashboard"]["title"] != "edited by hand"
    assert grafana.dashboards["simpang-control-room"]["dashboard"]["version"] == 2
    assert grafana.datasources[DATASOURCE_UID]["url"] == "http://influxdb:8086"
    assert grafana.rules["simpang-congestion"]["for"] == "10m"
    # The token is not sent again unless asked: Grafana keeps it.
    [(_, _, body)] = [b for b in grafana.bodies if b[0] == "PUT" and "datasources" in b[1]]
    assert "secureJsonData" not in body
    grafana.bodies.clear()
    push(grafana, "--rotate-token")
    [(_, _, body)] = [b for b in grafana.bodies if b[0] == "PUT" and "datasources" in b[1]]
    assert body["secureJsonData"] == {"httpHeaderValue1": "Token influx-secret"}


@pytest.mark.usefixtures("clean_env")
def test_a_wrong_token_is_a_clear_error(grafana: GrafanaAPIServer) -> None:
    result = runner.invoke(app, ["dashboards", "push", "--grafana-url", grafana.url,
                                 "--token", "wrong", "--influx-url", "http://influxdb:8086"])
    assert result.exit_code == 1
    assert "refused" in result.output and grafana.writes() == []
    assert grafana.folders == {}
