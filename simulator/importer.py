"""``simpang scenario import``: any SUMO configuration → a Simpang site file.

Every traffic-light system (tls) of the network becomes an intersection. Its approaches are
the incoming edges of the links it controls (named by the compass direction traffic comes
*from*), its lanes those edges' controlled lanes with the movements their links make, its
phases the green phases of the programme SUMO would run (the one loaded last, as SUMO does),
its plan that programme's timings. Each lane gets an induction loop and each approach a
camera with one counting line per lane.

The site keeps the SUMO ids it was built from (``sumo_tls``, ``sumo_edge``, ``sumo_lane``,
``sumo_state``), so the simulator can drive SUMO from the site file: the site's plan is what
runs, and an engineer can edit it. Where the programme is not usable as a fixed-time plan
(a manually switched one with 10 000 s greens, yellows under the 3 s PKJI minimum) the
importer writes a plan that is, and says so in its warnings.

>>> from simulator.sumo_tools import game_scenario
>>> result = import_sumocfg(game_scenario("cross"), site_id="cross")
>>> [(a.id, len(a.lanes)) for a in result.site.intersections[0].approaches]
[('north', 2), ('east', 3), ('south', 2), ('west', 3)]
>>> result.warnings[0]
"tls '0' programme 'manual': cycle 40024 s is not a fixed-time plan; wrote 30 s greens"
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import sumolib

from simpang.site import (
    Approach,
    Camera,
    CameraView,
    CountingLine,
    GroundCalibration,
    Intersection,
    Lane,
    Movement,
    Phase,
    Plan,
    QueueZone,
    Sensor,
    Simulation,
    Site,
    TurningMovement,
)
from simulator.camera_geometry import PinholeCamera
from simulator.sumo_tools import SumoConfig, SumoError, read_sumocfg

COMPASS = ["north", "northeast", "east", "southeast", "south", "southwest", "west", "northwest"]
COMPASS_ABBREVIATION = {"north": "n", "northeast": "ne", "east": "e", "southeast": "se",
                        "south": "s", "southwest": "sw", "west": "w", "northwest": "nw"}
MOVEMENT_OF_DIRECTION = {"s": "through", "l": "left", "L": "left", "r": "right", "R": "right",
                         "t": "uturn"}
GREEN = frozenset("Gg")
MIN_YELLOW_S = 3.0
"""PKJI practice; SUMO's own default yellow can be shorter."""
DEFAULT_GREEN_S = 30.0
DEFAULT_MIN_GREEN_S = 5.0
DEFAULT_MAX_GREEN_S = 90.0
MAX_CYCLE_S = 300.0
LOOP_DISTANCE_M = 30.0
COUNTING_LINE_UPSTREAM_M = 15.0
JUNCTION_LINE_OFFSET_M = 6.0
"""A junction camera's entry lines lie this far before the stop lines, its exit lines this far
into the departing roads."""
JUNCTION_LINE_OVERHANG_M = 1.5
"""and reach this far past the outer lanes' edges: where a box meets the road (its bottom
middle) is off the vehicle's middle by up to half its width when it crosses the image."""
JUNCTION_CAMERA_VIEW = CameraView(downstream_m=30.0, lateral_m=8.0, height_m=18.0, tilt_deg=35.0,
                                  fov_deg=100.0)
"""A pole 30 m past the stop line, 18 m up, looking back across the junction: on a four-arm
junction it sees its own approach and the two side roads, not the road under it."""
CALIBRATION_DISTANCES_M = (10.0, 20.0, 35.0, 60.0)
QUEUE_ZONE_M = 80.0
METRES_PER_DEGREE_LAT = 111_320.0


@dataclass
class ImportResult:
    site: Site
    warnings: list[str] = field(default_factory=list)


@dataclass
class _ProgramPhase:
    duration_s: float
    state: str
    min_dur_s: float | None
    max_dur_s: float | None


@dataclass
class _Program:
    program_id: str
    offset_s: float
    phases: list[_ProgramPhase]


def slug(text: str) -> str:
    """A SUMO id as a Simpang identifier: ``gneJ10`` stays, ``0/1`` → ``0-1``.

    >>> slug("0/1"), slug(":J#2"), slug("-E1")
    ('0-1', 'J-2', 'E1')
    """
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-._")
    return (cleaned or "x")[:64]


def compass_of(dx: float, dy: float) -> str:
    """Eight-point compass name of a direction (x east, y north).

    >>> compass_of(0, 5), compass_of(-3, -3)
    ('north', 'southwest')
    """
    bearing = math.degrees(math.atan2(dx, dy)) % 360
    return COMPASS[int((bearing + 22.5) // 45) % 8]


def import_sumocfg(
    path: str | Path,
    *,
    site_id: str | None = None,
    site_name: str | None = None,
    origin_lat_lon: tuple[float, float] = (0.0, 0.0),
    timezone: str = "Asia/Makassar",
    site_file_dir: Path | None = None,
) -> ImportResult:
    """Build a site from a SUMO configuration.

    ``origin_lat_lon`` places the network's (0, 0) on the map when the network has no
    geo-reference of its own; ``site_file_dir`` is where the site file will be written, so
    that its ``simulation.sumocfg`` is relative to it.
    """
    config = read_sumocfg(path)
    net = sumolib.net.readNet(str(config.net_file), withPrograms=True)
    programs = _active_programs(config, net)
    junction_names = _junction_names(config.net_file)
    warnings: list[str] = []
    intersections = []
    for tls in sorted(net.getTrafficLights(), key=lambda t: t.getID()):
        program = programs.get(tls.getID())
        if program is None:
            warnings.append(f"tls {tls.getID()!r} has no programme; skipped")
            continue
        intersection = _intersection(
            net, tls, program, junction_names, origin_lat_lon, warnings
        )
        if intersection is not None:
            intersections.append(intersection)
    if not intersections:
        raise SumoError(f"{config.path}: no signalised intersection (traffic light) found")
    stem = config.path.name.removesuffix(".sumocfg")
    base = (site_file_dir or config.path.parent).resolve()
    try:
        sumocfg = str(config.path.relative_to(base))
    except ValueError:
        sumocfg = str(config.path)
    site = Site(
        id=slug(site_id or stem),
        name=site_name or f"SUMO scenario {stem}",
        timezone=timezone,
        intersections=intersections,
        simulation=Simulation(sumocfg=sumocfg),
    )
    return ImportResult(site=site, warnings=warnings)


def _active_programs(config: SumoConfig, net: Any) -> dict[str, _Program]:
    """The programme each tls runs: SUMO activates the one it loaded last."""
    active: dict[str, _Program] = {}
    for tls in net.getTrafficLights():
        for program_id, program in tls.getPrograms().items():
            active[tls.getID()] = _Program(
                program_id=program_id,
                offset_s=float(program.getOffset()),
                phases=[
                    _ProgramPhase(
                        float(p.duration), p.state, _optional(p.minDur), _optional(p.maxDur)
                    )
                    for p in program.getPhases()
                ],
            )
    for additional in config.additional_files:
        if not additional.exists():
            continue
        try:
            root = ET.parse(additional).getroot()
        except ET.ParseError as exc:
            raise SumoError(f"{additional}: not valid XML: {exc}") from None
        for logic in root.iter("tlLogic"):
            active[logic.get("id", "")] = _Program(
                program_id=logic.get("programID", "0"),
                offset_s=float(logic.get("offset", 0)),
                phases=[
                    _ProgramPhase(
                        float(p.get("duration", 0)),
                        p.get("state", ""),
                        _optional(p.get("minDur")),
                        _optional(p.get("maxDur")),
                    )
                    for p in logic.iter("phase")
                ],
            )
    return active


def _optional(value: Any) -> float | None:
    if value is None or value == "" or float(value) < 0:
        return None
    return float(value)


def _junction_names(net_file: Path) -> dict[str, str]:
    names: dict[str, str] = {}
    for _, element in ET.iterparse(net_file):
        if element.tag == "junction" and element.get("name"):
            names[element.get("id", "")] = element.get("name", "")
        if element.tag in ("edge", "junction", "connection"):
            element.clear()
    return names


def _is_vehicle_lane(lane: Any) -> bool:
    return lane.getEdge().getFunction() == "" and any(
        lane.allows(v) for v in ("passenger", "motorcycle", "bus", "truck")
    )


def _intersection(
    net: Any,
    tls: Any,
    program: _Program,
    junction_names: dict[str, str],
    origin_lat_lon: tuple[float, float],
    warnings: list[str],
) -> Intersection | None:
    tls_id = tls.getID()
    links = [(in_lane, out_lane, index) for in_lane, out_lane, index in tls.getConnections()
             if _is_vehicle_lane(in_lane)]
    if not links:
        warnings.append(f"tls {tls_id!r} controls no vehicle lanes; skipped")
        return None
    nodes = {in_lane.getEdge().getToNode() for in_lane, _, _ in links}
    centre = np.mean([node.getCoord()[:2] for node in nodes], axis=0)

    edges = sorted({in_lane.getEdge() for in_lane, _, _ in links}, key=lambda e: e.getID())
    approach_of_edge: dict[str, str] = {}
    used: dict[str, int] = {}
    bearings: dict[str, float] = {}
    for edge in edges:
        upstream = np.array(edge.getShape()[0][:2])
        dx, dy = upstream - centre
        name = compass_of(float(dx), float(dy))
        used[name] = used.get(name, 0) + 1
        approach_id = name if used[name] == 1 else f"{name}-{used[name]}"
        approach_of_edge[edge.getID()] = approach_id
        bearings[approach_id] = math.degrees(math.atan2(dx, dy)) % 360

    movements_of_lane: dict[str, list[str]] = {}
    link_movement: dict[int, tuple[str, str]] = {}
    for in_lane, out_lane, index in links:
        connection = next(
            (c for c in in_lane.getOutgoing() if c.getToLane() == out_lane), None
        )
        direction = connection.getDirection() if connection is not None else "s"
        movement = MOVEMENT_OF_DIRECTION.get(direction, "through")
        lane_movements = movements_of_lane.setdefault(in_lane.getID(), [])
        if movement not in lane_movements:
            lane_movements.append(movement)
        link_movement[index] = (approach_of_edge[in_lane.getEdge().getID()], movement)

    green_phases, plan_warnings = _green_phases(tls_id, program)
    warnings.extend(plan_warnings)
    if not green_phases:
        warnings.append(f"tls {tls_id!r} programme {program.program_id!r} has no green; skipped")
        return None
    intersection_id = slug(tls_id)

    permitted_approaches = {
        link_movement[i][0]
        for phase in green_phases
        for i, signal in enumerate(phase.state)
        if signal == "g" and i in link_movement
    }
    approaches = []
    sensors = []
    cameras = []
    for edge in sorted(edges, key=lambda e: (bearings[approach_of_edge[e.getID()]] + 22.5) % 360):
        approach_id = approach_of_edge[edge.getID()]
        abbreviation = COMPASS_ABBREVIATION[approach_id.split("-")[0]] + (
            approach_id.split("-")[1] if "-" in approach_id else ""
        )
        lanes = []
        for lane in edge.getLanes():
            if lane.getID() not in movements_of_lane:
                continue
            lane_id = f"{abbreviation}{lane.getIndex() + 1}"
            lanes.append(Lane(
                id=lane_id,
                movements=movements_of_lane[lane.getID()],
                width_m=min(max(lane.getWidth(), 2.0), 6.0),
                sumo_lane=lane.getID(),
            ))
            sensors.append(Sensor(
                device_id=f"{intersection_id}-{lane_id}-loop",
                kind="loop",
                approach=approach_id,
                lane=lane_id,
                distance_m=min(LOOP_DISTANCE_M, max(lane.getLength() - 1.0, 0.0)),
            ))
        approaches.append(Approach(
            id=approach_id,
            name=edge.getName() or "",
            lanes=lanes,
            protected=approach_id not in permitted_approaches,
            speed_limit_kmh=round(min(max(edge.getSpeed() * 3.6, 5.0), 130.0), 1),
            sumo_edge=edge.getID(),
        ))
        cameras.append(_camera(intersection_id, approach_id, edge, lanes))

    phases = []
    greens: dict[str, float] = {}
    for number, green in enumerate(green_phases, start=1):
        served = sorted({
            f"{link_movement[i][0]}:{link_movement[i][1]}"
            for i, signal in enumerate(green.state)
            if signal in GREEN and i in link_movement
        })
        if not served:
            continue
        phases.append(Phase(
            id=f"p{number}",
            movements=served,
            min_green_s=min(green.min_green_s, green.green_s),
            max_green_s=max(green.max_green_s, green.green_s),
            yellow_s=green.yellow_s,
            all_red_s=green.all_red_s,
            sumo_state=green.state,
        ))
        greens[f"p{number}"] = green.green_s
    lost_s = sum(p.yellow_s + p.all_red_s for p in phases)
    offset_s = green_phases[0].offset_s
    cycle_s = sum(greens.values()) + lost_s
    lat, lon = _lat_lon(net, centre, origin_lat_lon)
    return Intersection(
        id=intersection_id,
        name=next((junction_names[n.getID()] for n in nodes if n.getID() in junction_names),
                  f"Traffic light {tls_id}"),
        lat=lat,
        lon=lon,
        approaches=approaches,
        phases=phases,
        plan=Plan(cycle_s=cycle_s, greens_s=greens, offset_s=offset_s % cycle_s),
        sensors=sensors,
        cameras=cameras,
        sumo_tls=tls_id,
        width_m=_crossing_width_m(nodes, edges),
    )


def _crossing_width_m(nodes: set[Any], edges: list[Any]) -> float:
    """How far traffic travels across the junction: the junction area's extent along each
    approach's direction of travel, the largest over approaches (for all-red times)."""
    points = np.array([xy[:2] for node in nodes for xy in node.getShape()], dtype=float)
    if len(points) < 3:
        points = np.array([node.getCoord()[:2] for node in nodes], dtype=float)
    widest = 0.0
    for edge in edges:
        shape = np.array(edge.getLanes()[0].getShape(), dtype=float)[:, :2]
        travel = shape[-1] - shape[-2]
        travel /= max(float(np.linalg.norm(travel)), 1e-9)
        along = points @ travel
        widest = max(widest, float(along.max() - along.min()))
    return round(min(max(widest, 1.0), 200.0), 1)


@dataclass
class _GreenPhase:
    state: str
    green_s: float
    min_green_s: float
    max_green_s: float
    yellow_s: float = 0.0
    all_red_s: float = 0.0
    offset_s: float = 0.0


def _green_phases(tls_id: str, program: _Program) -> tuple[list[_GreenPhase], list[str]]:
    """Group the programme into green phases and the intergreen that follows each."""
    phases = program.phases
    warnings: list[str] = []
    first_green = next((i for i, p in enumerate(phases) if GREEN & set(p.state)), None)
    if first_green is None:
        return [], warnings
    before_first = sum(p.duration_s for p in phases[:first_green])
    rotated = phases[first_green:] + phases[:first_green]
    greens: list[_GreenPhase] = []
    in_intergreen = False
    for phase in rotated:
        green_links = {i for i, signal in enumerate(phase.state) if signal in GREEN}
        # A link may stay green through an intergreen (an overlap): still intergreen.
        overlap = in_intergreen and green_links <= {
            i for i, signal in enumerate(greens[-1].state) if signal in GREEN
        }
        if green_links and "y" not in phase.state.lower() and not overlap:
            in_intergreen = False
            greens.append(_GreenPhase(
                state=phase.state,
                green_s=phase.duration_s,
                min_green_s=phase.min_dur_s if phase.min_dur_s is not None else min(
                    DEFAULT_MIN_GREEN_S, phase.duration_s),
                max_green_s=phase.max_dur_s if phase.max_dur_s is not None else max(
                    DEFAULT_MAX_GREEN_S, phase.duration_s),
            ))
        elif "y" in phase.state.lower():
            in_intergreen = True
            greens[-1].yellow_s += phase.duration_s
        else:
            greens[-1].all_red_s += phase.duration_s
    greens[0].offset_s = program.offset_s + before_first
    label = f"tls {tls_id!r} programme {program.program_id!r}"
    cycle_s = sum(p.duration_s for p in phases)
    if cycle_s > MAX_CYCLE_S:
        warnings.append(
            f"{label}: cycle {cycle_s:g} s is not a fixed-time plan; wrote "
            f"{DEFAULT_GREEN_S:g} s greens"
        )
        for green in greens:
            green.green_s = DEFAULT_GREEN_S
            green.min_green_s = min(DEFAULT_MIN_GREEN_S, DEFAULT_GREEN_S)
            green.max_green_s = DEFAULT_MAX_GREEN_S
    short = [g for g in greens if g.yellow_s < MIN_YELLOW_S]
    if short:
        warnings.append(
            f"{label}: yellow of {min(g.yellow_s for g in short):g} s raised to the "
            f"{MIN_YELLOW_S:g} s minimum"
        )
        for green in short:
            green.yellow_s = MIN_YELLOW_S
    for green in greens:
        green.all_red_s = min(green.all_red_s, 10.0)
    return greens, warnings


def _lat_lon(
    net: Any, centre: np.ndarray, origin_lat_lon: tuple[float, float]
) -> tuple[float, float]:
    x, y = float(centre[0]), float(centre[1])
    if net.hasGeoProj():
        try:
            lon, lat = net.convertXY2LonLat(x, y)
            return round(float(lat), 6), round(float(lon), 6)
        except Exception:
            pass
    lat0, lon0 = origin_lat_lon
    lat = lat0 + y / METRES_PER_DEGREE_LAT
    lon = lon0 + x / (METRES_PER_DEGREE_LAT * math.cos(math.radians(lat0)))
    return round(max(-90.0, min(90.0, lat)), 6), round(((lon + 180) % 360) - 180, 6)


def approach_frame(edge_lanes: list[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stop-line middle point, travel direction and the arriving driver's right (unit
    vectors) of an approach, from its SUMO lanes' shapes."""
    ends = np.array([lane.getShape()[-1][:2] for lane in edge_lanes])
    befores = np.array([lane.getShape()[-2][:2] for lane in edge_lanes])
    stop_middle = ends.mean(axis=0)
    travel = (ends - befores).mean(axis=0)
    travel = travel / np.linalg.norm(travel)
    right = np.array([travel[1], -travel[0]])
    return stop_middle, travel, right


def camera_model(view: CameraView, stop_middle: np.ndarray, travel: np.ndarray,
                 right: np.ndarray) -> PinholeCamera:
    """The pinhole camera of a :class:`CameraView` placed on an approach."""
    position = stop_middle + travel * view.downstream_m + right * view.lateral_m
    return PinholeCamera(
        position=(float(position[0]), float(position[1]), view.height_m),
        facing=(float(-travel[0]), float(-travel[1])),
        tilt_deg=view.tilt_deg,
        fov_deg=view.fov_deg,
        width_px=view.width_px,
        height_px=view.height_px,
    )


def _camera(intersection_id: str, approach_id: str, edge: Any, lanes: list[Lane]) -> Camera:
    view = CameraView()
    sumo_lanes = {lane.getID(): lane for lane in edge.getLanes()}
    controlled = [sumo_lanes[lane.sumo_lane] for lane in lanes if lane.sumo_lane]
    stop_middle, travel, right = approach_frame(controlled)
    camera = camera_model(view, stop_middle, travel, right)
    counting_lines = []
    for lane, sumo_lane in zip(lanes, controlled, strict=True):
        end = np.array(sumo_lane.getShape()[-1][:2])
        centre = end - travel * COUNTING_LINE_UPSTREAM_M
        half = sumo_lane.getWidth() / 2
        # From the arriving driver's right to their left: arriving traffic crosses "in".
        ends_world = np.array([[*(centre + right * half), 0.0], [*(centre - right * half), 0.0]])
        if not camera.in_front(ends_world).all():
            continue
        start_px, end_px = camera.project(ends_world)
        counting_lines.append(CountingLine(
            id=f"{lane.id}-count",
            start_xy=(round(float(start_px[0]), 1), round(float(start_px[1]), 1)),
            end_xy=(round(float(end_px[0]), 1), round(float(end_px[1]), 1)),
            approach=approach_id,
            lane=lane.id,
            directions="in",
        ))
    calibration, queue_zone = _ground_references(camera, controlled, stop_middle, travel, right)
    return Camera(
        id=f"{intersection_id}-{approach_id}-cam",
        source_url=f"sim://{intersection_id}/{approach_id}",
        approach=approach_id,
        counting_lines=counting_lines,
        view=view,
        calibration=calibration,
        queue_zone=queue_zone,
    )


def junction_camera(net: Any, intersection: Intersection, approach_id: str,
                    view: CameraView = JUNCTION_CAMERA_VIEW) -> Camera:
    """A camera that sees the whole junction, for turning-movement counts: it stands on the
    far side of the junction from ``approach_id`` and looks back across it (``view`` places
    it, as for any camera). It gets an entry line across each approach and an exit line across
    each departing road that it sees whole, and a turning movement for every connection of the
    network between a seen entry and a seen exit (``north-left``: from the north approach,
    turning left).
    """
    approaches = {a.id: a for a in intersection.approaches}
    entry_edges = {a.id: net.getLane(a.lanes[0].sumo_lane).getEdge()
                   for a in intersection.approaches if a.lanes and a.lanes[0].sumo_lane}
    own = [net.getLane(lane.sumo_lane) for lane in approaches[approach_id].lanes
           if lane.sumo_lane]
    stop_middle, travel, right = approach_frame(own)
    pinhole = camera_model(view, stop_middle, travel, right)
    centre = np.mean([edge.getToNode().getCoord()[:2] for edge in entry_edges.values()], axis=0)

    def line_across(lanes: list[Any], at_end: bool) -> tuple[str, Any] | None:
        """The line's arm (compass name) and its image ends, from the driver's right to their
        left so that traffic on these lanes crosses ``in``; None unless wholly in view."""
        points = np.array([lane.getShape()[-1 if at_end else 0][:2] for lane in lanes])
        nexts = np.array([lane.getShape()[-2 if at_end else 1][:2] for lane in lanes])
        heading = (points - nexts if at_end else nexts - points).mean(axis=0)  # of travel
        heading /= np.linalg.norm(heading)
        side = np.array([heading[1], -heading[0]])
        middle = points.mean(axis=0)
        offsets = (points - middle) @ side
        half = max(lane.getWidth() for lane in lanes) / 2 + JUNCTION_LINE_OVERHANG_M
        across = middle + heading * JUNCTION_LINE_OFFSET_M * (-1 if at_end else 1)
        ends = np.array([[*(across + side * (offsets.max() + half)), 0.0],
                         [*(across + side * (offsets.min() - half)), 0.0]])
        if not pinhole.in_front(ends).all():
            return None
        pixels = pinhole.project(ends)
        if not ((pixels >= 0).all() and (pixels <= [view.width_px, view.height_px]).all()):
            return None
        return compass_of(*(middle - centre)), np.round(pixels, 1)

    def counting_line(line_id: str, arm: str, pixels: Any) -> CountingLine:
        return CountingLine(id=line_id, start_xy=(float(pixels[0, 0]), float(pixels[0, 1])),
                            end_xy=(float(pixels[1, 0]), float(pixels[1, 1])),
                            approach=arm if arm in approaches else approach_id,
                            directions="in")

    lines: list[CountingLine] = []
    line_of_edge: dict[str, str] = {}
    for entry_id, edge in entry_edges.items():
        seen = line_across(edge.getLanes(), at_end=True)
        if seen is not None:
            lines.append(counting_line(f"{entry_id}-entry", entry_id, seen[1]))
            line_of_edge[edge.getID()] = lines[-1].id
    node = next(iter(entry_edges.values())).getToNode()
    for edge in sorted(node.getOutgoing(), key=lambda e: e.getID()):
        vehicle_lanes = [lane for lane in edge.getLanes() if _is_vehicle_lane(lane)]
        seen = line_across(vehicle_lanes, at_end=False) if vehicle_lanes else None
        if seen is not None and f"{seen[0]}-exit" not in {line.id for line in lines}:
            lines.append(counting_line(f"{seen[0]}-exit", seen[0], seen[1]))
            line_of_edge[edge.getID()] = lines[-1].id
    movements: dict[tuple[str, str], TurningMovement] = {}
    for entry_id, edge in entry_edges.items():
        from_line = line_of_edge.get(edge.getID())
        for connection in (c for lane in edge.getLanes() for c in lane.getOutgoing()):
            to_line = line_of_edge.get(connection.getTo().getID())
            if from_line is not None and to_line is not None:
                kind = Movement(MOVEMENT_OF_DIRECTION.get(connection.getDirection(), "through"))
                movements.setdefault((from_line, to_line), TurningMovement(
                    id=f"{entry_id}-{kind.value}", from_line=from_line, to_line=to_line,
                    movement=kind))
    return Camera(
        id=f"{intersection.id}-junction-cam",
        source_url=f"sim://{intersection.id}/junction",
        approach=approach_id,
        counting_lines=lines,
        view=view,
        turning_movements=sorted(movements.values(), key=lambda m: m.id),
    )


def _ground_references(camera: PinholeCamera, lanes: list[Any], stop_middle: np.ndarray,
                       travel: np.ndarray, right: np.ndarray
                       ) -> tuple[GroundCalibration | None, QueueZone | None]:
    """Exact calibration points (road corners of the approach at several distances, in
    network metres) and the queue zone (stop line back to :data:`QUEUE_ZONE_M`) of a
    virtual camera."""
    offsets = [float((np.array(lane.getShape()[-1][:2]) - stop_middle) @ right)
               for lane in lanes]
    halves = [lane.getWidth() / 2 for lane in lanes]
    right_edge = max(o + h for o, h in zip(offsets, halves, strict=True))
    left_edge = min(o - h for o, h in zip(offsets, halves, strict=True))
    width, height = camera.width_px, camera.height_px
    image_xy, ground_xy = [], []
    for upstream in CALIBRATION_DISTANCES_M:
        for lateral in (right_edge, left_edge):
            point = stop_middle - travel * upstream + right * lateral
            world = np.array([[*point, 0.0]])
            if not camera.in_front(world).all():
                continue
            u, v = camera.project(world)[0]
            if 0 <= u <= width and 0 <= v <= height:
                image_xy.append((round(float(u), 2), round(float(v), 2)))
                ground_xy.append((round(float(point[0]), 3), round(float(point[1]), 3)))
    if len(image_xy) < 4:
        return None, None
    calibration = GroundCalibration(image_xy=image_xy, ground_xy_m=ground_xy)
    corners = [stop_middle + right * right_edge, stop_middle + right * left_edge,
               stop_middle - travel * QUEUE_ZONE_M + right * left_edge,
               stop_middle - travel * QUEUE_ZONE_M + right * right_edge]
    polygon = camera.clip_polygon(np.array([[*c, 0.0] for c in corners]))
    stop_line = np.array([[*corners[0], 0.0], [*corners[1], 0.0]])
    if len(polygon) < 3 or not camera.in_front(stop_line).all():
        return calibration, None
    stop_px = camera.project(stop_line)
    return calibration, QueueZone(
        polygon_xy=[(round(float(u), 1), round(float(v), 1)) for u, v in polygon],
        stop_line_xy=((round(float(stop_px[0, 0]), 1), round(float(stop_px[0, 1]), 1)),
                      (round(float(stop_px[1, 0]), 1), round(float(stop_px[1, 1]), 1))),
    )


def site_to_yaml(site: Site) -> str:
    """The site as YAML, in the order a person reads it."""
    import yaml

    data = site.model_dump(mode="json", exclude_none=True)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)
