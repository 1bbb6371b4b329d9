"""The HTTP ingest decision (streams/http_ingest.py) and device tokens (simpang/devices.py):
status codes, JSON paths, scopes, rate limits, re-sends, and a bounded fuzz run."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simpang.devices import DevicesFile, TokenRegistry, issue_token
from simpang.records import RejectReason
from simpang.settings import DEMO_SITE_FILE
from simpang.site_file import load_site
from simpang.vehicles import VehicleClass
from streams.http_ingest import HttpIngest, openapi_document
from streams.ingest import ReadingValidator

RECEIVED = datetime(2026, 11, 24, 0, 0, tzinfo=UTC)
N1 = "smd-lembuswana-n1-loop"
N2 = "smd-lembuswana-n2-loop"
OTHER = "smd-air-hitam-n1-loop"


class Clock:
    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def tokens() -> dict[str, str]:
    return {}


@pytest.fixture
def http(clock: Clock, tokens: dict[str, str]) -> HttpIngest:
    lembuswana, first = issue_token("lembuswana", devices=["smd-lembuswana-*"],
                                    max_readings_per_s=100, burst_readings=200)
    everything, second = issue_token("gateway", devices=["*"],
                                     intersections=["smd-*"], max_readings_per_s=10_000,
                                     burst_readings=20_000)
    tokens.update(lembuswana=lembuswana, gateway=everything)
    validator = ReadingValidator(load_site(DEMO_SITE_FILE), max_future_skew_s=120)
    return HttpIngest(validator, TokenRegistry(DevicesFile(tokens=[first, second])),
                      max_body_bytes=64 * 1024, clock=clock)


def reading(device: str = N1, **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"device_id": device, "kind": "loop",
                            "ts": "2026-11-24T07:59:00+08:00", "interval_s": 60,
                            "counts": {"motorcycle": 12, "car": 5}, "occupancy_pct": 14.5}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def post(http: HttpIngest, body: Any, token: str | None, *, raw: bytes | None = None) -> Any:
    return http.handle(raw if raw is not None else json.dumps(body).encode(),
                       authorization=None if token is None else f"Bearer {token}",
                       request_id="http:r1", received_at=RECEIVED)


def test_a_good_batch_is_accepted_and_grouped_by_intersection(
    http: HttpIngest, tokens: dict[str, str],
) -> None:
    batch = [reading(N1, seq=1), reading(OTHER, seq=1), reading(N2)]
    out = post(http, batch, tokens["gateway"])
    assert out.status == 202
    assert out.body == {"accepted": 3, "duplicates": 0, "rejected": []}
    assert out.batches == {"smd-lembuswana": [batch[0], batch[2]], "smd-air-hitam": [batch[1]]}
    assert out.dead_letters == []


@pytest.mark.parametrize("authorization", [None, "Bearer", "Bearer spg_wrong", "Basic abc"])
def test_missing_or_unknown_tokens_are_401_and_a_dead_letter(
    http: HttpIngest, authorization: str | None,
) -> None:
    out = http.handle(json.dumps(reading()).encode(), authorization=authorization,
                      request_id="http:r1", received_at=RECEIVED)
    assert out.status == 401 and out.headers["WWW-Authenticate"].startswith("Bearer")
    assert out.body["reason_code"] == "unauthorised" and out.batches == {}
    [letter] = out.dead_letters
    assert letter.reason_code is RejectReason.UNAUTHORISED and letter.source == "http"
    assert json.loads(letter.raw) == reading()


def test_invalid_readings_name_every_json_path_and_the_rest_are_accepted(
    http: HttpIngest, tokens: dict[str, str],
) -> None:
    batch = [reading(N1), reading(N2, ts="2026-11-24T07:59:00", interval_s=-1), reading(N2)]
    out = post(http, batch, tokens["lembuswana"])
    assert out.status == 400 and out.body["accepted"] == 2
    [rejected] = out.body["rejected"]
    assert rejected["index"] == 1 and rejected["reason_code"] == "invalid"
    assert {e["path"] for e in rejected["errors"]} == {"[1].ts", "[1].interval_s"}
    assert [letter.id for letter in out.dead_letters] == ["http:r1:1"]


def test_devices_outside_the_tokens_scope_are_403(
    http: HttpIngest, tokens: dict[str, str],
) -> None:
    out = post(http, [reading(OTHER), reading(N1)], tokens["lembuswana"])
    assert out.status == 403 and out.body["accepted"] == 1
    [rejected] = out.body["rejected"]
    assert rejected == {"index": 0, "device_id": OTHER, "reason_code": "forbidden",
                        "errors": [{"path": "[0].device_id", "message":
                                    f"token 'lembuswana' may not write device '{OTHER}' at "
                                    f"'smd-air-hitam'"}]}
    assert out.batches == {"smd-lembuswana": [reading(N1)]}
    # Invalid and forbidden together: the invalid ones decide the status.
    out = post(http, [reading(OTHER), {"device_id": N1}], tokens["lembuswana"])
    assert out.status == 400 and len(out.body["rejected"]) == 2


def test_oversize_bodies_are_413(http: HttpIngest, tokens: dict[str, str]) -> None:
    out = post(http, None, tokens["gateway"], raw=b"[" + b" " * (64 * 1024) + b"]")
    assert out.status == 413 and out.body["max_bytes"] == 64 * 1024
    assert out.dead_letters[0].reason_code is RejectReason.TOO_LARGE


def test_the_rate_limit_is_per_token_and_says_when_to_come_back(
    http: HttpIngest, tokens: dict[str, str], clock: Clock,
) -> None:
    assert post(http, [reading(N1)] * 150, tokens["lembuswana"]).status == 202
    over = post(http, [reading(N1)] * 100, tokens["lembuswana"])
    assert over.status == 429 and over.headers["Retry-After"] == "1"
    assert over.body["retry_after_s"] == pytest.approx(0.5)
    assert over.dead_letters[0].reason_code is RejectReason.RATE_LIMITED and not over.batches
    assert post(http, [reading(N1)] * 100, tokens["gateway"]).status == 202  # its own bucket
    clock.now_s = 0.5
    assert post(http, [reading(N1)] * 100, tokens["lembuswana"]).status == 202


def test_re_sends_with_the_same_seq_are_accepted_once(
    http: HttpIngest, tokens: dict[str, str],
) -> None:
    first = post(http, [reading(N1, seq=7), reading(N2, seq=7)], tokens["gateway"])
    again = post(http, [reading(N1, seq=7), reading(N2, seq=8), reading(N1)],
                 tokens["gateway"])
    assert first.body["accepted"] == 2
    assert again.status == 202 and again.body == {"accepted": 2, "duplicates": 1,
                                                  "rejected": []}
    assert again.batches == {"smd-lembuswana": [reading(N2, seq=8), reading(N1)]}
    # A request the broker did not take is forgotten: its re-send is accepted.
    lost = post(http, [reading(N1, seq=9)], tokens["gateway"])
    assert lost.unavailable(http.dedup).status == 503
    assert post(http, [reading(N1, seq=9)], tokens["gateway"]).body["accepted"] == 1


def test_the_openapi_document_describes_the_reading_schema() -> None:
    document = openapi_document(1024)
    schema = document["components"]["schemas"]["SensorReading"]
    assert {"device_id", "kind", "ts", "interval_s", "seq"} <= set(schema["properties"])
    body = document["paths"]["/v1/readings"]["post"]
    assert set(body["responses"]) == {"202", "400", "401", "403", "413", "429", "503"}
    text = json.dumps(document)
    assert "$defs" not in text and document["openapi"] == "3.1.0"
    counts = schema["properties"]["counts"]["anyOf"][0]
    assert counts["propertyNames"] == {"enum": [c.value for c in VehicleClass]}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=12), children, max_size=6),
    max_leaves=20,
)
reading_like = st.fixed_dictionaries(
    {"device_id": st.sampled_from([N1, N2, OTHER, "nope", ""]),
     "kind": st.sampled_from(["loop", "radar", "x"]),
     "ts": st.sampled_from(["2026-11-24T07:59:00+08:00", "2026-11-24T07:59:00", "later"]),
     "interval_s": st.one_of(st.integers(-5, 100), st.floats(allow_nan=True))},
    optional={"counts": st.dictionaries(st.sampled_from(["car", "bus", "tank"]),
                                        st.integers(-2, 50), max_size=3),
              "count": st.integers(-1, 60), "seq": st.integers(-1, 5),
              "occupancy_pct": st.floats(-1, 120), "extra": st.text(max_size=3)})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.one_of(json_values, reading_like, st.lists(reading_like, max_size=8)),
       token=st.sampled_from(["lembuswana", "gateway", None]), garbage=st.binary(max_size=40))
def test_no_input_crashes_and_every_reading_is_accounted_for(
    tmp_path_factory: pytest.TempPathFactory, body: Any, token: str | None, garbage: bytes,
) -> None:
    lembuswana, first = issue_token("lembuswana", devices=["smd-lembuswana-*"])
    gateway, second = issue_token("gateway", devices=["*"])
    secrets = {"lembuswana": lembuswana, "gateway": gateway}
    http = HttpIngest(ReadingValidator(load_site(DEMO_SITE_FILE), max_future_skew_s=120),
                      TokenRegistry(DevicesFile(tokens=[first, second])),
                      max_body_bytes=64 * 1024, clock=Clock())
    for raw in (json.dumps(body).encode(), garbage):
        out = http.handle(raw, authorization=None if token is None else
                          f"Bearer {secrets[token]}", request_id="http:f", received_at=RECEIVED)
        assert out.status in {202, 400, 401, 403, 413, 429}
        forwarded = sum(len(items) for items in out.batches.values())
        if out.status in (401, 413, 429):
            assert forwarded == 0 and len(out.dead_letters) == 1
            continue
        rejected = len(out.body["rejected"])
        assert forwarded == out.body["accepted"]
        assert out.body["accepted"] + out.body["duplicates"] + rejected == out.readings_in
        assert len(out.dead_letters) == rejected
        assert (out.status == 202) == (rejected == 0)


def test_devices_file_round_trip(tmp_path: Path) -> None:
    token, entry = issue_token("gw", devices=["a-*"], intersections=["x"])
    path = tmp_path / "devices.yaml"
    path.write_text(json.dumps({"tokens": [entry.model_dump()]}))
    registry = TokenRegistry(DevicesFile.load(path))
    grant = registry.authenticate(token)
    assert grant is not None and grant.may_write("a-1", "x") and not grant.may_write("a-1", "y")
    assert token not in path.read_text()
    with pytest.raises(ValueError, match="same token"):
        TokenRegistry(DevicesFile(tokens=[entry, entry]))
