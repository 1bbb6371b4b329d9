"""The Grafana dashboards as a contract (Grafana itself cannot run here).

The committed JSON is what the code generates; it decodes into Grafana's own schema types
(grafana-foundation-sdk, generated from Grafana's schema) without losing a key; and every
panel's InfluxQL, expanded as Grafana expands it, runs against the real InfluxDB loaded by
the real pipeline (``simpang demo``) and returns what the raw points say it should.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import urllib3
import yaml
from grafana_foundation_sdk.cog import encoder, plugins
from grafana_foundation_sdk.cog.runtime import DataqueryConfig, Runtime
from grafana_foundation_sdk.models.dashboard import Dashboard

from dashboards import provisioning, queries
from dashboards.build import DATASOURCE_UID, JSON_DIR, InfluxQLQuery, generate
from dashboards.influxql import InfluxQL
from simpang.records import CameraHealth, DetectorHealth, HealthSample
from simpang.schema import APPROACH_METRICS
from simpang.site import Site
from simulator.bundled import build_scenario
from streams.embedded import InfluxDB1Server
from streams.points import camera_health_line, detector_health_line, health_lines
from tests.grafana_emulation import (
    TimeRange,
    expander,
    firing,
    panel,
    panels,
    run_targets,
)
from tests.influx_v2_forwarder import InfluxV2WriteForwarder

REPO = Path(__file__).resolve().parent.parent
MACROS = {"timeFilter", "__interval"}
Loaded = tuple[InfluxQL, Site, dict[str, Any], TimeRange]
"""The demo's database, its site, its summary, and a time range covering its points."""


def committed() -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(JSON_DIR.glob("*.json"))}


def test_regenerating_gives_the_committed_files(tmp_path: Path) -> None:
    written = generate(tmp_path)
    assert sorted(p.name for p in written) == sorted(p.name for p in JSON_DIR.glob("*.json"))
    for path in written:
        assert path.read_text() == (JSON_DIR / path.name).read_text(), (
            f"{path.name} is stale: run `simpang dashboards generate`")


def test_dashboards_decode_into_grafanas_schema_types_without_loss() -> None:
    plugins.register_default_plugins()
    Runtime().register_dataquery_variant(
        DataqueryConfig(identifier="influxdb", from_json_hook=InfluxQLQuery.from_json))
    for uid, data in committed().items():
        decoded = json.loads(json.dumps(Dashboard.from_json(data), cls=encoder.JSONEncoder))
        assert decoded == data, uid
        # The check can fail: a key Grafana's schema does not know is dropped.
        broken = json.loads(json.dumps(data))
        broken["panels"][0]["colour"] = "red"
        assert json.loads(json.dumps(Dashboard.from_json(broken),
                                     cls=encoder.JSONEncoder)) != broken


def test_layout_ids_datasources_and_variables() -> None:
    uids = set()
    for uid, data in committed().items():
        assert data["uid"] == uid and uid not in uids
        uids.add(uid)
        defined = {v["name"] for v in data.get("templating", {}).get("list", [])}
        cells: set[tuple[int, int]] = set()
        ids = set()
        for p in data["panels"]:
            grid = p["gridPos"]
            assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, (uid, p["title"])
            mine = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                    for y in range(grid["y"], grid["y"] + grid["h"])}
            assert not mine & cells, f"{uid}: {p['title']} overlaps another panel"
            cells |= mine
            assert p["id"] not in ids
            ids.add(p["id"])
        for p in panels(data):
            refs = [t["refId"] for t in p.get("targets", [])]
            assert len(refs) == len(set(refs)), (uid, p["title"])
            for target in p.get("targets", []):
                assert target["datasource"] == {"type": "influxdb", "uid": DATASOURCE_UID}
                assert target["rawQuery"] is True
                used = set(re.findall(r"\$\{?(\w+)", target["query"]))
                assert used <= defined | MACROS, (uid, p["title"], used - defined)
        for variable in data.get("templating", {}).get("list", []):
            if variable["type"] == "query":
                earlier = set(re.findall(r"\$(\w+)", variable["query"]))
                assert earlier <= defined, (uid, variable["name"])


def test_queries_are_checked_against_the_schema() -> None:
    with pytest.raises(KeyError):
        queries.matches(APPROACH_METRICS, "camera")
    with pytest.raises(KeyError):
        queries._field(APPROACH_METRICS, "flow_per_hour")


@pytest.fixture(scope="module")
def loaded(influx_forwarder: InfluxV2WriteForwarder, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Loaded]:
    """A demo run (broker, worker, SUMO, faults) written into a fresh InfluxDB database."""
    out = tmp_path_factory.mktemp("dashboards-demo")
    database = f"dash{uuid.uuid4().hex[:8]}"
    db = InfluxQL(influx_forwarder.target_url, database)
    db.create_database()
    started_ms = int(time.time() * 1000)
    result = subprocess.run(
        [sys.executable, "-m", "simpang", "demo", "--duration", "20", "--out", str(out),
         "--no-live", "--faults", "0.05"],
        env={**os.environ, "SIMPANG_DATA_DIR": str(out / "data"),
             "SIMPANG_INFLUX_URL": influx_forwarder.url, "SIMPANG_INFLUX_BUCKET": database,
             "SIMPANG_INFLUX_TOKEN": "dashboard-test"},
        cwd=REPO, capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary: dict[str, Any] = json.loads((out / "summary.json").read_text())
    site = build_scenario(str(summary["scenario"]), out / "data" / "scenarios").site()
    # Measured points carry simulated time (the demo's clock ends at now); health, wall time.
    time_range = TimeRange(started_ms - 2 * 3600 * 1000, int(time.time() * 1000) + 60_000,
                           "1m")
    try:
        yield db, site, summary, time_range
    finally:
        db.drop_database()


def default_values(site: Site) -> dict[str, list[str]]:
    first = site.intersections[0]
    return {"site": [site.id], "intersection": [first.id], "source": ["field"],
            "window": ["300s-every-60s"]}


NEEDS_CAMERA_FRAMES = {("Queue (m)", "A"), ("Inference time per frame (ms)", "A"),
                       ("Intersections", "C")}


@pytest.mark.integration
def test_every_panel_query_runs_and_finds_the_pipelines_data(
    loaded: Loaded,
) -> None:
    db, site, _, time_range = loaded
    for uid, data in committed().items():
        interval = "2s" if uid == "simpang-pipeline" else "1m"
        expand = expander(data, TimeRange(time_range.from_ms, time_range.to_ms, interval),
                          **default_values(site))
        for p in panels(data):
            if not p.get("targets"):
                continue
            results = run_targets(db, p, expand)
            for ref, rows in results.items():
                camera_only = (p["title"], ref) in NEEDS_CAMERA_FRAMES
                # The demo has no camera frames; test_camera_counting checks these panels.
                assert bool(rows) != camera_only, (uid, p["title"], ref, rows)


@pytest.mark.integration
def test_variables_list_the_sites_places(
    loaded: Loaded,
) -> None:
    db, site, _, time_range = loaded
    data = committed()["simpang-intersection"]
    values = default_values(site)
    expand = expander(data, time_range, **values)
    found = {v["name"]: sorted(r["value"] for r in db.rows(expand(v["query"])))
             for v in data["templating"]["list"] if v["type"] == "query"}
    first = site.intersections[0]
    assert found["site"] == [site.id]
    assert found["intersection"] == sorted(i.id for i in site.intersections)
    assert found["approach"] == sorted(a.id for a in first.approaches)
    assert found["window"] == ["300s-every-60s", "60s"]


@pytest.mark.integration
def test_control_room_values_match_the_raw_points(
    loaded: Loaded,
) -> None:
    db, site, _, time_range = loaded
    data = committed()["simpang-control-room"]
    expand = expander(data, time_range, **default_values(site))
    table = run_targets(db, panel(data, "Intersections"), expand)

    raw = db.rows("SELECT * FROM approach_metrics WHERE level = 'approach' AND "
                  "source = 'field' AND \"window\" = '300s-every-60s'")
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for row in raw:  # time-ordered: the last row of each approach wins
        latest[(row["intersection"], row["approach"])] = row
    expected_flow = defaultdict(float)
    for (intersection, _), row in latest.items():
        expected_flow[intersection] += row["flow_pcu_per_hour"]
    assert {r["intersection"]: r["flow_pcu_per_hour"] for r in table["A"]} == pytest.approx(
        dict(expected_flow))

    recommendations = db.rows("SELECT * FROM timing_recommendations")
    last_made = {r["intersection"]: r for r in recommendations}
    positions = {i.id: (i.lat, i.lon) for i in site.intersections}
    assert {r["intersection"] for r in table["B"]} == set(positions)
    for row in table["B"]:
        made = last_made[row["intersection"]]
        assert row["time"] == made["time"]
        assert row["degree_of_saturation"] == made["running_max_degree_of_saturation"]
        assert row["recommended_cycle_s"] == made["cycle_s"]
        assert row["running_cycle_s"] == made["running_cycle_s"]
        assert (row["latitude"], row["longitude"]) == positions[row["intersection"]]
    assert {r["intersection"]: (r["dead_detectors"], r["stuck_detectors"])
            for r in table["D"]} == {i.id: (0, 0) for i in site.intersections}

    geomap = run_targets(db, panel(data, "Degree of saturation by intersection"), expand)
    assert geomap["A"] == table["B"]
    worst = run_targets(db, panel(data, "Worst approaches now"), expand)["A"]
    assert {(r["intersection"], r["approach"]) for r in worst} == {
        (i.id, a.id) for i in site.intersections for a in i.approaches}
    assert all(0 <= r["degree_of_saturation"] < 5 for r in worst)


@pytest.mark.integration
def test_intersection_panels_match_the_raw_points(
    loaded: Loaded,
) -> None:
    db, site, _, time_range = loaded
    data = committed()["simpang-intersection"]
    values = default_values(site)
    expand = expander(data, time_range, **values)
    first = site.intersections[0]
    raw = db.rows(f"SELECT * FROM approach_metrics WHERE level = 'approach' AND "
                  f"source = 'field' AND \"window\" = '300s-every-60s' AND "
                  f"intersection = '{first.id}'")
    minute_ns = 60 * 10**9
    buckets: dict[tuple[int, str], list[dict[str, Any]]] = defaultdict(list)
    for row in raw:
        buckets[(row["time"] // minute_ns * minute_ns, row["approach"])].append(row)

    flows = run_targets(db, panel(data, "Flow by approach (PCU/h)"), expand)["A"]
    assert len(flows) == len(buckets)
    for row in flows:
        points = buckets[(row["time"], row["approach"])]
        assert row["mean"] == pytest.approx(
            sum(p["flow_pcu_per_hour"] for p in points) / len(points))

    # The classes add up to the selected approaches' flow in every interval.
    by_class = run_targets(db, panel(data, "Flow by class (veh/h)"), expand)["A"]
    totals: dict[int, float] = defaultdict(float)
    for (minute, _), points in buckets.items():
        classified = [p for p in points if sum(p[f"count_{c}"] for c in (
            "motorcycle", "car", "bus", "truck", "bicycle", "unclassified"))]
        if classified:
            totals[minute] += sum(p["flow_veh_per_hour"] for p in classified) / len(points)
    assert by_class, "no class flows"
    for row in by_class:
        assert sum(v for k, v in row.items() if k != "time") == pytest.approx(
            totals[row["time"]]), row

    one_approach = expander(data, time_range, **values, approach=[first.approaches[0].id])
    only = run_targets(db, panel(data, "Flow by approach (PCU/h)"), one_approach)["A"]
    assert {r["approach"] for r in only} == {first.approaches[0].id}

    reasons = run_targets(db, panel(data, "Latest recommendations and their reasons"),
                          expand)["A"]
    made = db.rows(f"SELECT * FROM timing_recommendations WHERE intersection = '{first.id}'")
    assert reasons[0]["time"] == made[-1]["time"]
    assert reasons[0]["reasons"] == made[-1]["reasons"] and "Webster" in reasons[0]["reasons"]
    assert reasons[0]["status"] in ("recommended", "fallback")


@pytest.mark.integration
def test_devices_and_pipeline_panels_match_the_raw_points(
    loaded: Loaded,
) -> None:
    db, site, summary, time_range = loaded
    devices = committed()["simpang-devices"]
    expand = expander(devices, time_range, site=[site.id])  # every intersection
    detectors = run_targets(db, panel(devices, "Field detectors now"), expand)["A"]
    sensors = {s.device_id: (i.id, s.approach, s.lane, s.kind)
               for i in site.intersections for s in i.sensors}
    assert {r["device"]: (r["intersection"], r["approach"], r["lane"], r["kind"])
            for r in detectors} == sensors
    assert all(r["dead"] == 0 and r["stuck_on"] == 0 and r["silent_s"] < 30
               for r in detectors), detectors
    cameras = run_targets(db, panel(devices, "Cameras now"), expand)["A"]
    assert {r["camera"] for r in cameras} == {
        c.id for i in site.intersections for c in i.cameras}

    pipeline = committed()["simpang-pipeline"]
    expand = expander(pipeline, TimeRange(time_range.from_ms, time_range.to_ms, "2s"))
    by_reason = run_targets(db, panel(pipeline, "Dead letters by reason"), expand)["A"]
    per_reason: dict[str, int] = defaultdict(int)
    for row in by_reason:
        per_reason[row["reason_code"]] += row["sum"]
    assert per_reason == summary["dead_letter_reasons"]
    assert sum(per_reason.values()) == summary["dead_letters"] > 0
    latest = run_targets(db, panel(pipeline, "Latest dead letters"), expand)["A"]
    assert len(latest) == min(20, summary["dead_letters"])
    assert all(r["reason"] and r["reason_code"] for r in latest)
    workers = run_targets(db, panel(pipeline, "Workers"), expand)["A"]
    assert len(workers) == 1 and 0 < workers[0]["readings_in"] <= summary["readings_in"]
    rates = run_targets(db, panel(pipeline, "Readings per second"), expand)
    assert max(r["non_negative_derivative"] for r in rates["A"]) > 0


def alert_rules() -> list[dict[str, Any]]:
    path = JSON_DIR.parent / "provisioning" / "alerting" / "simpang-alerts.yaml"
    loaded = yaml.safe_load(path.read_text())
    assert loaded["apiVersion"] == 1 and len(loaded["groups"]) == 1
    group = loaded["groups"][0]
    assert group["folder"] == "Simpang" and group["interval"] == "1m"
    rules: list[dict[str, Any]] = group["rules"]
    return rules


def test_provisioning_files_are_generated_and_consistent(tmp_path: Path) -> None:
    written = provisioning.generate(tmp_path)
    for path in written:
        committed_file = JSON_DIR.parent / "provisioning" / path.relative_to(tmp_path)
        assert path.read_text() == committed_file.read_text(), f"{path.name} is stale"
    datasource = yaml.safe_load((tmp_path / "datasources" / "simpang.yaml").read_text())
    [source] = datasource["datasources"]
    assert source["uid"] == DATASOURCE_UID and source["type"] == "influxdb"
    assert source["jsonData"]["version"] == "InfluxQL"
    assert source["secureJsonData"]["httpHeaderValue1"] == "Token ${SIMPANG_INFLUX_TOKEN}"
    provider = yaml.safe_load((tmp_path / "dashboards" / "simpang.yaml").read_text())
    assert provider["providers"][0]["options"]["path"] == provisioning.DASHBOARDS_MOUNT
    uids = [rule["uid"] for rule in alert_rules()]
    assert len(uids) == len(set(uids)) == 5
    for rule in alert_rules():
        refs = {step["refId"]: step for step in rule["data"]}
        assert rule["condition"] in refs
        assert refs["A"]["datasourceUid"] == DATASOURCE_UID
        assert {refs[r]["datasourceUid"] for r in "BC"} == {"__expr__"}
        assert re.fullmatch(r"\d+m", rule["for"])
        # Grafana fills ${VAR} from its environment in labels, so none may hold a '$'.
        assert all("$" not in value for value in rule["labels"].values())


@pytest.mark.integration
def test_no_alert_fires_on_a_healthy_run(
    loaded: Loaded,
) -> None:
    db, _, _, _ = loaded
    now_ms = int(time.time() * 1000)
    for rule in alert_rules():
        if rule["uid"] == "simpang-congestion":
            continue  # the demo's demand decides; the faulted run below checks it
        assert firing(db, rule, now_ms) == [], rule["uid"]


@pytest.mark.integration
def test_each_alert_fires_for_its_fault_and_nothing_else(influxdb: InfluxDB1Server) -> None:
    database = f"alerts{uuid.uuid4().hex[:8]}"
    db = InfluxQL(influxdb.url, database)
    db.create_database()
    now = datetime.now(UTC)
    started = now - timedelta(hours=1)

    def detector(device: str, **faults: bool) -> str:
        return detector_health_line(DetectorHealth(
            site="s1", intersection="x1", approach="north", lane="n1", device_id=device,
            kind="loop", worker="w1", ts=now - timedelta(seconds=30), readings=1,
            silent_s=0.0, last_reading_ts=now, dead=False, stuck_on=False, stuck_off=False,
        ).model_copy(update=faults))

    def camera(camera_id: str, frozen: bool) -> str:
        return camera_health_line(CameraHealth(
            camera_id=camera_id, intersection="x1", worker="w1", ts=now - timedelta(seconds=20),
            frames=50, fps=5.0, inference_ms=20.0, lag_s=0.5, frozen=frozen, rejected=0))

    def worker(name: str, lag: int) -> list[str]:
        return health_lines(HealthSample(
            worker=name, ts=now - timedelta(seconds=10), started_at=started, readings_in=10,
            readings_accepted=10, dead_letters=0, readings_windowed=10, metrics_emitted=5,
            points_written=5, metric_points_written=5, sink_write_errors=0,
            consumer_lag={"sensor-readings:0": lag}))

    ns = int((now - timedelta(minutes=2)).timestamp()) * 10**9
    lines = [
        detector("ok-loop"), detector("dead-loop", dead=True),
        detector("stuck-loop", stuck_on=True), detector("silent-loop", stuck_off=True),
        camera("ok-cam", False), camera("frozen-cam", True),
        *worker("w-ok", 3), *worker("w-behind", 50_000),
        f"timing_approaches,site=s1,intersection=x1,approach=north "
        f"running_degree_of_saturation=1.05,degree_of_saturation=0.85 {ns}",
        f"timing_approaches,site=s1,intersection=x1,approach=east "
        f"running_degree_of_saturation=0.6,degree_of_saturation=0.6 {ns}",
    ]
    try:
        response = urllib3.request("POST", f"{influxdb.url}/write?db={database}&precision=ns",
                                   body="\n".join(lines).encode())
        assert response.status == 204, response.data
        fired = {rule["uid"]: firing(db, rule, int(now.timestamp() * 1000) + 1000)
                 for rule in alert_rules()}
        assert fired == {
            "simpang-congestion": [{"site": "s1", "intersection": "x1", "approach": "north"}],
            "simpang-dead-detector": [{"site": "s1", "intersection": "x1",
                                       "device": "dead-loop"}],
            "simpang-stuck-detector": [
                {"site": "s1", "intersection": "x1", "device": "silent-loop"},
                {"site": "s1", "intersection": "x1", "device": "stuck-loop"}],
            "simpang-frozen-camera": [{"camera": "frozen-cam", "intersection": "x1"}],
            "simpang-pipeline-lag": [{"worker": "w-behind"}],
        }
    finally:
        db.drop_database()
