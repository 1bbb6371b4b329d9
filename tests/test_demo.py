"""``simpang demo`` as a user runs it: a subprocess, its summary, its output checked against a
real InfluxDB, and no processes left behind however it ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import urllib3

from dashboards.influxql import InfluxQL
from simulator.bundled import build_scenario
from streams.embedded import InfluxDB1Server
from tests.influx_v2_forwarder import InfluxV2WriteForwarder

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent


def descendants(pid: int) -> set[int]:
    """Every live process whose parent chain leads to ``pid`` (sessions do not matter)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            parents[int(stat.parent.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pids: set[int]) -> set[int]:
    out = set()
    for pid in pids:
        stat = Path(f"/proc/{pid}/stat")
        try:
            if stat.read_text().rsplit(")", 1)[1].split()[0] != "Z":
                out.add(pid)
        except OSError:
            pass
    return out


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demos' data directory: SUMO scenarios are built into its ``scenarios``."""
    return tmp_path_factory.mktemp("demo-data")


def run_demo(out: Path, data_dir: Path, duration_s: float, *options: str,
             **env: str) -> dict[str, object]:
    env = {"SIMPANG_DATA_DIR": str(data_dir), **env}
    result = subprocess.run(
        [sys.executable, "-m", "simpang", "demo", "--duration", str(duration_s), "--out",
         str(out), "--no-live", *options],
        env={**os.environ, **env}, cwd=REPO, capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary: dict[str, object] = json.loads((out / "summary.json").read_text())
    for key in ("readings_in", "metrics_points", "dead_letters"):
        assert isinstance(summary[key], int), (key, summary)
    return summary


def test_demo_writes_line_protocol_that_loads_into_influxdb(
    tmp_path: Path, influxdb: InfluxDB1Server, data_dir: Path
) -> None:
    summary = run_demo(tmp_path, data_dir, 12, "--faults", "0.05")
    assert summary["worker_exit_code"] == 0
    # The default scenario's detectors, every one of them every 30 simulated seconds.
    site = build_scenario("four_arm", data_dir / "scenarios").site()
    assert summary["scenario"] == "four_arm" and summary["site"] == site.id
    sensors = sum(len(i.sensors) for i in site.intersections)
    assert summary["sensors"] == sensors
    assert summary["simulated_s"] == 12 * 30
    assert summary["readings_in"] == sensors * 12
    # Every reading broken on purpose is a dead letter with a reason, and nothing else is.
    reasons = summary["dead_letter_reasons"]
    assert isinstance(reasons, dict) and sum(reasons.values()) == summary["dead_letters"]
    assert set(reasons) <= {"malformed", "invalid", "unknown_device"}
    faults = summary["faults_injected"]
    assert isinstance(faults, int) and faults > 0
    assert summary["dead_letters"] == faults

    lines = (tmp_path / "metrics.lp").read_text().splitlines()
    metric_lines = [line for line in lines if line.startswith("approach_metrics,")]
    assert len(metric_lines) == summary["metrics_points"] == summary["metrics_emitted"]
    assert len(metric_lines) > 0
    approaches = {(i.id, a.id) for i in site.intersections for a in i.approaches}
    seen = {(tag(line, "intersection"), tag(line, "approach")) for line in metric_lines}
    assert seen == approaches
    assert all(tag(line, "site") == site.id for line in metric_lines)
    # The timing agent spoke for the intersection, and its points are in the file too.
    timing_lines = [line for line in lines if line.startswith("timing_recommendations,")]
    recommendations = summary["timing_recommendations"]
    assert isinstance(recommendations, int) and recommendations >= 1
    assert 1 <= len(timing_lines) <= recommendations
    assert {tag(line, "intersection") for line in timing_lines} == {
        i.id for i in site.intersections}

    database = f"demo{uuid.uuid4().hex[:8]}"
    db = InfluxQL(influxdb.url, database)
    db.create_database()
    try:
        response = urllib3.request(
            "POST", f"{influxdb.url}/write?db={database}&precision=ns",
            body="\n".join(lines).encode(),
        )
        assert response.status == 204, response.data
        counted = db.rows("SELECT count(readings) AS n FROM approach_metrics")
        assert counted[0]["n"] == len(metric_lines)
        dead = db.rows('SELECT sum("count") AS n FROM dead_letters')
        assert dead[0]["n"] == summary["dead_letters"]
    finally:
        db.drop_database()


def test_demo_devices_can_post_over_http(tmp_path: Path, data_dir: Path) -> None:
    summary = run_demo(tmp_path, data_dir, 10, "--faults", "0.05", "--ingest", "http")
    assert summary["ingest"] == "http" and summary["worker_exit_code"] == 0
    site = build_scenario("four_arm", data_dir / "scenarios").site()
    sensors = sum(len(i.sensors) for i in site.intersections)
    assert summary["readings_in"] == sensors * 10
    # Every broken reading came back as a dead letter from the HTTP path, and nothing else.
    assert summary["dead_letters"] == summary["faults_injected"] > 0
    assert set(summary["dead_letter_reasons"]) <= {"malformed", "invalid", "unknown_device"}
    lines = (tmp_path / "metrics.lp").read_text().splitlines()
    http_letters = [line for line in lines
                    if line.startswith("dead_letters,") and tag(line, "source") == "http"]
    assert len(http_letters) == summary["dead_letters"]
    assert [line for line in lines if line.startswith("approach_metrics,")]
    health = [line for line in lines if line.startswith("pipeline_health,")]
    accepted = max(int(line.split("http_readings_accepted=")[1].split("i")[0])
                   for line in health)
    assert accepted == summary["readings_in"] - summary["faults_injected"] > 0


def tag(line: str, key: str) -> str:
    """A tag's value in a line-protocol line."""
    series = line.split(" ", 1)[0]
    return dict(part.split("=", 1) for part in series.split(",")[1:])[key]


def test_demo_writes_to_influxdb_when_the_url_is_set(
    tmp_path: Path, influx_forwarder: InfluxV2WriteForwarder, data_dir: Path
) -> None:
    database = f"demo{uuid.uuid4().hex[:8]}"
    db = InfluxQL(influx_forwarder.target_url, database)
    db.create_database()
    try:
        summary = run_demo(
            tmp_path, data_dir, 10, "--scenario", "corridor", "--begin", "07:00", "--durable",
            SIMPANG_INFLUX_URL=influx_forwarder.url, SIMPANG_INFLUX_BUCKET=database,
            SIMPANG_INFLUX_TOKEN="demo-token-not-logged",
        )
        assert not (tmp_path / "metrics.lp").exists()
        assert summary["broker_storage"] == "s3 local"  # Tansu on a local S3 (--durable)
        counted = db.rows("SELECT count(readings) AS n FROM approach_metrics")
        assert counted[0]["n"] == summary["metrics_points"] == summary["metrics_emitted"]
        # The corridor's three intersections, at the morning peak of a past day.
        assert str(summary["simulated_from"]).endswith("T07:00:00+08:00")
        intersections = db.rows('SHOW TAG VALUES FROM approach_metrics WITH KEY = "intersection"')
        assert sorted(row["value"] for row in intersections) == ["J1", "J2", "J3"]
        assert "demo-token-not-logged" not in (tmp_path / "worker.log").read_text()
    finally:
        db.drop_database()


def test_ctrl_c_stops_everything(tmp_path: Path, data_dir: Path) -> None:
    demo = subprocess.Popen(
        [sys.executable, "-m", "simpang", "demo", "--duration", "120", "--out", str(tmp_path),
         "--no-live"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env={**os.environ, "SIMPANG_DATA_DIR": str(data_dir)},
    )
    try:
        deadline = time.monotonic() + 60
        children: set[int] = set()
        # Wait for the broker and the worker (and its own children) to be up.
        while time.monotonic() < deadline and len(children) < 2:
            time.sleep(0.5)
            children = descendants(demo.pid)
        assert len(children) >= 2, children
        time.sleep(3)
        children = descendants(demo.pid)
        demo.send_signal(signal.SIGINT)
        code = demo.wait(timeout=40)
        assert code == 130
        assert not alive(children), alive(children)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()


@pytest.mark.parametrize(("options", "message", "code"), [
    (["--scenario", "no_such_place"], "neither a bundled scenario", 1),
    (["--begin", "25:00"], "not a time of day", 2),
    (["--faults", "1.5"], "within [0, 1]", 2),
])
def test_bad_options_are_refused_before_anything_starts(
    tmp_path: Path, options: list[str], message: str, code: int
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "simpang", "demo", "--out", str(tmp_path), "--no-live", *options],
        env={**os.environ, "SIMPANG_DATA_DIR": str(tmp_path / "data")}, cwd=REPO,
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == code, result
    assert message in " ".join((result.stdout + result.stderr).split())
    assert not (tmp_path / "summary.json").exists()
