"""FIWARE TrafficFlowObserved (NGSI-LD): entities in as readings, approach metrics out."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from hypothesis import given, settings
from hypothesis import strategies as st

from simpang.devices import DevicesFile, TokenRegistry, issue_token
from simpang.records import METRICS_LIST, ApproachMetrics, RejectReason, SensorReading
from simpang.settings import DEMO_SITE_FILE, Settings
from simpang.site import Site
from simpang.site_file import load_site
from simpang.vehicles import VehicleClass
from streams.embedded import free_port
from streams.fiware import MappingError, reading_of, traffic_flow_observed
from streams.http_ingest import HttpIngest
from streams.ingest import ReadingValidator
from streams.kafka import ensure_topics
from tests.conftest import REPO, Pipeline

N1 = "smd-lembuswana-n1-loop"
KINDS = {N1: "loop"}
RECEIVED = datetime(2026, 11, 24, 0, 5, tzinfo=UTC)


@pytest.fixture(scope="module")
def site() -> Site:
    return load_site(DEMO_SITE_FILE)


def entity(n: int = 1, **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": f"urn:ngsi-ld:TrafficFlowObserved:lembuswana-n1-{n}",
        "type": "TrafficFlowObserved",
        "refDevice": {"type": "Relationship", "object": f"urn:ngsi-ld:Device:{N1}"},
        "dateObserved": {"type": "Property",
                         "value": "2026-11-24T07:59:00+08:00/2026-11-24T08:00:00+08:00"},
        "intensity": {"type": "Property", "value": 14},
        "vehicleType": {"type": "Property", "value": "lorry"},
        "occupancy": {"type": "Property", "value": 0.12},
        "averageVehicleSpeed": {"type": "Property", "value": 32.5},
        "laneId": {"type": "Property", "value": 1},
        "@context": ["https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld"],
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def test_a_normalised_entity_becomes_a_valid_reading() -> None:
    reading = reading_of(entity(), kinds=KINDS)
    assert reading == {"device_id": N1, "kind": "loop", "ts": "2026-11-24T08:00:00+08:00",
                       "interval_s": 60.0, "counts": {"truck": 14}, "occupancy_pct": 12.0,
                       "speed_kmh": 32.5}
    SensorReading.model_validate(reading)


def test_key_values_and_separate_from_to_dates() -> None:
    simple = {"id": "x", "type": "TrafficFlowObserved", "refDevice": f"urn:ngsi-ld:Device:{N1}",
              "dateObservedFrom": "2026-11-24T00:00:00Z",
              "dateObservedTo": {"type": "Property", "value": {
                  "@type": "DateTime", "@value": "2026-11-24T00:05:00Z"}},
              "intensity": 40, "vehicleType": "hovercraft"}
    reading = reading_of(simple, kinds=KINDS)
    assert reading["interval_s"] == 300 and reading["counts"] == {"unclassified": 40}
    assert reading["ts"] == "2026-11-24T00:05:00+00:00"


@pytest.mark.parametrize(("changes", "path", "says"), [
    ({"type": "Road"}, "[3].type", "expected 'TrafficFlowObserved'"),
    ({"refDevice": None}, "[3].refDevice", "required"),
    ({"refDevice": "urn:ngsi-ld:Device:nope"}, "[3].refDevice", "not in the site file"),
    ({"dateObserved": "2026-11-24T07:59:00/2026-11-24T08:00:00"}, "[3].dateObserved",
     "time zone"),
    ({"dateObserved": "2026-11-24T08:00:00Z/2026-11-24T07:00:00Z"}, "[3].dateObserved",
     "ends before"),
    ({"occupancy": "high"}, "[3].occupancy", "expected a number"),
])
def test_entities_that_cannot_be_readings_say_where(
    changes: dict[str, Any], path: str, says: str,
) -> None:
    with pytest.raises(MappingError) as caught:
        reading_of(entity(**changes), kinds=KINDS, at="[3]")
    assert caught.value.path == path and says in caught.value.message


@pytest.fixture
def http(site: Site) -> tuple[HttpIngest, str]:
    token, entry = issue_token("city-platform", devices=["smd-lembuswana-*"])
    ingest = HttpIngest(ReadingValidator(site, max_future_skew_s=120),
                        TokenRegistry(DevicesFile(tokens=[entry])), max_body_bytes=1 << 20)
    return ingest, token


def test_ngsi_ld_create_and_batch_upsert(http: tuple[HttpIngest, str]) -> None:
    ingest, token = http

    def send(body: Any, *, batch: bool, auth: str | None = token) -> Any:
        return ingest.handle_ngsi(json.dumps(body).encode(),
                                  authorization=auth and f"Bearer {auth}",
                                  request_id="http:n1", received_at=RECEIVED, batch=batch)

    created = send(entity(), batch=False)
    assert created.status == 201 and created.body == {"id": entity()["id"]}
    assert created.headers["Location"].endswith(entity()["id"])
    assert created.batches == {"smd-lembuswana": [reading_of(entity(), kinds=KINDS)]}

    bad = send(entity(refDevice=None), batch=False)
    assert bad.status == 400 and bad.body["type"].endswith("/BadRequestData")
    assert "refDevice" in bad.body["detail"] and not bad.batches
    assert bad.dead_letters[0].reason_code is RejectReason.INVALID

    too_late = entity(3, dateObserved="2026-11-24T09:00:00+08:00/2026-11-24T09:05:00+08:00")
    other = entity(4, refDevice="urn:ngsi-ld:Device:smd-air-hitam-n1-loop")
    batch = send([entity(1), entity(2, vehicleType=None), too_late, other,
                  entity(5, refDevice="nope")], batch=True)
    assert batch.status == 207
    assert batch.body["success"] == [entity(1)["id"], entity(2)["id"]]
    failed = {e["entityId"]: e["error"]["detail"] for e in batch.body["errors"]}
    assert set(failed) == {too_late["id"], other["id"], entity(5)["id"]}
    assert "ahead of the receiver's clock" in failed[too_late["id"]]
    assert "may not write" in failed[other["id"]]
    assert "not in the site file" in failed[entity(5)["id"]]
    assert sum(len(items) for items in batch.batches.values()) == 2
    assert len(batch.dead_letters) == 3

    assert send([entity(6)], batch=True).status == 201
    refused = send([entity(7)], batch=True, auth="spg_wrong")
    assert refused.status == 401 and refused.body["title"] == "Unauthorized"
    assert send({"not": "a list"}, batch=True).status == 400


def test_approach_metrics_go_out_as_traffic_flow_observed(site: Site) -> None:
    lembuswana = next(i for i in site.intersections if i.id == "smd-lembuswana")
    end = datetime(2026, 11, 24, 0, 5, tzinfo=UTC)
    row = ApproachMetrics(
        site=site.id, intersection=lembuswana.id, approach="north", lane="n2", window="60s",
        window_start=end - timedelta(seconds=60), window_end=end, flow_veh_per_hour=1200,
        flow_pcu_per_hour=700, occupancy_pct=18.5, mean_speed_kmh=27.0,
        counts={VehicleClass.MOTORCYCLE: 14, VehicleClass.CAR: 6}, readings=2, source="field")
    out = traffic_flow_observed(row, lembuswana)
    assert out["type"] == "TrafficFlowObserved" and out["id"].startswith(
        "urn:ngsi-ld:TrafficFlowObserved:simpang:kaltim-demo:smd-lembuswana:north:n2:60s")
    assert out["intensity"]["value"] == 20 and out["occupancy"]["value"] == 0.185
    assert out["averageVehicleSpeed"]["value"] == 27.0 and out["laneId"]["value"] == 2
    assert out["location"]["value"]["coordinates"] == [lembuswana.lon, lembuswana.lat]
    assert out["dateObserved"]["value"] == (
        "2026-11-24T00:04:00+00:00/2026-11-24T00:05:00+00:00")
    # What goes out comes back in as the same measurement (for a device that measured it).
    back = reading_of({**out, "refDevice": f"urn:ngsi-ld:Device:{N1}"}, kinds=KINDS)
    assert back["count"] == 20 and back["occupancy_pct"] == 18.5 and back["interval_s"] == 60


class ContextBroker:
    """A local stand-in for an NGSI-LD context broker's batch upsert endpoint."""

    def __init__(self) -> None:
        from aiohttp import web

        self.received: list[list[dict[str, Any]]] = []
        self.content_types: list[str] = []
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

        async def upsert(request: web.Request) -> web.Response:
            self.content_types.append(request.headers.get("Content-Type", ""))
            self.received.append(json.loads(await request.read()))
            return web.Response(status=204)

        app = web.Application()
        app.router.add_post("/ngsi-ld/v1/entityOperations/upsert", upsert)
        self._runner = web.AppRunner(app)
        self._thread.start()

        async def start() -> None:
            await self._runner.setup()
            await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

        asyncio.run_coroutine_threadsafe(start(), self._loop).result(10)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)


@pytest.mark.integration
def test_export_fiware_prints_and_upserts_the_approach_metrics(
    pipeline_factory: Callable[..., Pipeline], site: Site,
) -> None:
    pipeline = pipeline_factory(start=False)
    end = datetime.now(UTC).replace(second=0, microsecond=0)
    rows = [ApproachMetrics(
        site=site.id, intersection="smd-lembuswana", approach=approach, lane=lane,
        window=window, window_start=end - timedelta(seconds=60), window_end=end,
        flow_veh_per_hour=600, flow_pcu_per_hour=400, occupancy_pct=10.0, mean_speed_kmh=30.0,
        counts={VehicleClass.CAR: 10}, readings=1, source="field")
        for approach in ("north", "east") for lane in (None, f"{approach[0]}1")
        for window in ("60s", "300s-every-60s")]

    async def produce() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=pipeline.broker)
        await producer.start()
        await producer.send_and_wait(pipeline.topic("approach-metrics"),
                                     METRICS_LIST.dump_json(rows), key=b"smd-lembuswana")
        await producer.stop()

    asyncio.run(ensure_topics(Settings(kafka={"brokers": pipeline.broker},
                                       topics={"prefix": pipeline.prefix})))
    asyncio.run(produce())
    printed = subprocess.run(
        [sys.executable, "-m", "simpang", "export", "fiware", "--window", "60s"],
        env=pipeline.env, capture_output=True, text=True, timeout=60, cwd=REPO)
    assert printed.returncode == 0, printed.stderr
    entities = [json.loads(line) for line in printed.stdout.splitlines()]
    assert [e["id"].split(":")[-3] for e in entities] == ["north", "east"]
    assert all(e["intensity"]["value"] == 10 and e["type"] == "TrafficFlowObserved"
               for e in entities)

    broker = ContextBroker()
    try:
        pushed = subprocess.run(
            [sys.executable, "-m", "simpang", "export", "fiware", "--level", "lane",
             "--broker-url", f"http://127.0.0.1:{broker.port}"],
            env=pipeline.env, capture_output=True, text=True, timeout=60, cwd=REPO)
        assert pushed.returncode == 0, pushed.stderr
        assert "4 TrafficFlowObserved entities upserted" in " ".join(pushed.stdout.split())
        [batch] = broker.received
        assert len(batch) == 4 and all("laneId" in e for e in batch)
        assert broker.content_types == ["application/ld+json"]
    finally:
        broker.close()


fuzz_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.sampled_from(["type", "value", "object", "@value", "x"]), children,
                      max_size=3),
    max_leaves=10,
)
fuzz_entities = st.one_of(fuzz_values, st.fixed_dictionaries({
    "id": st.text(max_size=10), "type": st.sampled_from(["TrafficFlowObserved", "Road"])},
    optional={name: fuzz_values | st.sampled_from([
        f"urn:ngsi-ld:Device:{N1}", "2026-11-24T07:59:00+08:00/2026-11-24T08:00:00+08:00",
        "2026-11-24T08:00:00Z", 0.5, 12]) for name in (
        "refDevice", "dateObserved", "dateObservedFrom", "dateObservedTo", "intensity",
        "vehicleType", "occupancy", "averageVehicleSpeed")}))


FUZZ_TOKEN, FUZZ_ENTRY = issue_token("fuzz", devices=["*"], max_readings_per_s=1e6,
                                     burst_readings=1_000_000)
FUZZ_INGEST = HttpIngest(ReadingValidator(load_site(DEMO_SITE_FILE), max_future_skew_s=120),
                         TokenRegistry(DevicesFile(tokens=[FUZZ_ENTRY])), max_body_bytes=1 << 20)


@settings(max_examples=300, deadline=None)
@given(entities=st.lists(fuzz_entities, max_size=5))
def test_no_entity_crashes_the_mapping_or_the_endpoint(entities: list[Any]) -> None:
    ingest, token = FUZZ_INGEST, FUZZ_TOKEN
    for index, candidate in enumerate(entities):
        try:
            reading_of(candidate, kinds=KINDS, at=f"[{index}]")
        except MappingError as exc:
            assert exc.path.startswith(f"[{index}]") or exc.path == "(top level)"
    out = ingest.handle_ngsi(json.dumps(entities).encode(), authorization=f"Bearer {token}",
                             request_id="http:f", received_at=RECEIVED, batch=True)
    assert out.status in (201, 207, 400)
    if out.status != 400:
        assert len(out.body["success"]) + len(out.body["errors"]) == len(entities)
        assert len(out.dead_letters) == len(out.body["errors"])
        assert sum(len(items) for items in out.batches.values()) <= len(out.body["success"])
