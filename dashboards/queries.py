"""InfluxQL for the dashboards and alerts, written against :mod:`simpang.schema` names.

Every query uses Grafana's InfluxDB macros: ``$timeFilter``, ``$__interval`` and the
dashboards' template variables (``$site``, ``$intersection``, ``$approach``, ``$source``,
``$window``). Multi-value variables are matched with ``=~ /^$var$/`` as Grafana expands them
(``(a|b)``, regex-escaped).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from simpang.schema import (
    APPROACH_METRICS,
    CAMERA_HEALTH,
    CONSUMER_LAG,
    DEAD_LETTERS,
    DETECTOR_HEALTH,
    PIPELINE_HEALTH,
    TIMING_APPROACHES,
    TIMING_PHASES,
    TIMING_RECOMMENDATIONS,
    Measurement,
    count_field,
)
from simpang.vehicles import VehicleClass

ResultFormat = Literal["time_series", "table"]


@dataclass(frozen=True)
class Query:
    """One panel target: raw InfluxQL, how Grafana shapes it, and the series' legend."""

    influxql: str
    result_format: ResultFormat = "time_series"
    alias: str | None = None


def _q(name: str) -> str:
    return f'"{name}"'


def _field(measurement: Measurement, name: str) -> str:
    """A field's quoted name, checked against the schema so a rename breaks the build."""
    return _q(measurement.field(name).name)


def _tag(measurement: Measurement, name: str) -> str:
    if name not in measurement.tags:
        raise KeyError(f"{measurement.name} has no tag {name}")
    return _q(name)


def matches(measurement: Measurement, *variables: str) -> str:
    """``AND "tag" =~ /^$tag$/`` for each variable (tag and variable share a name)."""
    return "".join(f" AND {_tag(measurement, v)} =~ /^${v}$/" for v in variables)


AM = APPROACH_METRICS
TR = TIMING_RECOMMENDATIONS
TA = TIMING_APPROACHES
TP = TIMING_PHASES
CH = CAMERA_HEALTH
DH = DETECTOR_HEALTH
PH = PIPELINE_HEALTH
CL = CONSUMER_LAG
DL = DEAD_LETTERS

APPROACH_LEVEL = (f"{_tag(AM, 'level')} = 'approach' AND {_tag(AM, 'window')} = '$window'"
                  f"{matches(AM, 'site', 'intersection', 'approach', 'source')}")


def variable_values(measurement: Measurement, tag: str, *narrowed_by: str) -> str:
    """The query behind a template variable: the tag's values, narrowed by earlier ones."""
    where = " AND ".join(f"{_tag(measurement, v)} =~ /^${v}$/" for v in narrowed_by)
    return (f"SHOW TAG VALUES FROM {_q(measurement.name)} WITH KEY = {_tag(measurement, tag)}"
            + (f" WHERE {where}" if where else ""))


def approach_series(field: str, aggregate: str = "mean") -> Query:
    return Query(
        f"SELECT {aggregate}({_field(AM, field)}) FROM {_q(AM.name)} WHERE $timeFilter AND "
        f"{APPROACH_LEVEL} GROUP BY time($__interval), {_tag(AM, 'approach')} fill(none)",
        alias="$tag_approach",
    )


def class_flows_veh_per_hour() -> Query:
    """Each class's share of the approach flow: flow × count(class) / count(all classes)."""
    counts = [_field(AM, count_field(c)) for c in VehicleClass]
    total = " + ".join(counts)
    shares = ", ".join(
        f"{_field(AM, 'flow_veh_per_hour')} * {_field(AM, count_field(c))} / ({total}) "
        f"AS {_q(c.value)}" for c in VehicleClass)
    totals = ", ".join(f"sum({_q(c.value)}) AS {_q(c.value)}" for c in VehicleClass)
    # Inner: per approach and point; middle: mean per interval and approach; outer: the
    # approaches added up, so the classes stack to the intersection's flow.
    inner = f"SELECT {shares} FROM {_q(AM.name)} WHERE $timeFilter AND {APPROACH_LEVEL}"
    middle = ", ".join(f"mean({_q(c.value)}) AS {_q(c.value)}" for c in VehicleClass)
    return Query(
        f"SELECT {totals} FROM (SELECT {middle} FROM ({inner}) GROUP BY time($__interval), "
        f"{_tag(AM, 'approach')}) WHERE $timeFilter GROUP BY time($__interval) fill(none)",
    )


def intersection_flows_pcu_per_hour() -> Query:
    """Latest flow of each intersection: the sum of its approaches' latest windows."""
    inner = (f"SELECT last({_field(AM, 'flow_pcu_per_hour')}) AS \"flow\" FROM {_q(AM.name)} "
             f"WHERE $timeFilter AND {_tag(AM, 'level')} = 'approach' AND "
             f"{_tag(AM, 'window')} = '$window'{matches(AM, 'site', 'source')} "
             f"GROUP BY {_tag(AM, 'intersection')}, {_tag(AM, 'approach')}")
    return Query(f"SELECT sum(\"flow\") AS \"flow_pcu_per_hour\" FROM ({inner}) "
                 f"GROUP BY {_tag(AM, 'intersection')}", "table")


def intersection_status() -> Query:
    """Latest recommendation of each intersection: DS, plans, position (one point)."""
    return Query(
        f"SELECT last({_field(TR, 'running_max_degree_of_saturation')}) AS "
        f"\"degree_of_saturation\", {_field(TR, 'max_degree_of_saturation')} AS "
        f"\"recommended_degree_of_saturation\", {_field(TR, 'running_cycle_s')}, "
        f"{_field(TR, 'cycle_s')} AS \"recommended_cycle_s\", "
        f"{_field(TR, 'latitude')}, {_field(TR, 'longitude')} FROM {_q(TR.name)} "
        f"WHERE $timeFilter{matches(TR, 'site')} GROUP BY {_tag(TR, 'intersection')}",
        "table",
    )


def intersection_queues_m() -> Query:
    inner = (f"SELECT last({_field(CH, 'queue_length_m')}) AS \"queue\" FROM {_q(CH.name)} "
             f"WHERE $timeFilter GROUP BY {_tag(CH, 'intersection')}, {_tag(CH, 'camera')}")
    return Query(f"SELECT max(\"queue\") AS \"queue_length_m\" FROM ({inner}) "
                 f"GROUP BY {_tag(CH, 'intersection')}", "table")


def intersection_detector_faults() -> Query:
    inner = (f"SELECT last({_field(DH, 'dead')}) AS \"dead\", {_field(DH, 'stuck_on')} AS "
             f"\"stuck_on\", {_field(DH, 'stuck_off')} AS \"stuck_off\" FROM {_q(DH.name)} "
             f"WHERE $timeFilter{matches(DH, 'site')} "
             f"GROUP BY {_tag(DH, 'intersection')}, {_tag(DH, 'device')}")
    return Query(f"SELECT sum(\"dead\") AS \"dead_detectors\", sum(\"stuck_on\") + "
                 f"sum(\"stuck_off\") AS \"stuck_detectors\" FROM ({inner}) "
                 f"GROUP BY {_tag(DH, 'intersection')}", "table")


def worst_approaches() -> Query:
    return Query(
        f"SELECT last({_field(TA, 'running_degree_of_saturation')}) AS "
        f"\"degree_of_saturation\", {_field(TA, 'flow_pcu_per_hour')}, "
        f"{_field(TA, 'running_delay_s')} AS \"delay_s\" FROM {_q(TA.name)} "
        f"WHERE $timeFilter{matches(TA, 'site')} "
        f"GROUP BY {_tag(TA, 'intersection')}, {_tag(TA, 'approach')}",
        "table",
    )


def approach_ds(field: str) -> Query:
    return Query(
        f"SELECT mean({_field(TA, field)}) FROM {_q(TA.name)} WHERE $timeFilter"
        f"{matches(TA, 'site', 'intersection', 'approach')} "
        f"GROUP BY time($__interval), {_tag(TA, 'approach')} fill(none)",
        alias="$tag_approach" + (" (recommended)" if field == "degree_of_saturation" else ""),
    )


def cycles() -> Query:
    return Query(
        f"SELECT last({_field(TR, 'running_cycle_s')}) AS \"running\", "
        f"last({_field(TR, 'cycle_s')}) AS \"recommended\" FROM {_q(TR.name)} "
        f"WHERE $timeFilter{matches(TR, 'site', 'intersection')} "
        f"GROUP BY time($__interval) fill(none)",
    )


def greens(field: str) -> Query:
    return Query(
        f"SELECT last({_field(TP, field)}) FROM {_q(TP.name)} WHERE $timeFilter"
        f"{matches(TP, 'site', 'intersection')} "
        f"GROUP BY time($__interval), {_tag(TP, 'phase')} fill(none)",
        alias="$tag_phase" + (" running" if field == "running_green_s" else " recommended"),
    )


def latest_recommendations(limit: int = 5) -> Query:
    return Query(
        f"SELECT {_tag(TR, 'status')}::tag, {_field(TR, 'cycle_s')}, "
        f"{_field(TR, 'running_cycle_s')}, {_field(TR, 'expected_delay_s')}, "
        f"{_field(TR, 'running_delay_s')}, {_field(TR, 'reasons')} FROM {_q(TR.name)} "
        f"WHERE $timeFilter{matches(TR, 'site', 'intersection')} "
        f"ORDER BY time DESC LIMIT {limit}",
        "table",
    )


def camera_queue_m() -> Query:
    return Query(
        f"SELECT mean({_field(CH, 'queue_length_m')}) FROM {_q(CH.name)} WHERE $timeFilter"
        f"{matches(CH, 'intersection')} GROUP BY time($__interval), {_tag(CH, 'camera')} "
        f"fill(none)",
        alias="$tag_camera",
    )


def cameras_now() -> Query:
    """The latest health sample of each camera; its time is when the camera was last seen."""
    return Query(
        f"SELECT last({_field(CH, 'fps')}) AS \"fps\", {_field(CH, 'inference_ms')}, "
        f"{_field(CH, 'lag_s')}, {_field(CH, 'frozen')}, {_field(CH, 'rejected')}, "
        f"{_field(CH, 'queue_length_m')} FROM {_q(CH.name)} WHERE $timeFilter"
        f"{matches(CH, 'intersection')} GROUP BY {_tag(CH, 'camera')}, "
        f"{_tag(CH, 'intersection')}",
        "table",
    )


def camera_series(field: str) -> Query:
    return Query(
        f"SELECT mean({_field(CH, field)}) FROM {_q(CH.name)} WHERE $timeFilter"
        f"{matches(CH, 'intersection')} GROUP BY time($__interval), {_tag(CH, 'camera')} "
        f"fill(none)",
        alias="$tag_camera",
    )


def detectors_now() -> Query:
    """The latest diagnosis of each field detector; its time is the latest sample."""
    return Query(
        f"SELECT last({_field(DH, 'silent_s')}) AS \"silent_s\", {_field(DH, 'dead')}, "
        f"{_field(DH, 'stuck_on')}, {_field(DH, 'stuck_off')}, {_field(DH, 'readings')} "
        f"FROM {_q(DH.name)} WHERE $timeFilter{matches(DH, 'site', 'intersection')} "
        f"GROUP BY {_tag(DH, 'intersection')}, {_tag(DH, 'approach')}, {_tag(DH, 'lane')}, "
        f"{_tag(DH, 'device')}, {_tag(DH, 'kind')}",
        "table",
    )


def detector_faults_over_time() -> Query:
    inner = (f"SELECT max({_field(DH, 'dead')}) AS \"dead\", max({_field(DH, 'stuck_on')}) "
             f"AS \"stuck_on\", max({_field(DH, 'stuck_off')}) AS \"stuck_off\" FROM "
             f"{_q(DH.name)} WHERE $timeFilter{matches(DH, 'site', 'intersection')} "
             f"GROUP BY time($__interval), {_tag(DH, 'device')}")
    return Query(f"SELECT sum(\"dead\") AS \"dead\", sum(\"stuck_on\") AS \"stuck_on\", "
                 f"sum(\"stuck_off\") AS \"stuck_off\" FROM ({inner}) WHERE $timeFilter "
                 f"GROUP BY time($__interval) fill(none)")


def consumer_lag_by_topic() -> Query:
    inner = (f"SELECT last({_field(CL, 'lag_messages')}) AS \"lag\" FROM {_q(CL.name)} "
             f"WHERE $timeFilter GROUP BY time($__interval), {_tag(CL, 'topic')}, "
             f"{_tag(CL, 'partition')}, {_tag(CL, 'worker')}")
    return Query(f"SELECT sum(\"lag\") FROM ({inner}) WHERE $timeFilter "
                 f"GROUP BY time($__interval), {_tag(CL, 'topic')} fill(none)",
                 alias="$tag_topic")


def worker_rate(field: str) -> Query:
    """Per-second rate of a since-start counter; a restart's reset is not a negative rate."""
    return Query(
        f"SELECT non_negative_derivative(last({_field(PH, field)}), 1s) FROM {_q(PH.name)} "
        f"WHERE $timeFilter GROUP BY time($__interval), {_tag(PH, 'worker')} fill(none)",
        alias=f"$tag_worker {field}",
    )


def worker_increase(field: str) -> Query:
    return Query(
        f"SELECT non_negative_difference(last({_field(PH, field)})) FROM {_q(PH.name)} "
        f"WHERE $timeFilter GROUP BY time($__interval), {_tag(PH, 'worker')} fill(none)",
        alias="$tag_worker",
    )


def workers_now() -> Query:
    return Query(
        f"SELECT last({_field(PH, 'uptime_s')}) AS \"uptime_s\", "
        f"{_field(PH, 'readings_in')}, {_field(PH, 'readings_accepted')}, "
        f"{_field(PH, 'dead_letters')}, {_field(PH, 'points_written')}, "
        f"{_field(PH, 'sink_write_errors')}, {_field(PH, 'consumer_lag')} FROM {_q(PH.name)} "
        f"WHERE $timeFilter GROUP BY {_tag(PH, 'worker')}",
        "table",
    )


def dead_letters_by_reason() -> Query:
    return Query(
        f"SELECT sum({_field(DL, 'count')}) FROM {_q(DL.name)} WHERE $timeFilter "
        f"GROUP BY time($__interval), {_tag(DL, 'reason_code')} fill(none)",
        alias="$tag_reason_code",
    )


def latest_dead_letters(limit: int = 20) -> Query:
    return Query(
        f"SELECT {_tag(DL, 'source')}::tag, {_tag(DL, 'reason_code')}::tag, "
        f"{_field(DL, 'device_id')}, {_field(DL, 'reason')} FROM {_q(DL.name)} "
        f"WHERE $timeFilter ORDER BY time DESC LIMIT {limit}",
        "table",
    )
