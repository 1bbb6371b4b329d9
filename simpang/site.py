"""The site model: site → intersections → approaches → lanes, phases, the running plan,
sensors and cameras. Pure: parsing a file lives in :mod:`simpang.site_file`.

Identifiers are short slugs (``smd-lembuswana``, ``north``, ``n1``) because they become
Kafka keys and InfluxDB tag values.

>>> site = Site.model_validate({
...     "id": "demo", "name": "Demo",
...     "intersections": [{
...         "id": "x1", "name": "Example", "lat": -0.5, "lon": 117.1,
...         "approaches": [{"id": "north", "lanes": [{"id": "n1", "movements": ["through"]}]}],
...         "phases": [{"id": "p1", "movements": ["north:through"], "min_green_s": 10,
...                     "max_green_s": 60, "yellow_s": 3, "all_red_s": 2}],
...         "plan": {"cycle_s": 40, "greens_s": {"p1": 35}, "offset_s": 0},
...         "sensors": [{"device_id": "loop-1", "kind": "loop", "approach": "north",
...                      "lane": "n1"}]}]})
>>> site.sensor_locations()["loop-1"].lane
'n1'
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from simpang.vehicles import PcuFactors

Slug = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]


class Movement(StrEnum):
    THROUGH = "through"
    LEFT = "left"
    RIGHT = "right"
    UTURN = "uturn"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Lane(_Model):
    id: Slug
    movements: list[Movement] = Field(min_length=1)
    width_m: float = Field(3.0, gt=1.5, le=6.0)
    saturation_flow_pcu_per_hour: float | None = Field(
        None, gt=0, le=3000, description="Measured saturation flow; overrides the PKJI estimate."
    )
    sumo_lane: str | None = Field(None, description="The SUMO lane this lane is, when simulated.")


class Approach(_Model):
    id: Slug
    name: str = ""
    lanes: list[Lane] = Field(min_length=1)
    protected: bool = Field(True, description="Protected (no opposing flow) in its phase.")
    speed_limit_kmh: float = Field(40.0, gt=0, le=130)
    grade_pct: float = Field(0.0, ge=-10, le=10, description="Uphill positive, to the stop line.")
    sumo_edge: str | None = Field(None, description="The SUMO edge of this approach, if simulated.")

    @model_validator(mode="after")
    def _unique_lanes(self) -> Approach:
        _require_unique([lane.id for lane in self.lanes], "lane id")
        return self


class Phase(_Model):
    id: Slug
    movements: list[str] = Field(min_length=1, description='Movements served, "approach:movement".')
    min_green_s: float = Field(gt=0)
    max_green_s: float = Field(gt=0)
    yellow_s: float = Field(3.0, ge=3.0, le=6.0)
    all_red_s: float = Field(2.0, ge=0.0, le=10.0)
    pedestrian_walk_s: float = Field(0.0, ge=0)
    pedestrian_clearance_s: float = Field(0.0, ge=0)
    pedestrian_crossing_m: float | None = Field(
        None, gt=0, le=80, description="Longest crosswalk walked in this phase.")
    sumo_state: str | None = Field(
        None,
        pattern=r"^[rRgGyYuoOs]+$",
        description="SUMO signal state string of this phase's green (one letter per link).",
    )

    @model_validator(mode="after")
    def _green_bounds(self) -> Phase:
        if self.max_green_s < self.min_green_s:
            raise ValueError("max_green_s is below min_green_s")
        return self


class TimingLimits(_Model):
    """Guardrails every timing recommendation for an intersection obeys."""

    min_cycle_s: float = Field(40.0, ge=20, le=300)
    max_cycle_s: float = Field(150.0, ge=20, le=300)
    max_cycle_change_s: float = Field(
        20.0, gt=0, description="Largest cycle change from the running plan in one step.")
    max_green_change_s: float = Field(
        10.0, gt=0, description="Largest change of one green from the running plan in one step.")
    pedestrian_speed_mps: float = Field(
        1.2, ge=1.0, le=1.2, description="Walking speed for clearance times (1.0 near schools).")

    @model_validator(mode="after")
    def _cycle_bounds(self) -> TimingLimits:
        if self.max_cycle_s < self.min_cycle_s:
            raise ValueError("max_cycle_s is below min_cycle_s")
        return self


class SaturationConditions(_Model):
    """Site conditions of PKJI 2023's saturation flow adjustments (see
    :mod:`simpang.timing`)."""

    city_population_millions: float = Field(
        0.9, gt=0, description="Samarinda and Balikpapan: between 0.5 and 1 million.")
    environment: Literal["commercial", "residential", "restricted_access"] = "commercial"
    side_friction: Literal["low", "medium", "high"] = "medium"


class Plan(_Model):
    """A fixed-time plan: green per phase; the cycle is greens plus each phase's intergreen."""

    cycle_s: float = Field(gt=0, le=300)
    greens_s: dict[str, float]
    offset_s: float = Field(0.0, ge=0)


class Sensor(_Model):
    """A field device on one lane.

    In simulation a ``loop`` is an induction loop (SUMO E1) whose upstream edge is
    ``distance_m`` before the stop line; a ``radar`` watches a zone (SUMO E2) of
    ``zone_length_m`` ending ``distance_m`` before the stop line.
    """

    device_id: Slug
    kind: Literal["loop", "radar", "counter"]
    approach: Slug
    lane: Slug
    distance_m: float = Field(30.0, ge=0, le=1000, description="Upstream of the stop line.")
    zone_length_m: float = Field(20.0, gt=0, le=300, description="Radar zone length.")


class CountingLine(_Model):
    """A line on the image, in pixels. Vehicles crossing it from its left to its right, as
    seen on the image looking from ``start_xy`` to ``end_xy``, count as ``in``."""

    id: Slug
    start_xy: tuple[float, float]
    end_xy: tuple[float, float]
    approach: Slug
    lane: Slug | None = None
    directions: Literal["in", "out", "both"] = Field(
        "both", description="Directions that count; a line across a one-way lane: in.")


class CameraView(_Model):
    """Where a camera stands and looks, for the simulator's virtual camera.

    The camera faces oncoming traffic of its approach: it stands ``downstream_m`` past the
    middle of the stop line (on the far side of it) and ``lateral_m`` to the right of the
    approach's centre line as seen by arriving drivers, ``height_m`` above the road, tilted
    ``tilt_deg`` below the horizon.
    """

    downstream_m: float = Field(4.0, ge=-50, le=100)
    lateral_m: float = Field(0.0, ge=-30, le=30)
    height_m: float = Field(7.0, gt=1, le=60)
    tilt_deg: float = Field(22.0, gt=0, lt=90)
    fov_deg: float = Field(64.0, gt=10, lt=150, description="Horizontal field of view.")
    width_px: int = Field(640, ge=64, le=7680)
    height_px: int = Field(360, ge=64, le=4320)
    fps: float = Field(10.0, gt=0, le=60)


class GroundCalibration(_Model):
    """Four or more image points (pixels) and where they are on the road (metres, any planar
    frame): the camera's image ↔ ground homography, for speeds and queue lengths."""

    image_xy: list[tuple[float, float]] = Field(min_length=4)
    ground_xy_m: list[tuple[float, float]] = Field(min_length=4)

    @model_validator(mode="after")
    def _paired(self) -> GroundCalibration:
        if len(self.image_xy) != len(self.ground_xy_m):
            raise ValueError(f"{len(self.image_xy)} image points but "
                             f"{len(self.ground_xy_m)} ground points: they go in pairs")
        return self


class QueueZone(_Model):
    """The part of the image where an approach's queue stands (a polygon in pixels) and its
    stop line (two image points): queue length is measured back from the stop line."""

    polygon_xy: list[tuple[float, float]] = Field(min_length=3)
    stop_line_xy: tuple[tuple[float, float], tuple[float, float]]


class TurningMovement(_Model):
    """A named movement: a track that crosses ``from_line`` and later ``to_line``."""

    id: Slug
    from_line: Slug
    to_line: Slug
    movement: Movement | None = None


class Camera(_Model):
    """A camera on one approach. Counting lines, the queue zone and the calibration's image
    points are in image pixels of ``view``'s size."""

    id: Slug
    source_url: str
    approach: Slug
    counting_lines: list[CountingLine] = Field(default_factory=list)
    view: CameraView = Field(default_factory=CameraView)
    calibration: GroundCalibration | None = None
    queue_zone: QueueZone | None = None
    turning_movements: list[TurningMovement] = Field(default_factory=list)

    @model_validator(mode="after")
    def _movements_use_lines(self) -> Camera:
        lines = {line.id for line in self.counting_lines}
        for movement in self.turning_movements:
            for line in (movement.from_line, movement.to_line):
                if line not in lines:
                    raise ValueError(f"turning movement {movement.id!r}: camera {self.id!r} "
                                     f"has no counting line {line!r}")
        if self.queue_zone is not None and self.calibration is None:
            raise ValueError(f"camera {self.id!r}: a queue zone needs a calibration "
                             "(queue length is in metres)")
        return self


class Intersection(_Model):
    id: Slug
    name: str
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    approaches: list[Approach] = Field(min_length=1)
    phases: list[Phase] = Field(min_length=1)
    plan: Plan
    sensors: list[Sensor] = Field(default_factory=list)
    cameras: list[Camera] = Field(default_factory=list)
    sumo_tls: str | None = Field(None, description="The SUMO traffic light system, if simulated.")
    width_m: float | None = Field(
        None, gt=0, le=200,
        description="Stop line to the far side of the last conflicting lane, for all-red times; "
                    "estimated from the lanes when not given.")
    timing: TimingLimits = Field(default_factory=TimingLimits)
    saturation: SaturationConditions = Field(default_factory=SaturationConditions)

    @model_validator(mode="after")
    def _references(self) -> Intersection:
        _require_unique([a.id for a in self.approaches], "approach id")
        _require_unique([p.id for p in self.phases], "phase id")
        lanes = {a.id: {lane.id: lane for lane in a.lanes} for a in self.approaches}
        for phase in self.phases:
            for ref in phase.movements:
                approach, _, movement = ref.partition(":")
                if approach not in lanes:
                    raise ValueError(f"phase {phase.id!r} serves unknown approach {approach!r}")
                served = {m for lane in lanes[approach].values() for m in lane.movements}
                if movement not in served:
                    raise ValueError(
                        f"phase {phase.id!r}: approach {approach!r} has no {movement!r} lane"
                    )
        states = {len(p.sumo_state) for p in self.phases if p.sumo_state is not None}
        if len(states) > 1:
            raise ValueError("phases' sumo_state strings differ in length (links of one tls)")
        if self.sumo_tls is not None and any(p.sumo_state is None for p in self.phases):
            raise ValueError(f"sumo_tls {self.sumo_tls!r} is set: every phase needs a sumo_state")
        phase_ids = {p.id for p in self.phases}
        if set(self.plan.greens_s) != phase_ids:
            raise ValueError(
                f"plan greens_s must name every phase exactly: got {sorted(self.plan.greens_s)}, "
                f"phases are {sorted(phase_ids)}"
            )
        for phase in self.phases:
            green = self.plan.greens_s[phase.id]
            if not phase.min_green_s <= green <= phase.max_green_s:
                raise ValueError(
                    f"plan green {green} s for phase {phase.id!r} is outside "
                    f"[{phase.min_green_s}, {phase.max_green_s}]"
                )
        lost_s = sum(p.yellow_s + p.all_red_s for p in self.phases)
        expected_cycle = sum(self.plan.greens_s.values()) + lost_s
        if abs(expected_cycle - self.plan.cycle_s) > 0.5:
            raise ValueError(
                f"plan cycle_s {self.plan.cycle_s} differs from greens + yellow + all-red "
                f"= {expected_cycle}"
            )
        shortest_cycle = sum(max(p.min_green_s, p.pedestrian_walk_s + p.pedestrian_clearance_s)
                             for p in self.phases) + lost_s
        if shortest_cycle > self.timing.max_cycle_s:
            raise ValueError(
                f"minimum greens and intergreens need a {shortest_cycle} s cycle, above "
                f"timing.max_cycle_s {self.timing.max_cycle_s}")
        for sensor in self.sensors:
            if sensor.lane not in lanes.get(sensor.approach, {}):
                raise ValueError(
                    f"sensor {sensor.device_id!r} names unknown lane "
                    f"{sensor.approach!r}/{sensor.lane!r}"
                )
        for camera in self.cameras:
            if camera.approach not in lanes:
                raise ValueError(f"camera {camera.id!r} names unknown approach {camera.approach!r}")
            for line in camera.counting_lines:
                if line.approach not in lanes or (
                    line.lane is not None and line.lane not in lanes[line.approach]
                ):
                    where = f"{line.approach!r}" + (f"/{line.lane!r}" if line.lane else "")
                    raise ValueError(
                        f"camera {camera.id!r} counting line {line.id!r} names unknown {where}"
                    )
        return self

    def approach(self, approach_id: str) -> Approach:
        for approach in self.approaches:
            if approach.id == approach_id:
                return approach
        raise KeyError(approach_id)

    def estimated_width_m(self) -> float:
        """:attr:`width_m`, or, when not given, twice the widest approach (its entry lanes and
        as many exit lanes) plus a 2 m median: a conservative guess for all-red times."""
        if self.width_m is not None:
            return self.width_m
        return 2 * max(sum(lane.width_m for lane in a.lanes) for a in self.approaches) + 2.0


class SensorLocation(_Model):
    intersection: str
    approach: str
    lane: str
    kind: Literal["loop", "radar", "counter"]


class CorridorMember(_Model):
    """One coordinated intersection of a corridor."""

    intersection: Slug
    position_m: float = Field(ge=0, description=(
        "Distance along the corridor from its first intersection, in metres."))
    outbound_phase: Slug = Field(description=(
        "The phase that gives the outbound direction (first → last intersection) its green."))
    inbound_phase: Slug | None = Field(None, description=(
        "The phase that gives the inbound direction its green; the outbound one by default."))


class Corridor(_Model):
    """Intersections on one arterial run as a green wave: a common cycle and offsets that
    maximise the green band at the progression speed (see :mod:`simpang.corridor`)."""

    id: Slug
    name: str = ""
    speed_kmh: float = Field(40.0, gt=0, le=100, description="Progression speed.")
    inbound_weight: float = Field(1.0, ge=0, le=10, description=(
        "Weight of the inbound band against the outbound one (0: one-way progression)."))
    members: list[CorridorMember] = Field(min_length=2)


class Simulation(_Model):
    """The SUMO scenario a site was imported from (see ``simpang scenario import``)."""

    sumocfg: str = Field(description="SUMO configuration, relative to the site file.")
    begin_s: float | None = Field(
        None, ge=0, description="Simulated second to start at; the configuration's by default."
    )


class Site(_Model):
    id: Slug
    name: str
    timezone: str = Field("Asia/Makassar", description="IANA time zone of the site.")
    pcu_factors: PcuFactors = Field(default_factory=PcuFactors)
    intersections: list[Intersection] = Field(min_length=1)
    corridors: list[Corridor] = Field(default_factory=list)
    simulation: Simulation | None = None

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {value!r} (e.g. Asia/Makassar)") from None
        return value

    @model_validator(mode="after")
    def _unique_ids(self) -> Site:
        _require_unique([i.id for i in self.intersections], "intersection id")
        _require_unique(
            [s.device_id for i in self.intersections for s in i.sensors], "sensor device_id"
        )
        _require_unique([c.id for i in self.intersections for c in i.cameras], "camera id")
        _require_unique([c.id for c in self.corridors], "corridor id")
        _require_unique([m.intersection for c in self.corridors for m in c.members],
                        "corridor member (an intersection runs in one corridor at most)")
        phases = {i.id: {p.id for p in i.phases} for i in self.intersections}
        for corridor in self.corridors:
            for member in corridor.members:
                if member.intersection not in phases:
                    raise ValueError(f"corridor {corridor.id!r} names unknown intersection "
                                     f"{member.intersection!r}")
                for phase in (member.outbound_phase, member.inbound_phase):
                    if phase is not None and phase not in phases[member.intersection]:
                        raise ValueError(f"corridor {corridor.id!r}: {member.intersection!r} "
                                         f"has no phase {phase!r}")
        return self

    def corridor_of(self, intersection_id: str) -> Corridor | None:
        return next((c for c in self.corridors
                     if any(m.intersection == intersection_id for m in c.members)), None)

    def intersection(self, intersection_id: str) -> Intersection:
        for intersection in self.intersections:
            if intersection.id == intersection_id:
                return intersection
        raise KeyError(intersection_id)

    def sensor_locations(self) -> dict[str, SensorLocation]:
        """Device id → where it measures."""
        return {
            sensor.device_id: SensorLocation(
                intersection=i.id, approach=sensor.approach, lane=sensor.lane, kind=sensor.kind
            )
            for i in self.intersections
            for sensor in i.sensors
        }

    def approach_protection(self) -> dict[tuple[str, str], bool]:
        """(intersection, approach) → protected, for the motorcycle PCU factor."""
        return {(i.id, a.id): a.protected for i in self.intersections for a in i.approaches}


def _require_unique(ids: list[str], what: str) -> None:
    seen: set[str] = set()
    for item in ids:
        if item in seen:
            raise ValueError(f"duplicate {what} {item!r}")
        seen.add(item)
