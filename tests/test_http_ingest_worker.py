"""HTTP ingest on a real worker (Tansu, InfluxDB 1.6): a mixed good/bad run over HTTP in which
every reading sent is accounted for on the topics, and schemathesis against /openapi.json."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import urllib3
import yaml

from simpang.devices import DevicesFile, issue_token
from simulator.bundled import build_scenario
from streams.embedded import free_port
from streams.http_ingest import openapi_document
from tests.conftest import REPO, Pipeline

pytestmark = pytest.mark.integration

N = [f"smd-lembuswana-{lane}-loop" for lane in ("n1", "n2", "e1", "e2")]
OTHER = "smd-air-hitam-n1-loop"


def start(pipeline_factory: Callable[..., Pipeline], tmp_path: Path, **env: str
          ) -> tuple[Pipeline, str, dict[str, str]]:
    lembuswana, first = issue_token("lembuswana", devices=["smd-lembuswana-*"],
                                    max_readings_per_s=50, burst_readings=400)
    gateway, second = issue_token("gateway", devices=["*"], max_readings_per_s=10_000,
                                  burst_readings=20_000)
    devices = tmp_path / "devices.yaml"
    devices.write_text(yaml.safe_dump(DevicesFile(tokens=[first, second]).model_dump(
        mode="json", exclude_none=True)))
    port = free_port()
    pipeline = pipeline_factory(SIMPANG_WEB_PORT=str(port),
                                SIMPANG_INGEST__DEVICES_FILE=str(devices),
                                SIMPANG_INGEST__MAX_BODY_BYTES=str(256 * 1024), **env)
    url = f"http://127.0.0.1:{port}"
    pipeline.wait_http(url, timeout_s=60)
    return pipeline, url, {"lembuswana": lembuswana, "gateway": gateway}


def reading(device: str, seq: int | None, minute: int, **overrides: Any) -> dict[str, Any]:
    ts = (datetime.now(UTC) - timedelta(minutes=30 - minute)).replace(second=0, microsecond=0)
    body: dict[str, Any] = {"device_id": device, "kind": "loop", "ts": ts.isoformat(),
                            "interval_s": 60, "counts": {"car": 3 + minute % 4, "motorcycle": 5},
                            "occupancy_pct": 12.5}
    if seq is not None:
        body["seq"] = seq
    body.update(overrides)
    return body


def post(url: str, body: bytes, token: str | None) -> tuple[int, dict[str, Any], dict[str, str]]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    response = urllib3.request("POST", f"{url}/v1/readings", body=body, headers=headers,
                               timeout=20)
    return response.status, json.loads(response.data), dict(response.headers)


def test_every_reading_sent_over_http_is_accepted_once_or_dead_lettered(
    pipeline_factory: Callable[..., Pipeline], tmp_path: Path,
) -> None:
    pipeline, url, tokens = start(pipeline_factory, tmp_path)
    health = json.loads(urllib3.request("GET", f"{url}/v1/health").data)
    assert health["status"] == "ok" and health["devices"] == 2
    served = json.loads(urllib3.request("GET", f"{url}/openapi.json").data)
    assert served == json.loads(json.dumps(openapi_document(256 * 1024)))

    requests: list[tuple[bytes, str | None, int]] = []  # body, token, readings in it
    seq = 0
    for minute in range(20):
        batch = []
        for device in N:
            seq += 1
            batch.append(reading(device, seq, minute))
        requests.append((json.dumps(batch).encode(), tokens["gateway"], len(batch)))
        if minute % 5 == 0:  # a re-send of the same batch: accepted again, stored once
            requests.append((json.dumps(batch).encode(), tokens["gateway"], len(batch)))
    bad_batch = [reading(N[0], None, 1, ts="yesterday"), reading(N[1], None, 2),
                 reading(OTHER, None, 3), reading("no-such-loop", None, 4),
                 {"device_id": N[2]}]
    requests += [
        (json.dumps(bad_batch).encode(), tokens["lembuswana"], len(bad_batch)),
        (json.dumps([reading(OTHER, None, 5)]).encode(), tokens["lembuswana"], 1),
        (b"{not json", tokens["gateway"], 1),
        (json.dumps(reading(N[3], None, 6)).encode(), None, 1),
        (json.dumps(reading(N[3], None, 6)).encode(), "spg_forged", 1),
        (json.dumps([reading(N[0], None, 7)] * 2000).encode(), tokens["gateway"], 2000),
        # lembuswana's bucket: 400 at once, 50/s; 6 used above, 390 now, then 60 too many.
        (json.dumps([reading(N[3], None, 8)] * 390).encode(), tokens["lembuswana"], 390),
        (json.dumps([reading(N[3], None, 9)] * 60).encode(), tokens["lembuswana"], 60),
    ]
    statuses = []
    accepted = duplicates = per_reading_rejections = refused_requests = refused_readings = 0
    for body, token, count in requests:
        status, answer, headers = post(url, body, token)
        statuses.append(status)
        if status in (401, 413, 429):
            refused_requests += 1
            refused_readings += count
            if status == 429:
                assert int(headers["Retry-After"]) >= 1
            continue
        accepted += answer["accepted"]
        duplicates += answer["duplicates"]
        per_reading_rejections += len(answer["rejected"])
        assert answer["accepted"] + answer["duplicates"] + len(answer["rejected"]) == count
    sent = sum(count for _, _, count in requests)
    assert accepted + duplicates + per_reading_rejections + refused_readings == sent
    assert statuses[-8:] == [400, 403, 400, 401, 401, 413, 202, 429]
    assert duplicates == 4 * len(N)

    # What reached sensor-readings: exactly the accepted readings, each (device, seq) once.
    messages = pipeline.read_topic("sensor-readings", count=10_000, timeout_s=8)
    stored = [item for message in messages for item in message]
    assert len(stored) == accepted
    with_seq = [(r["device_id"], r["seq"]) for r in stored if "seq" in r]
    assert len(with_seq) == len(set(with_seq)) == seq
    # What reached dead-letters from HTTP: one per refused reading or refused request.
    letters = [d for d in pipeline.read_topic("dead-letters", count=10_000, timeout_s=8)
               if d["source"] == "http"]
    assert len(letters) == per_reading_rejections + refused_requests
    codes = sorted(d["reason_code"] for d in letters)
    assert codes == sorted(["invalid", "forbidden", "unknown_device", "invalid", "forbidden",
                            "malformed", "unauthorised", "unauthorised", "too_large",
                            "rate_limited"])
    assert all(d["raw"] for d in letters)
    # The worker counted them too.
    rows = pipeline.wait_rows(
        "SELECT last(http_readings_accepted) AS a, last(http_duplicates) AS d, "
        "last(http_readings_in) AS n FROM pipeline_health",
        lambda r: bool(r) and r[0]["a"] == accepted, timeout_s=30)
    assert rows[0]["d"] == duplicates


def test_schemathesis_finds_the_api_as_documented(
    pipeline_factory: Callable[..., Pipeline], tmp_path: Path,
) -> None:
    pipeline, url, tokens = start(pipeline_factory, tmp_path)
    # A controller's plan report goes to signal-plans once the broker has it.
    plan = {"device_id": "tsc-lembuswana", "intersection": "smd-lembuswana",
            "ts": datetime.now(UTC).isoformat(), "cycle_s": 120, "offset_s": 12,
            "greens_s": {"p-north": 30, "p-east": 20, "p-south": 30, "p-west": 20}}
    response = urllib3.request("POST", f"{url}/v1/plans", json=plan,
                               headers={"Authorization": f"Bearer {tokens['gateway']}"})
    assert response.status == 202, response.data
    [stored] = pipeline.read_topic("signal-plans", count=1, timeout_s=10)
    assert stored == plan
    refused = urllib3.request("POST", f"{url}/v1/plans", json={**plan, "cycle_s": 150},
                              headers={"Authorization": f"Bearer {tokens['gateway']}"})
    assert refused.status == 400 and "differs from greens" in json.loads(refused.data)["error"]
    # A city platform's FIWARE TrafficFlowObserved, through the NGSI-LD batch upsert.
    end = datetime.now(UTC).replace(second=0, microsecond=0)
    observed = {"id": "urn:ngsi-ld:TrafficFlowObserved:n1", "type": "TrafficFlowObserved",
                "refDevice": f"urn:ngsi-ld:Device:{N[0]}", "intensity": 9,
                "dateObserved": f"{(end - timedelta(minutes=1)).isoformat()}/{end.isoformat()}"}
    upserted = urllib3.request("POST", f"{url}/ngsi-ld/v1/entityOperations/upsert",
                               json=[observed],
                               headers={"Authorization": f"Bearer {tokens['gateway']}"})
    assert upserted.status == 201, upserted.data
    assert json.loads(upserted.data) == {"success": [observed["id"]], "errors": []}
    [message] = pipeline.read_topic("sensor-readings", count=1, timeout_s=10)
    assert message == [{"device_id": N[0], "kind": "loop", "ts": end.isoformat(),
                        "interval_s": 60.0, "count": 9}]
    binary = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert binary, "schemathesis is a dev dependency"
    result = subprocess.run(
        [binary, "run", f"{url}/openapi.json", "--header",
         f"Authorization: Bearer {tokens['gateway']}", "--max-examples", "40",
         "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
         "response_schema_conformance,response_headers_conformance", "--seed", "7",
         "--request-timeout", "20"],
        capture_output=True, text=True, timeout=400, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[:8000] + result.stderr[-2000:]
    pipeline.assert_worker_alive()


def test_the_simulators_devices_can_post_over_http(
    pipeline_factory: Callable[..., Pipeline], tmp_path: Path, scenario_cache: Path,
) -> None:
    site_file = build_scenario("t_junction", scenario_cache).site_file
    pipeline, url, tokens = start(pipeline_factory, tmp_path,
                                  SIMPANG_SITE_FILE=str(site_file))
    ran = subprocess.run(
        [sys.executable, "-m", "simpang", "simulate", "run", "--scenario", "t_junction",
         "--duration", "180", "--begin", "07:00", "--interval", "30", "--via", "http",
         "--http-url", url],
        env={**pipeline.env, "SIMPANG_DATA_DIR": str(tmp_path / "sim"),
             "SIMPANG_DEVICE_TOKEN": tokens["gateway"]},
        capture_output=True, text=True, timeout=300, cwd=REPO)
    assert ran.returncode == 0, ran.stderr[-3000:]
    summary = json.loads(ran.stdout.splitlines()[-1])
    assert summary["via"] == "http" and summary["readings"] > 0
    assert summary["http_accepted"] == summary["readings"] and summary["http_refused"] == {}
    messages = pipeline.read_topic("sensor-readings", count=summary["reading_messages"],
                                   timeout_s=15)
    assert sum(len(m) for m in messages) == summary["readings"]
