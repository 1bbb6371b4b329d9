"""Grafana provisioning files: the InfluxQL datasource, the dashboard provider and the alert
rules (unified alerting), generated from code and committed under ``dashboards/provisioning``.

Grafana reads them at start (``docker-compose.yml`` mounts the folder at
``/etc/grafana/provisioning``); ``${NAME}`` in them is filled from Grafana's environment.

>>> [rule["uid"] for rule in alert_rules()]
['simpang-congestion', 'simpang-dead-detector', 'simpang-stuck-detector', \
'simpang-frozen-camera', 'simpang-pipeline-lag']
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from dashboards.build import DATASOURCE_TYPE, DATASOURCE_UID, FOLDER_TITLE, FOLDER_UID
from simpang.schema import (
    CAMERA_HEALTH,
    DETECTOR_HEALTH,
    PIPELINE_HEALTH,
    TIMING_APPROACHES,
)

PROVISIONING_DIR = Path(__file__).resolve().parent / "provisioning"
DASHBOARDS_MOUNT = "/var/lib/grafana/dashboards/simpang"
DATASOURCE_NAME = "Simpang InfluxDB"


@dataclass(frozen=True)
class AlertThresholds:
    congestion_degree_of_saturation: float = 0.9
    congestion_for: str = "10m"
    dead_detector_for: str = "5m"
    stuck_detector_for: str = "15m"
    frozen_camera_for: str = "2m"
    pipeline_lag_messages: int = 10_000
    pipeline_lag_for: str = "5m"


def datasource() -> dict[str, Any]:
    """InfluxQL over ``/query``: InfluxDB 2.x maps the bucket to a database through its DBRP
    mapping (``docker-compose.yml`` creates it); a 1.x server needs no mapping."""
    return {"apiVersion": 1, "datasources": [{
        "name": DATASOURCE_NAME, "uid": DATASOURCE_UID, "type": DATASOURCE_TYPE,
        "access": "proxy", "url": "${SIMPANG_INFLUX_URL}", "isDefault": True,
        "editable": False,
        "jsonData": {"version": "InfluxQL", "dbName": "${SIMPANG_INFLUX_BUCKET}",
                     "httpMode": "POST", "httpHeaderName1": "Authorization",
                     "timeInterval": "10s"},
        "secureJsonData": {"httpHeaderValue1": "Token ${SIMPANG_INFLUX_TOKEN}"},
    }]}


def dashboard_provider() -> dict[str, Any]:
    return {"apiVersion": 1, "providers": [{
        "name": "simpang", "orgId": 1, "folder": FOLDER_TITLE, "folderUid": FOLDER_UID,
        "type": "file", "disableDeletion": True, "allowUiUpdates": False,
        "updateIntervalSeconds": 60, "options": {"path": DASHBOARDS_MOUNT},
    }]}


def _rule(uid: str, title: str, query: str, *, reducer: str, evaluator: dict[str, Any],
          window_s: int, for_: str, summary: str, description: str,
          no_data: Literal["OK", "NoData", "Alerting"] = "OK",
          severity: str = "warning") -> dict[str, Any]:
    return {
        "uid": uid, "title": title, "condition": "C",
        "data": [
            {"refId": "A", "relativeTimeRange": {"from": window_s, "to": 0},
             "datasourceUid": DATASOURCE_UID,
             "model": {"refId": "A", "query": query, "rawQuery": True,
                       "resultFormat": "time_series", "intervalMs": 60_000,
                       "maxDataPoints": 43_200}},
            {"refId": "B", "datasourceUid": "__expr__",
             "model": {"refId": "B", "type": "reduce", "expression": "A",
                       "reducer": reducer, "settings": {"mode": "dropNN"}}},
            {"refId": "C", "datasourceUid": "__expr__",
             "model": {"refId": "C", "type": "threshold", "expression": "B",
                       "conditions": [{"evaluator": evaluator}]}},
        ],
        "noDataState": no_data, "execErrState": "Error", "for": for_,
        "annotations": {"summary": summary, "description": description},
        "labels": {"severity": severity, "system": "simpang"},
    }


def alert_rules(limits: AlertThresholds | None = None) -> list[dict[str, Any]]:
    limits = limits or AlertThresholds()
    ta, dh, ch, ph = TIMING_APPROACHES, DETECTOR_HEALTH, CAMERA_HEALTH, PIPELINE_HEALTH
    ds = ta.field("running_degree_of_saturation").name
    return [
        _rule("simpang-congestion", "Congestion: degree of saturation high",
              f'SELECT last("{ds}") FROM "{ta.name}" WHERE $timeFilter '
              'GROUP BY "site", "intersection", "approach"',
              reducer="last", window_s=900, for_=limits.congestion_for,
              evaluator={"type": "gt", "params": [limits.congestion_degree_of_saturation]},
              summary="{{ $labels.intersection }} {{ $labels.approach }}: "
              "DS {{ humanize $values.B.Value }}",
              description="The approach runs above its capacity threshold under the running "
              "plan; see the latest recommendation on the intersection dashboard.",
              severity="critical"),
        _rule("simpang-dead-detector", "Dead detector",
              f'SELECT last("{dh.field("dead").name}") FROM "{dh.name}" WHERE $timeFilter '
              'GROUP BY "site", "intersection", "device"',
              reducer="last", window_s=600, for_=limits.dead_detector_for,
              evaluator={"type": "gt", "params": [0]},
              summary="{{ $labels.device }} at {{ $labels.intersection }} sends nothing",
              description="No reading from this detector for the dead threshold; its lane's "
              "flow is unknown, not zero."),
        _rule("simpang-stuck-detector", "Stuck detector",
              f'SELECT max("stuck") FROM (SELECT "{dh.field("stuck_on").name}" + '
              f'"{dh.field("stuck_off").name}" AS "stuck" FROM "{dh.name}" WHERE $timeFilter '
              'GROUP BY "site", "intersection", "device") WHERE $timeFilter '
              'GROUP BY "site", "intersection", "device"',
              reducer="last", window_s=600, for_=limits.stuck_detector_for,
              evaluator={"type": "gt", "params": [0]},
              summary="{{ $labels.device }} at {{ $labels.intersection }} is stuck",
              description="Occupancy pinned high, or no vehicles while the intersection's "
              "other detectors count."),
        _rule("simpang-frozen-camera", "Frozen camera",
              f'SELECT last("{ch.field("frozen").name}") FROM "{ch.name}" WHERE $timeFilter '
              'GROUP BY "camera", "intersection"',
              reducer="last", window_s=300, for_=limits.frozen_camera_for,
              evaluator={"type": "gt", "params": [0]},
              summary="Camera {{ $labels.camera }} shows a frozen picture",
              description="The picture has not changed; its counts are not trustworthy."),
        _rule("simpang-pipeline-lag", "Pipeline lag",
              f'SELECT max("{ph.field("consumer_lag").name}") FROM "{ph.name}" '
              'WHERE $timeFilter GROUP BY time(1m), "worker" fill(none)',
              reducer="last", window_s=600, for_=limits.pipeline_lag_for,
              evaluator={"type": "gt", "params": [limits.pipeline_lag_messages]},
              no_data="Alerting",
              summary="Worker {{ $labels.worker }} is {{ humanize $values.B.Value }} "
              "messages behind",
              description="Consumer lag above the threshold, or no worker reporting at all "
              "(no data alerts too)."),
    ]


def alerting() -> dict[str, Any]:
    return {"apiVersion": 1, "groups": [{
        "orgId": 1, "name": "simpang", "folder": FOLDER_TITLE, "interval": "1m",
        "rules": alert_rules(),
    }]}


FILES = {
    "datasources/simpang.yaml": datasource,
    "dashboards/simpang.yaml": dashboard_provider,
    "alerting/simpang-alerts.yaml": alerting,
}


def render(data: dict[str, Any]) -> str:
    return ("# Generated by `simpang dashboards generate` (dashboards/provisioning.py).\n"
            + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100))


def generate(out_dir: Path = PROVISIONING_DIR) -> list[Path]:
    written = []
    for name, make in FILES.items():
        path = out_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render(make()))
        written.append(path)
    return written
