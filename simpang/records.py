"""Records that travel on Simpang's topics. Versioned (``v``) and validated with pydantic.

Wire format is JSON. ``SensorReading`` is what field devices, emulators and the simulator
send; everything else is produced by Simpang's own agents.

>>> r = SensorReading.model_validate_json(
...     '{"device_id": "loop-1", "kind": "loop", "ts": "2026-11-24T07:01:00+08:00",'
...     ' "interval_s": 60, "counts": {"motorcycle": 12, "car": 5}, "occupancy_pct": 14.5}')
>>> r.total_count()
17
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from simpang.vehicles import VehicleClass

RAW_PAYLOAD_CAP_BYTES = 16 * 1024
"""Dead letters keep at most this much of the rejected payload."""

DeviceId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")]


class SensorReading(BaseModel):
    """One measurement interval of a field device, labelled by the interval's end.

    ``counts`` (by class) and/or ``count`` (total) may be given; when both are, they must
    agree. ``intersection``/``approach``/``lane`` are optional: the site file knows where a
    device is, and a reading that names a different place is rejected.
    """

    # Strict counts: JSON true is not 1; NaN and infinity are refused with a clear message.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    v: Literal[1] = 1
    device_id: DeviceId
    kind: Literal["loop", "radar", "counter"]
    ts: AwareDatetime
    interval_s: float = Field(gt=0, le=3600)
    count: int | None = Field(None, ge=0, le=100_000, strict=True)
    counts: dict[VehicleClass, Annotated[int, Field(ge=0, le=100_000, strict=True)]] | None = None
    occupancy_pct: float | None = Field(None, ge=0, le=100)
    speed_kmh: float | None = Field(None, ge=0, le=250)
    intersection: str | None = None
    approach: str | None = None
    lane: str | None = None
    seq: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> SensorReading:
        if self.count is None and self.counts is None and self.occupancy_pct is None and (
            self.speed_kmh is None
        ):
            raise ValueError(
                "a reading needs at least one of count, counts, occupancy_pct, speed_kmh"
            )
        if self.count is not None and self.counts is not None and self.count != sum(
            self.counts.values()
        ):
            raise ValueError(
                f"count {self.count} differs from the sum of counts {sum(self.counts.values())}"
            )
        return self

    def total_count(self) -> int | None:
        if self.counts is not None:
            return sum(self.counts.values())
        return self.count

    def class_counts(self) -> dict[VehicleClass, int]:
        """Counts by class; a total without classes is ``unclassified``."""
        if self.counts is not None:
            return {cls: n for cls, n in self.counts.items() if n}
        if self.count:
            return {VehicleClass.UNCLASSIFIED: self.count}
        return {}


class NormalisedReading(BaseModel):
    """A validated reading resolved to its lane, as the metrics agent consumes it."""

    intersection: str
    approach: str
    lane: str
    device_id: str
    ts_ms: int
    interval_s: float
    counts: dict[VehicleClass, int]
    occupancy_pct: float | None = None
    speed_kmh: float | None = None
    source: Literal["field", "camera"] = Field(
        "field", description="Field devices (loops, radar, counters) or camera counting.")
    seq: int | None = Field(None, description=(
        "The device's sequence number, when it sent one: a window counts each (device, seq) "
        "once, however many times and by whatever path it arrives."))


class PlanReport(BaseModel):
    """The plan a signal controller says it is running now; the timing agent takes it as the
    running plan of its intersection (instead of assuming its last recommendation was
    adopted).

    >>> PlanReport.model_validate_json(
    ...     '{"device_id": "tsc-1", "intersection": "x1", "ts": "2026-11-24T07:00:00+08:00",'
    ...     ' "cycle_s": 90, "greens_s": {"ns": 40, "ew": 40}}').offset_s
    0.0
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    v: Literal[1] = 1
    device_id: DeviceId
    intersection: str
    ts: AwareDatetime = Field(description="When the controller started running it.")
    cycle_s: float = Field(gt=0, le=300)
    greens_s: dict[str, Annotated[float, Field(gt=0, le=300)]]
    offset_s: float = Field(0.0, ge=0)
    program: str | None = Field(None, description="The controller's own name for the plan.")


class ReadingsBatch(BaseModel):
    """Normalised readings of one intersection from one source message.

    ``source_partition``/``source_offset`` identify the raw message, so a message replayed
    after a crash is recognised and applied only once.
    """

    type: Literal["readings"] = "readings"
    source_partition: int
    source_offset: int
    readings: list[NormalisedReading]
    source_topic: str = Field("", description=(
        "Raw topic when not sensor-readings (camera counts come from camera-frames)."))


class WatermarkTick(BaseModel):
    """Sent by a worker into each partition it owns so that event time keeps moving while
    devices are quiet (see :mod:`simpang.windows`)."""

    type: Literal["tick"] = "tick"
    restart_idle: bool = Field(False, description=(
        "Restart the idle clock here instead of advancing (after the worker held its ticks: "
        "the time held was not idle)."))


MetricsInput: TypeAdapter[ReadingsBatch | WatermarkTick] = TypeAdapter(
    Annotated[ReadingsBatch | WatermarkTick, Field(discriminator="type")]
)


class ApproachMetrics(BaseModel):
    """Aggregates of one window for one lane, or for a whole approach when ``lane`` is None."""

    v: Literal[1] = 1
    site: str
    intersection: str
    approach: str
    lane: str | None
    source: Literal["field", "camera"] = "field"
    window: str
    window_start: datetime
    window_end: datetime
    counts: dict[VehicleClass, int]
    flow_veh_per_hour: float
    flow_pcu_per_hour: float
    occupancy_pct: float | None
    mean_speed_kmh: float | None
    readings: int


class ApproachAssessment(BaseModel):
    """One approach under one plan: the measured flow and what the plan makes of it."""

    flow_pcu_per_hour: float
    degree_of_saturation: float
    delay_s: float = Field(description="Expected mean delay per PCU (PKJI).")


class TimingRecommendation(BaseModel):
    """A plan for one intersection with its reasons and inputs.

    ``status``: ``recommended`` (a new plan, validated), ``fallback`` (the running plan kept:
    data stale, missing, or the new plan failed the safety check; ``reasons`` say which).
    """

    v: Literal[1] = 1
    site: str
    intersection: str
    ts: AwareDatetime
    mode: Literal["plan", "adaptive"] = "plan"
    status: Literal["recommended", "fallback"]
    cycle_s: float
    greens_s: dict[str, float]
    offset_s: float
    running_cycle_s: float
    running_greens_s: dict[str, float]
    expected_delay_s: float = Field(description="Expected mean delay per PCU under this plan.")
    running_delay_s: float = Field(description="Expected delay per PCU under the running plan.")
    approaches: dict[str, ApproachAssessment]
    running_approaches: dict[str, ApproachAssessment]
    critical: dict[str, str] = Field(description="Phase → its critical approach.")
    flow_ratios: dict[str, float] = Field(description="Phase → its critical flow ratio.")
    reasons: list[str]
    inputs: dict[str, Any] = Field(description=(
        "What it was computed from: lane flows (PCU/h), saturation flows, the metrics "
        "window and its end, data age."))


METRICS_LIST: TypeAdapter[list[ApproachMetrics]] = TypeAdapter(list[ApproachMetrics])
"""An ``approach-metrics`` message: the rows of one intersection from one window close."""


class RejectReason(StrEnum):
    MALFORMED = "malformed"
    INVALID = "invalid"
    UNSUPPORTED_VERSION = "unsupported_version"
    UNKNOWN_DEVICE = "unknown_device"
    LOCATION_MISMATCH = "location_mismatch"
    FUTURE_TIMESTAMP = "future_timestamp"
    LATE = "late"
    TOO_LARGE = "too_large"
    SINK_REJECTED = "sink_rejected"
    UNAUTHORISED = "unauthorised"
    FORBIDDEN = "forbidden"
    RATE_LIMITED = "rate_limited"


class DeadLetter(BaseModel):
    """A rejected message: where it came from, why, and the raw payload (capped)."""

    v: Literal[1] = 1
    id: str = Field(description="Deterministic id, e.g. topic:partition:offset:index.")
    source: str
    reason_code: RejectReason
    reason: str
    raw: str
    raw_truncated: bool = False
    device_id: str | None = None
    ts: datetime

    @classmethod
    def of(
        cls,
        *,
        id: str,
        source: str,
        reason_code: RejectReason,
        reason: str,
        raw: bytes | str,
        device_id: str | None = None,
        ts: datetime | None = None,
    ) -> DeadLetter:
        raw_bytes = raw.encode() if isinstance(raw, str) else raw
        kept = raw_bytes[:RAW_PAYLOAD_CAP_BYTES]
        return cls(
            id=id,
            source=source,
            reason_code=reason_code,
            reason=reason,
            raw=kept.decode("utf-8", errors="backslashreplace"),
            raw_truncated=len(raw_bytes) > RAW_PAYLOAD_CAP_BYTES,
            device_id=device_id,
            ts=ts or datetime.now(UTC),
        )


class VehicleCrossing(BaseModel):
    """A tracked vehicle crossing a camera's counting line (``vehicle-crossings``)."""

    v: Literal[1] = 1
    camera_id: str
    intersection: str
    approach: str
    lane: str | None
    line_id: str
    track_id: int
    vehicle_class: VehicleClass
    direction: Literal["in", "out"]
    ts: datetime
    speed_kmh: float | None = None


class CameraHealth(BaseModel):
    """One camera's processing health over the last health interval."""

    v: Literal[1] = 1
    camera_id: str
    worker: str
    ts: datetime
    frames: int = Field(description="Frames processed in the interval.")
    fps: float
    inference_ms: float | None = Field(description="Mean detector time per frame.")
    lag_s: float | None = Field(description="Now minus the newest frame's capture time.")
    frozen: bool = Field(description="The picture has not changed for the frozen threshold.")
    rejected: int = Field(description="Frames rejected (dead letters) in the interval.")
    queue_vehicles: int | None = None
    queue_length_m: float | None = None
    intersection: str | None = Field(None, description="Where the camera stands.")


class DetectorHealth(BaseModel):
    """One field detector's diagnostics at one moment (see :mod:`simpang.detector_health`)."""

    v: Literal[1] = 1
    site: str
    intersection: str
    approach: str
    lane: str
    device_id: str
    kind: str
    worker: str
    ts: datetime
    readings: int = Field(description="Readings received since the previous sample.")
    silent_s: float = Field(description="Wall-clock seconds since its last reading arrived.")
    last_reading_ts: datetime | None = Field(description="End of its latest interval.")
    dead: bool = Field(description="Silent for the dead threshold or longer.")
    stuck_on: bool = Field(description="Occupancy pinned high for the stuck threshold.")
    stuck_off: bool = Field(description="No vehicles while the intersection's others counted.")


class HealthSample(BaseModel):
    """One worker's pipeline health at one moment; counters are totals since it started."""

    v: Literal[1] = 1
    worker: str
    ts: datetime
    started_at: datetime
    readings_in: int
    readings_accepted: int
    dead_letters: int
    readings_windowed: int
    readings_resent: int = Field(0, description=(
        "Readings the windows left out as re-sends of a (device, seq) they had counted."))
    metrics_emitted: int
    points_written: int
    metric_points_written: int
    sink_write_errors: int
    consumer_lag: dict[str, int] = Field(description='"topic:partition" → messages behind.')
    ingest_position: dict[str, int] = Field(
        default_factory=dict,
        description='"topic:partition" of sensor readings → next offset the ingest agent will '
                    "handle: its progress now (consumer_lag counts from the last commit).")
    http_requests: int = 0
    http_readings_in: int = 0
    http_readings_accepted: int = 0
    http_duplicates: int = 0
