"""ReadingValidator on raw message bytes, and the line protocol of streams/points.py."""

from __future__ import annotations

import json
import zlib
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from simpang.records import (
    RAW_PAYLOAD_CAP_BYTES,
    ApproachMetrics,
    DeadLetter,
    HealthSample,
    RejectReason,
)
from simpang.schema import PIPELINE_HEALTH
from simpang.settings import DEMO_SITE_FILE
from simpang.site_file import load_site
from simpang.vehicles import VehicleClass
from streams.ingest import MAX_MESSAGE_BYTES, MAX_READINGS_PER_MESSAGE, ReadingValidator
from streams.points import approach_metrics_line, dead_letter_line, health_lines

RECEIVED = datetime(2026, 11, 24, 0, 0, tzinfo=UTC)  # 08:00 in Samarinda (UTC+8)
WITA = timezone(timedelta(hours=8))
N1 = "smd-lembuswana-n1-loop"
MSG = "sensor-readings:2:41"


@pytest.fixture(scope="module")
def validator() -> ReadingValidator:
    return ReadingValidator(load_site(DEMO_SITE_FILE), max_future_skew_s=120)


def reading(device: str = N1, **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "device_id": device, "kind": "loop", "ts": "2026-11-24T07:59:00+08:00",
        "interval_s": 60, "counts": {"motorcycle": 12, "car": 5}, "occupancy_pct": 14.5,
        "speed_kmh": 31.0,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def encode(value: Any) -> bytes:
    return json.dumps(value).encode()


def run(validator: ReadingValidator, raw: bytes, received_at: datetime = RECEIVED) -> Any:
    return validator.validate(raw, source="sensor-readings", message_id=MSG,
                              received_at=received_at)


# --- accepted readings ------------------------------------------------------------------------


def test_single_object_is_normalised_to_its_lane(validator: ReadingValidator) -> None:
    result = run(validator, encode(reading()))
    assert result.readings_in == 1
    assert result.accepted == 1
    assert result.dead_letters == []
    assert list(result.by_intersection) == ["smd-lembuswana"]
    (normalised,) = result.by_intersection["smd-lembuswana"]
    assert normalised.intersection == "smd-lembuswana"
    assert normalised.approach == "north"
    assert normalised.lane == "n1"
    assert normalised.device_id == N1
    # 2026-11-24T07:59:00+08:00 = 2026-11-23T23:59:00Z
    assert normalised.ts_ms == int(datetime(2026, 11, 23, 23, 59, tzinfo=UTC).timestamp()) * 1000
    assert normalised.ts_ms == 1_795_478_340_000
    assert normalised.interval_s == 60.0
    assert normalised.counts == {VehicleClass.MOTORCYCLE: 12, VehicleClass.CAR: 5}
    assert normalised.occupancy_pct == 14.5
    assert normalised.speed_kmh == 31.0


def test_total_count_without_classes_is_unclassified(validator: ReadingValidator) -> None:
    result = run(validator, encode(reading(counts=None, count=9, occupancy_pct=None)))
    (normalised,) = result.by_intersection["smd-lembuswana"]
    assert normalised.counts == {VehicleClass.UNCLASSIFIED: 9}
    assert normalised.occupancy_pct is None


def test_zero_counts_are_dropped_from_class_counts(validator: ReadingValidator) -> None:
    result = run(validator, encode(reading(counts={"car": 0, "bus": 2}, count=2)))
    (normalised,) = result.by_intersection["smd-lembuswana"]
    assert normalised.counts == {VehicleClass.BUS: 2}


def test_array_is_grouped_by_intersection_in_order(validator: ReadingValidator) -> None:
    batch = [
        reading("smd-lembuswana-n1-loop", counts={"car": 1}),
        reading("bpn-muara-rapak-e2-radar", kind="radar", counts={"truck": 2}),
        reading("smd-lembuswana-w2-loop", counts={"car": 3}),
        reading("smd-air-hitam-s1-loop", counts={"bus": 4}),
        reading("bpn-muara-rapak-w1-radar", kind="radar", counts={"motorcycle": 5}),
    ]
    result = run(validator, encode(batch))
    assert result.readings_in == 5
    assert result.accepted == 5
    assert result.dead_letters == []
    grouped = {
        key: [(r.device_id, r.approach, r.lane) for r in readings]
        for key, readings in result.by_intersection.items()
    }
    assert grouped == {
        "smd-lembuswana": [("smd-lembuswana-n1-loop", "north", "n1"),
                           ("smd-lembuswana-w2-loop", "west", "w2")],
        "bpn-muara-rapak": [("bpn-muara-rapak-e2-radar", "east", "e2"),
                            ("bpn-muara-rapak-w1-radar", "west", "w1")],
        "smd-air-hitam": [("smd-air-hitam-s1-loop", "south", "s1")],
    }


def test_empty_array_is_nothing(validator: ReadingValidator) -> None:
    result = run(validator, b"[]")
    assert (result.readings_in, result.accepted, result.dead_letters) == (0, 0, [])
    assert result.by_intersection == {}


def test_matching_location_claims_are_accepted(validator: ReadingValidator) -> None:
    raw = encode(reading(intersection="smd-lembuswana", approach="north", lane="n1"))
    assert run(validator, raw).accepted == 1


# --- malformed ------------------------------------------------------------------------------


def test_malformed_json_keeps_the_raw_text(validator: ReadingValidator) -> None:
    raw = b'{"device_id": "'
    result = run(validator, raw)
    assert result.readings_in == 1
    assert result.by_intersection == {}
    (dl,) = result.dead_letters
    assert dl.reason_code is RejectReason.MALFORMED
    assert dl.reason == (
        "not valid JSON: Unterminated string starting at: line 1 column 15 (char 14)"
    )
    assert dl.raw == '{"device_id": "'
    assert dl.raw_truncated is False
    assert dl.id == MSG  # a whole message has no index suffix
    assert dl.source == "sensor-readings"
    assert dl.device_id is None
    assert dl.ts == RECEIVED


def test_bytes_that_are_not_utf8_are_malformed(validator: ReadingValidator) -> None:
    (dl,) = run(validator, b"\xff\xfe{").dead_letters
    assert dl.reason_code is RejectReason.MALFORMED
    assert dl.reason.startswith("not valid JSON: ")
    assert dl.raw == "\\xff\\xfe{"


@pytest.mark.parametrize("raw", [b"42", b'"reading"', b"null", b"true"])
def test_json_that_is_neither_object_nor_array(validator: ReadingValidator, raw: bytes) -> None:
    result = run(validator, raw)
    assert result.readings_in == 1
    (dl,) = result.dead_letters
    assert dl.reason_code is RejectReason.MALFORMED
    assert dl.reason == "expected a reading (JSON object) or a batch (JSON array)"
    assert dl.raw == raw.decode()


def test_non_object_items_in_a_batch(validator: ReadingValidator) -> None:
    result = run(validator, encode([reading(), 7, ["x"]]))
    assert result.readings_in == 3
    assert result.accepted == 1
    assert [(d.id, d.reason_code.value, d.reason, d.raw) for d in result.dead_letters] == [
        (f"{MSG}:1", "malformed", "[1]: expected a JSON object", "7"),
        (f"{MSG}:2", "malformed", "[2]: expected a JSON object", '["x"]'),
    ]


# --- invalid --------------------------------------------------------------------------------


def test_schema_error_names_the_json_path_in_a_batch(validator: ReadingValidator) -> None:
    bad = reading(counts=None, count=-3)
    result = run(validator, encode([reading(), bad, reading(interval_s=0)]))
    assert result.readings_in == 3
    assert result.accepted == 1
    assert [(d.id, d.reason_code, d.reason) for d in result.dead_letters] == [
        (f"{MSG}:1", RejectReason.INVALID, "[1].count: Input should be greater than or equal to 0"),
        (f"{MSG}:2", RejectReason.INVALID, "[2].interval_s: Input should be greater than 0"),
    ]
    first = result.dead_letters[0]
    # The raw payload of a batch item is that item, compact JSON.
    assert json.loads(first.raw) == bad
    assert first.raw == json.dumps(bad, separators=(",", ":"))
    assert first.device_id == N1


def test_schema_error_of_a_single_object_has_no_index(validator: ReadingValidator) -> None:
    (dl,) = run(validator, encode(reading(counts={"car": 1, "tram": 2}))).dead_letters
    assert dl.reason_code is RejectReason.INVALID
    assert dl.reason == (
        "counts.tram.[key]: Input should be 'motorcycle', 'car', 'bus', 'truck', 'bicycle' "
        "or 'unclassified'"
    )
    assert dl.id == MSG


def test_every_schema_error_is_listed(validator: ReadingValidator) -> None:
    item = {"device_id": "nope", "kind": "video", "occupancy_pct": 140}
    (dl,) = run(validator, encode([item])).dead_letters
    assert dl.reason == (
        "[0].kind: Input should be 'loop', 'radar' or 'counter'; "
        "[0].ts: Field required; [0].interval_s: Field required; "
        "[0].occupancy_pct: Input should be less than or equal to 100"
    )
    assert dl.device_id == "nope"


def test_count_and_counts_must_agree(validator: ReadingValidator) -> None:
    (dl,) = run(validator, encode([reading(count=18)])).dead_letters
    assert dl.reason_code is RejectReason.INVALID
    assert dl.reason == "[0]: count 18 differs from the sum of counts 17"


def test_a_reading_needs_a_measurement(validator: ReadingValidator) -> None:
    raw = encode(reading(counts=None, occupancy_pct=None, speed_kmh=None))
    (dl,) = run(validator, raw).dead_letters
    assert dl.reason == (
        "(top level): a reading needs at least one of count, counts, occupancy_pct, speed_kmh"
    )


def test_unknown_field_is_invalid(validator: ReadingValidator) -> None:
    (dl,) = run(validator, encode(reading(colour="red"))).dead_letters
    assert dl.reason == "colour: Extra inputs are not permitted"


def test_nan_is_rejected(validator: ReadingValidator) -> None:
    raw = encode(reading()).replace(b"31.0", b"NaN")
    (dl,) = run(validator, raw).dead_letters
    assert dl.reason_code is RejectReason.INVALID
    assert dl.reason.startswith("speed_kmh: ")


def test_timestamp_without_timezone_is_rejected(validator: ReadingValidator) -> None:
    result = run(validator, encode([reading(ts="2026-11-24T07:59:00")]))
    assert result.accepted == 0
    (dl,) = result.dead_letters
    assert dl.reason_code is RejectReason.INVALID
    assert dl.reason == "[0].ts: Input should have timezone info"


def test_unsupported_version(validator: ReadingValidator) -> None:
    (dl,) = run(validator, encode([reading(v=2)])).dead_letters
    assert dl.reason_code is RejectReason.UNSUPPORTED_VERSION
    assert dl.reason == "[0].v: version 2 is not supported (expected 1)"


# --- site and clock checks -------------------------------------------------------------------


def test_unknown_device(validator: ReadingValidator) -> None:
    result = run(validator, encode([reading(), reading("ghost-loop")]))
    assert result.accepted == 1
    (dl,) = result.dead_letters
    assert dl.reason_code is RejectReason.UNKNOWN_DEVICE
    assert dl.reason == "[1].device_id: 'ghost-loop' is not in site 'kaltim-demo'"
    assert dl.device_id == "ghost-loop"
    assert dl.id == f"{MSG}:1"


def test_reading_that_claims_another_lane(validator: ReadingValidator) -> None:
    (dl,) = run(validator, encode(reading(approach="north", lane="n2"))).dead_letters
    assert dl.reason_code is RejectReason.LOCATION_MISMATCH
    assert dl.reason == (
        f"lane: 'n2' but device '{N1}' is at lane 'n1' in the site file"
    )


def test_reading_that_claims_another_intersection(validator: ReadingValidator) -> None:
    (dl,) = run(validator, encode([reading(intersection="smd-air-hitam")])).dead_letters
    assert dl.reason_code is RejectReason.LOCATION_MISMATCH
    assert dl.reason.startswith("[0].intersection: 'smd-air-hitam' but device ")


def test_future_timestamp_limit_is_max_future_skew(validator: ReadingValidator) -> None:
    at_limit = (RECEIVED + timedelta(seconds=120)).astimezone(WITA).isoformat()
    beyond = (RECEIVED + timedelta(seconds=121)).astimezone(WITA).isoformat()
    assert at_limit == "2026-11-24T08:02:00+08:00"
    result = run(validator, encode([reading(ts=at_limit), reading(ts=beyond)]))
    assert result.accepted == 1
    assert result.by_intersection["smd-lembuswana"][0].ts_ms == int(
        (RECEIVED + timedelta(seconds=120)).timestamp() * 1000
    )
    (dl,) = result.dead_letters
    assert dl.reason_code is RejectReason.FUTURE_TIMESTAMP
    assert dl.reason == (
        "[1].ts: 2026-11-24T08:02:01+08:00 is more than 120 s ahead of the receiver's clock "
        "(2026-11-24T00:00:00+00:00)"
    )


def test_future_skew_is_configurable() -> None:
    strict = ReadingValidator(load_site(DEMO_SITE_FILE), max_future_skew_s=0)
    one_second_ahead = (RECEIVED + timedelta(seconds=1)).isoformat()
    (dl,) = run(strict, encode(reading(ts=one_second_ahead))).dead_letters
    assert dl.reason_code is RejectReason.FUTURE_TIMESTAMP
    assert " is more than 0 s ahead " in dl.reason
    assert run(strict, encode(reading(ts=RECEIVED.isoformat()))).accepted == 1


def test_old_timestamps_are_not_the_validators_business(validator: ReadingValidator) -> None:
    assert run(validator, encode(reading(ts="2020-01-01T00:00:00+00:00"))).accepted == 1


# --- size limits ------------------------------------------------------------------------------


def test_message_over_one_mebibyte_is_too_large(validator: ReadingValidator) -> None:
    raw = b"[" + b" " * MAX_MESSAGE_BYTES + b"]"
    result = run(validator, raw)
    (dl,) = result.dead_letters
    assert dl.reason_code is RejectReason.TOO_LARGE
    assert dl.reason == f"message of {MAX_MESSAGE_BYTES + 2} bytes exceeds {MAX_MESSAGE_BYTES}"
    assert dl.raw_truncated is True
    assert len(dl.raw) == RAW_PAYLOAD_CAP_BYTES


def test_batch_over_the_reading_limit_is_too_large(validator: ReadingValidator) -> None:
    count = MAX_READINGS_PER_MESSAGE + 1
    result = run(validator, encode([{}] * count))
    assert result.readings_in == count
    assert result.accepted == 0
    (dl,) = result.dead_letters
    assert dl.reason_code is RejectReason.TOO_LARGE
    assert dl.reason == f"batch of {count} readings exceeds {MAX_READINGS_PER_MESSAGE}"


# --- line protocol ----------------------------------------------------------------------------

WINDOW_END = datetime(2026, 11, 24, 7, 1, tzinfo=WITA)
WINDOW_END_NS = 1_795_474_860_000_000_000


def metrics(**overrides: Any) -> ApproachMetrics:
    values: dict[str, Any] = {
        "site": "kaltim-demo", "intersection": "smd-lembuswana", "approach": "north",
        "lane": "n1", "window": "60s", "window_start": WINDOW_END - timedelta(seconds=60),
        "window_end": WINDOW_END, "counts": {"motorcycle": 20, "car": 10, "bus": 1},
        "flow_veh_per_hour": 1860.0, "flow_pcu_per_hour": 1004.5, "occupancy_pct": 15.0,
        "mean_speed_kmh": 26.25, "readings": 2,
    }
    values.update(overrides)
    return ApproachMetrics(**values)


def test_window_end_timestamp() -> None:
    # 07:01 WITA = 23:01 UTC the day before.
    assert int(WINDOW_END.timestamp()) * 1_000_000_000 == WINDOW_END_NS


def test_lane_metrics_line() -> None:
    assert approach_metrics_line(metrics()) == (
        "approach_metrics,approach=north,intersection=smd-lembuswana,lane=n1,level=lane,"
        "site=kaltim-demo,source=field,window=60s "
        "count_bicycle=0i,count_bus=1i,count_car=10i,count_motorcycle=20i,count_truck=0i,"
        "count_unclassified=0i,flow_pcu_per_hour=1004.5,flow_veh_per_hour=1860,"
        "mean_speed_kmh=26.25,occupancy_pct=15,readings=2i "
        f"{WINDOW_END_NS}"
    )


def test_approach_metrics_line_has_no_lane_tag_and_no_missing_fields() -> None:
    line = approach_metrics_line(
        metrics(lane=None, occupancy_pct=None, mean_speed_kmh=None, window="300s-every-60s")
    )
    measurement_and_tags, fields, timestamp = line.split(" ")
    assert measurement_and_tags.split(",") == [
        "approach_metrics", "approach=north", "intersection=smd-lembuswana", "level=approach",
        "site=kaltim-demo", "source=field", "window=300s-every-60s",
    ]
    parsed = dict(field.split("=") for field in fields.split(","))
    assert "occupancy_pct" not in parsed
    assert "mean_speed_kmh" not in parsed
    assert parsed["readings"] == "2i"
    assert parsed["count_motorcycle"] == "20i"
    assert parsed["count_unclassified"] == "0i"
    assert len(parsed) == 2 + 1 + len(VehicleClass)
    assert int(timestamp) == WINDOW_END_NS


def test_metrics_timestamp_keeps_microseconds() -> None:
    end = WINDOW_END + timedelta(microseconds=250)
    line = approach_metrics_line(metrics(window_end=end))
    assert line.rsplit(" ", 1)[1] == str(WINDOW_END_NS + 250_000)


def test_tag_values_are_escaped() -> None:
    line = approach_metrics_line(metrics(site="kaltim demo,1"))
    assert ",site=kaltim\\ demo\\,1," in line


def test_dead_letter_line() -> None:
    dl = DeadLetter.of(
        id="sensor-readings:0:5:1", source="sensor-readings", reason_code=RejectReason.INVALID,
        reason='[1].count: Input "x" should be greater than or equal to 0', raw=b"{}",
        device_id="smd-lembuswana-n1-loop", ts=WINDOW_END,
    )
    tie_break = zlib.crc32(b"sensor-readings:0:5:1") % 1000
    assert tie_break == 756
    assert dead_letter_line(dl) == (
        "dead_letters,reason_code=invalid,source=sensor-readings "
        'count=1i,device_id="smd-lembuswana-n1-loop",'
        'reason="[1].count: Input \\"x\\" should be greater than or equal to 0" '
        f"{WINDOW_END_NS + 756}"
    )


def test_dead_letter_line_without_device_and_with_long_reason() -> None:
    dl = DeadLetter.of(
        id="m", source="http", reason_code=RejectReason.MALFORMED, reason="x" * 1500,
        raw="x", ts=WINDOW_END,
    )
    line = dead_letter_line(dl)
    assert "device_id" not in line
    assert f'reason="{"x" * 1000}" ' in line
    assert "x" * 1001 not in line
    assert line.startswith("dead_letters,reason_code=malformed,source=http count=1i,reason=")
    assert int(line.rsplit(" ", 1)[1]) == WINDOW_END_NS + zlib.crc32(b"m") % 1000


def test_dead_letter_from_a_payload_with_newlines_is_one_line(
    validator: ReadingValidator,
) -> None:
    raw = encode([reading("loop\n1"), reading(**{"x\ny": 1})])
    dead_letters = run(validator, raw).dead_letters
    assert [d.reason_code for d in dead_letters] == [RejectReason.INVALID] * 2
    assert dead_letters[0].device_id == "loop\n1"
    assert dead_letters[1].reason == "[1].x\ny: Extra inputs are not permitted"
    for dl in dead_letters:
        assert "\n" not in dead_letter_line(dl)


def test_dead_letters_with_the_same_time_get_distinct_timestamps() -> None:
    stamps = {
        dead_letter_line(DeadLetter.of(
            id=f"{MSG}:{i}", source="s", reason_code=RejectReason.INVALID, reason="r", raw="",
            ts=WINDOW_END,
        )).rsplit(" ", 1)[1]
        for i in range(20)
    }
    assert len(stamps) == 20
    assert all(WINDOW_END_NS <= int(s) < WINDOW_END_NS + 1000 for s in stamps)


def test_health_lines_follow_the_schema() -> None:
    counters = [
        name for name, info in HealthSample.model_fields.items() if info.annotation in (int, "int")
    ]
    assert {"readings_in", "dead_letters", "points_written"} <= set(counters)
    values = {name: 10 * (i + 1) for i, name in enumerate(counters)}
    sample = HealthSample(
        worker="w1", ts=WINDOW_END, started_at=WINDOW_END - timedelta(seconds=90.5),
        consumer_lag={"sensor-readings:1": 3, "sensor-readings:0": 2}, **values,
    )
    health, *lag = health_lines(sample)
    head, fields, timestamp = health.split(" ")
    assert head == "pipeline_health,worker=w1"
    assert int(timestamp) == WINDOW_END_NS
    parsed = dict(field.split("=") for field in fields.split(","))
    assert set(parsed) == {spec.name for spec in PIPELINE_HEALTH.fields}
    for name, value in values.items():
        assert parsed[name] == f"{value}i", name
    assert parsed["consumer_lag"] == "5i"
    assert parsed["uptime_s"] == "90.5"
    assert lag == [
        "consumer_lag,partition=0,topic=sensor-readings,worker=w1 lag_messages=2i "
        f"{WINDOW_END_NS}",
        "consumer_lag,partition=1,topic=sensor-readings,worker=w1 lag_messages=3i "
        f"{WINDOW_END_NS}",
    ]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (encode(reading(kind="radar", counts=None, count=4)),
         "kind: 'radar' but device 'smd-lembuswana-n1-loop' is a 'loop' in the site file"),
        (encode(reading(counts=None, count=True)), "count: Input should be a valid integer"),
        (encode(reading(counts=None, occupancy_pct=None)).replace(b"31.0", b"NaN"),
         "speed_kmh: Input should be a finite number"),
    ],
    ids=["kind-differs-from-site", "boolean-count", "nan-speed"],
)
def test_readings_that_only_look_valid_are_refused(
    validator: ReadingValidator, raw: bytes, expected: str
) -> None:
    result = run(validator, raw)
    assert result.accepted == 0
    (dl,) = result.dead_letters
    assert dl.reason_code is RejectReason.INVALID
    assert dl.reason.startswith(expected), dl.reason
