"""The InfluxDB measurement schema, defined once: the sink writes it, the dashboards query it,
and the README's schema table is printed from it (``simpang schema``).

Tags are low-cardinality identifiers only (no track ids, no device ids on high-rate series).

>>> APPROACH_METRICS.field("flow_pcu_per_hour").unit
'pcu/h'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from simpang.vehicles import VehicleClass

FieldType = Literal["float", "int", "string"]


@dataclass(frozen=True)
class FieldSpec:
    name: str
    type: FieldType
    unit: str
    description: str


@dataclass(frozen=True)
class Measurement:
    name: str
    tags: tuple[str, ...]
    fields: tuple[FieldSpec, ...]
    description: str

    def field(self, name: str) -> FieldSpec:
        for spec in self.fields:
            if spec.name == name:
                return spec
        raise KeyError(name)


def count_field(vehicle_class: VehicleClass) -> str:
    return f"count_{vehicle_class.value}"


APPROACH_METRICS = Measurement(
    name="approach_metrics",
    tags=("site", "intersection", "approach", "level", "lane", "window", "source"),
    fields=(
        FieldSpec("flow_veh_per_hour", "float", "veh/h", "Vehicles in the window, per hour."),
        FieldSpec("flow_pcu_per_hour", "float", "pcu/h", "Passenger-car units per hour (PKJI)."),
        FieldSpec("occupancy_pct", "float", "%", "Time-weighted detector occupancy."),
        FieldSpec("mean_speed_kmh", "float", "km/h", "Count-weighted mean speed."),
        FieldSpec("readings", "int", "readings", "Device readings aggregated."),
        *(
            FieldSpec(count_field(c), "int", "veh", f"Vehicles of class {c.value}.")
            for c in VehicleClass
        ),
    ),
    description=(
        "One point per closed window, per lane (level=lane) and per approach (level=approach, "
        "no lane tag), per source (field: loops, radar, counters; camera: camera counting, "
        "kept apart so a lane seen by both is not counted twice); time = window end. "
        "Re-emitting a window overwrites the same point."
    ),
)

DEAD_LETTERS = Measurement(
    name="dead_letters",
    tags=("source", "reason_code"),
    fields=(
        FieldSpec("count", "int", "messages", "Always 1: sum it per interval."),
        FieldSpec("reason", "string", "", "What was wrong, with JSON paths."),
        FieldSpec("device_id", "string", "", "Sender, when known."),
    ),
    description="One point per rejected message; time = rejection time.",
)

PIPELINE_HEALTH = Measurement(
    name="pipeline_health",
    tags=("worker",),
    fields=(
        FieldSpec("readings_in", "int", "readings", "Readings received since start."),
        FieldSpec("readings_accepted", "int", "readings", "Readings accepted since start."),
        FieldSpec("dead_letters", "int", "messages", "Rejections since start."),
        FieldSpec(
            "readings_windowed", "int", "readings",
            "Readings the metrics agent has applied to (or rejected from) windows.",
        ),
        FieldSpec(
            "readings_resent", "int", "readings",
            "Re-sends of a (device, seq) a window had counted, from any path: left out.",
        ),
        FieldSpec("metrics_emitted", "int", "points", "Window metrics emitted since start."),
        FieldSpec("points_written", "int", "points", "Points written to InfluxDB since start."),
        FieldSpec(
            "metric_points_written", "int", "points",
            "approach_metrics points among points_written.",
        ),
        FieldSpec("sink_write_errors", "int", "errors", "Failed InfluxDB writes since start."),
        FieldSpec("consumer_lag", "int", "messages", "Messages behind, all partitions."),
        FieldSpec("http_requests", "int", "requests", "HTTP ingest requests since start."),
        FieldSpec("http_readings_in", "int", "readings", "Readings received over HTTP."),
        FieldSpec("http_readings_accepted", "int", "readings",
                  "HTTP readings accepted (sent on to sensor-readings)."),
        FieldSpec("http_duplicates", "int", "readings",
                  "HTTP re-sends recognised (device + seq) and not sent on again."),
        FieldSpec("uptime_s", "float", "s", "Seconds since the worker started."),
    ),
    description="Each worker's counters, sampled every health interval.",
)

CONSUMER_LAG = Measurement(
    name="consumer_lag",
    tags=("worker", "topic", "partition"),
    fields=(FieldSpec("lag_messages", "int", "messages", "Messages not yet committed."),),
    description="Per topic-partition lag of each worker, sampled every health interval.",
)

CAMERA_HEALTH = Measurement(
    name="camera_health",
    tags=("camera", "intersection", "worker"),
    fields=(
        FieldSpec("frames", "int", "frames", "Frames processed in the interval."),
        FieldSpec("fps", "float", "frames/s", "Frames processed per second."),
        FieldSpec("inference_ms", "float", "ms", "Mean detector time per frame."),
        FieldSpec("lag_s", "float", "s", "Now minus the newest frame's capture time."),
        FieldSpec("frozen", "int", "0/1", "1 when the picture has stopped changing."),
        FieldSpec("rejected", "int", "frames", "Frames rejected in the interval."),
        FieldSpec("queue_vehicles", "int", "veh", "Stopped vehicles in the queue zone."),
        FieldSpec("queue_length_m", "float", "m", "Stop line to the last queued vehicle."),
    ),
    description="Each camera's counting health, every health interval of the worker.",
)

DETECTOR_HEALTH = Measurement(
    name="detector_health",
    tags=("site", "intersection", "approach", "lane", "device", "kind"),
    fields=(
        FieldSpec("readings", "int", "readings", "Readings received in the interval."),
        FieldSpec("silent_s", "float", "s", "Seconds since its last reading arrived."),
        FieldSpec("dead", "int", "0/1", "1 when silent for the dead threshold."),
        FieldSpec("stuck_on", "int", "0/1", "1 when occupancy is pinned high."),
        FieldSpec("stuck_off", "int", "0/1",
                  "1 when it counts nothing while the intersection's others count."),
    ),
    description=("Each field detector of the intersections a worker owns, every health "
                 "interval (the device tag is bounded by the site file)."),
)

TIMING_RECOMMENDATIONS = Measurement(
    name="timing_recommendations",
    tags=("site", "intersection", "status", "mode"),
    fields=(
        FieldSpec("cycle_s", "float", "s", "Recommended cycle (the running one on fallback)."),
        FieldSpec("offset_s", "float", "s", "Recommended offset."),
        FieldSpec("running_cycle_s", "float", "s", "Cycle of the plan running when made."),
        FieldSpec("expected_delay_s", "float", "s/pcu", "Expected mean delay, recommended."),
        FieldSpec("running_delay_s", "float", "s/pcu", "Expected mean delay, running plan."),
        FieldSpec("max_degree_of_saturation", "float", "", "Highest approach DS, recommended."),
        FieldSpec("running_max_degree_of_saturation", "float", "",
                  "Highest approach DS, running plan."),
        FieldSpec("reasons", "string", "", "Why, in words, separated by ' | '."),
        FieldSpec("latitude", "float", "deg", "The intersection's position, for maps."),
        FieldSpec("longitude", "float", "deg", "The intersection's position, for maps."),
    ),
    description=("One point per recommendation (status recommended or fallback); "
                 "time = when it was made."),
)

TIMING_PHASES = Measurement(
    name="timing_phases",
    tags=("site", "intersection", "phase"),
    fields=(
        FieldSpec("green_s", "float", "s", "Recommended green."),
        FieldSpec("running_green_s", "float", "s", "Green of the running plan."),
        FieldSpec("flow_ratio", "float", "", "Critical flow ratio (q/S of the busiest lane)."),
    ),
    description="Per phase of each recommendation; time = when it was made.",
)

TIMING_APPROACHES = Measurement(
    name="timing_approaches",
    tags=("site", "intersection", "approach"),
    fields=(
        FieldSpec("flow_pcu_per_hour", "float", "pcu/h", "Flow the recommendation used."),
        FieldSpec("degree_of_saturation", "float", "", "DS under the recommended plan."),
        FieldSpec("running_degree_of_saturation", "float", "", "DS under the running plan."),
        FieldSpec("delay_s", "float", "s/pcu", "Expected delay, recommended plan."),
        FieldSpec("running_delay_s", "float", "s/pcu", "Expected delay, running plan."),
    ),
    description="Per approach of each recommendation; time = when it was made.",
)

ALL_MEASUREMENTS = (APPROACH_METRICS, DEAD_LETTERS, PIPELINE_HEALTH, CONSUMER_LAG,
                    CAMERA_HEALTH, DETECTOR_HEALTH, TIMING_RECOMMENDATIONS, TIMING_PHASES,
                    TIMING_APPROACHES)
