"""Virtual cameras: perspective frames of an approach rendered from SUMO vehicle positions,
with ground truth (boxes, classes, track ids, visibility, counting-line crossings).

Each camera of a simulated site looks at its approach as its :class:`~simpang.site.CameraView`
says. The road (lanes, junction area, lane markings, stop lines) comes from the SUMO network
and is drawn once per lighting; vehicles are boxes of their class's size and a per-vehicle
colour, drawn far to near (a bicycle: two thin wheels and a frame under a box for its
rider; a bus: a deep windscreen, windows along its sides and an air-conditioning unit on its
roof; a truck: a cab and, behind a dark gap, a cargo box of its own colour — a bus of
12 × 2.5 × 3.2 m and a truck of 9 × 2.4 × 3.0 m are otherwise nearly the same box).
Conditions: day, dusk, night (headlights, tail lights), rain (streaks, darker, softer), with
sensor noise, blur and JPEG compression.

Ground truth is geometric, not learnt: a box is the image extent of the vehicle's 3-D box;
``visibility`` is the share of it not hidden by nearer vehicles; a crossing is the middle of
the vehicle's front passing the counting line's footprint on the road between two simulation
steps (when a loop would detect it, and where an approach camera sees the bottom of its box).
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import sumolib
from numpy.typing import NDArray

from simpang.site import Camera, Intersection, Site
from simpang.vehicles import VehicleClass
from simulator.camera_geometry import PinholeCamera, segments_cross
from simulator.importer import approach_frame, camera_model
from simulator.stream_io import StreamMessage
from simulator.sumo_run import SumoRun, VehicleState
from simulator.sumo_tools import read_sumocfg

LIGHTINGS = ("day", "dusk", "night")
VIEW_RANGE_M = 220.0
CLASS_INDEX = {c: i for i, c in enumerate([VehicleClass.MOTORCYCLE, VehicleClass.CAR,
                                           VehicleClass.BUS, VehicleClass.TRUCK,
                                           VehicleClass.BICYCLE])}
"""Label index of each class in the YOLO-format labels (``classes.txt`` lists them)."""

BODY_COLOURS_BGR = np.array([
    [235, 235, 235], [30, 30, 30], [160, 160, 160], [40, 40, 170], [150, 80, 20],
    [30, 120, 30], [200, 200, 60], [60, 60, 60], [20, 140, 220], [120, 40, 110],
], dtype=np.float64)
BUS_COLOURS_BGR = np.array([[40, 140, 40], [200, 120, 20], [40, 40, 200]], dtype=np.float64)
# Cargo boxes: white, aluminium, blue canvas, orange.
CARGO_COLOURS_BGR = np.array([[225, 225, 220], [150, 150, 150], [120, 70, 40], [40, 120, 210]],
                             dtype=np.float64)
# Corner indices (box_corners: bottom front-left, front-right, rear-right, rear-left, then the
# top four) of each face, clockwise as seen from outside the box.
_TOP_FACE = [4, 5, 6, 7]
# Side faces as (bottom front, bottom rear, top front, top rear), clockwise order aside.
_SIDES = {"right": ((1, 2, 5, 6), [6, 5, 1, 2]), "left": ((0, 3, 4, 7), [4, 7, 3, 0])}
# The roof in the same form, its left edge as "bottom" and its right edge as "top", so
# _side_patch's ``up`` runs across it.
_ROOF = (4, 7, 5, 6)


@dataclass(frozen=True)
class Conditions:
    lighting: str = "day"
    rain: bool = False
    noise_sigma: float = 3.0
    blur_px: int = 0
    jpeg_quality: int = 85

    def __post_init__(self) -> None:
        if self.lighting not in LIGHTINGS:
            raise ValueError(f"lighting must be one of {LIGHTINGS}, not {self.lighting!r}")

    @classmethod
    def random(cls, rng: np.random.Generator) -> Conditions:
        return cls(
            lighting=str(rng.choice(LIGHTINGS, p=[0.55, 0.2, 0.25])),
            rain=bool(rng.random() < 0.25),
            noise_sigma=float(rng.uniform(1.0, 8.0)),
            blur_px=int(rng.choice([0, 0, 3, 5])),
            jpeg_quality=int(rng.integers(45, 95)),
        )

    def as_dict(self) -> dict[str, Any]:
        return {"lighting": self.lighting, "rain": self.rain,
                "noise_sigma": round(self.noise_sigma, 2), "blur_px": self.blur_px,
                "jpeg_quality": self.jpeg_quality}


@dataclass(frozen=True)
class LabelledBox:
    track_id: int
    vehicle_id: str
    vehicle_class: VehicleClass
    box_xyxy: tuple[float, float, float, float]
    visibility: float
    truncated: bool
    distance_m: float

    def as_dict(self) -> dict[str, Any]:
        return {"track_id": self.track_id, "vehicle_id": self.vehicle_id,
                "class": self.vehicle_class.value,
                "box_xyxy": [round(v, 1) for v in self.box_xyxy],
                "visibility": round(self.visibility, 3), "truncated": self.truncated,
                "distance_m": round(self.distance_m, 1)}


@dataclass(frozen=True)
class LineCrossing:
    line_id: str
    track_id: int
    vehicle_id: str
    vehicle_class: VehicleClass
    direction: str
    t_s: float

    def as_dict(self) -> dict[str, Any]:
        return {"line_id": self.line_id, "track_id": self.track_id,
                "vehicle_id": self.vehicle_id, "class": self.vehicle_class.value,
                "direction": self.direction, "t": round(self.t_s, 3)}


def box_corners(vehicles: list[VehicleState]) -> NDArray[np.float64]:
    """(N, 8, 3) world corners of each vehicle's box: bottom four then top four.

    SUMO's position is the front bumper's middle; angle is clockwise from north.
    """
    if not vehicles:
        return np.empty((0, 8, 3))
    front = np.array([[v.x_m, v.y_m] for v in vehicles])
    angle = np.radians([v.angle_deg for v in vehicles])
    heading = np.column_stack([np.sin(angle), np.cos(angle)])
    right = np.column_stack([heading[:, 1], -heading[:, 0]])
    length = np.array([v.length_m for v in vehicles])[:, None]
    half_width = np.array([v.width_m / 2 for v in vehicles])[:, None]
    height = np.array([v.height_m for v in vehicles])
    rear = front - heading * length
    footprint = np.stack([
        front - right * half_width, front + right * half_width,
        rear + right * half_width, rear - right * half_width,
    ], axis=1)
    bottom = np.concatenate([footprint, np.zeros((len(vehicles), 4, 1))], axis=2)
    top = np.concatenate([footprint, np.repeat(height[:, None, None], 4, axis=1)], axis=2)
    return np.concatenate([bottom, top], axis=1)


def ground_centres(vehicles: list[VehicleState]) -> NDArray[np.float64]:
    """(N, 2) middle of each vehicle's footprint."""
    if not vehicles:
        return np.empty((0, 2))
    angle = np.radians([v.angle_deg for v in vehicles])
    heading = np.column_stack([np.sin(angle), np.cos(angle)])
    front = np.array([[v.x_m, v.y_m] for v in vehicles])
    return front - heading * (np.array([v.length_m for v in vehicles])[:, None] / 2)


@dataclass
class _RoadGeometry:
    surfaces: list[NDArray[np.float64]]
    solid_marks: list[NDArray[np.float64]]
    dashed_marks: list[NDArray[np.float64]]


def _offset_polyline(points: NDArray[np.float64], offset: float) -> NDArray[np.float64]:
    """A polyline moved sideways by ``offset`` (positive: right of travel)."""
    directions = np.diff(points, axis=0)
    directions /= np.linalg.norm(directions, axis=1, keepdims=True) + 1e-12
    normals = np.column_stack([directions[:, 1], -directions[:, 0]])
    per_point = np.vstack([normals[:1], (normals[:-1] + normals[1:]) / 2, normals[-1:]])
    per_point /= np.linalg.norm(per_point, axis=1, keepdims=True) + 1e-12
    return np.asarray(points + per_point * offset)


def _ribbon(points: NDArray[np.float64], left: float, right: float) -> NDArray[np.float64]:
    a = _offset_polyline(points, left)
    b = _offset_polyline(points, right)
    return np.vstack([a, b[::-1]])


def _dashes(points: NDArray[np.float64], dash_m: float, gap_m: float) -> list[NDArray[np.float64]]:
    segment_lengths = np.linalg.norm(np.diff(points, axis=0), axis=1)
    cumulative = np.concatenate([[0.0], np.cumsum(segment_lengths)])
    out = []
    start = 0.0
    while start < cumulative[-1]:
        end = min(start + dash_m, cumulative[-1])
        xs = np.interp([start, end], cumulative, points[:, 0])
        ys = np.interp([start, end], cumulative, points[:, 1])
        out.append(np.column_stack([xs, ys]))
        start += dash_m + gap_m
    return out


def _road_geometry(net: Any, centre: NDArray[np.float64]) -> _RoadGeometry:
    surfaces: list[NDArray[np.float64]] = []
    solid: list[NDArray[np.float64]] = []
    dashed: list[NDArray[np.float64]] = []
    for node in net.getNodes():
        shape = np.array([p[:2] for p in node.getShape()])
        if len(shape) >= 3 and np.linalg.norm(shape.mean(axis=0) - centre) < VIEW_RANGE_M:
            surfaces.append(shape)
    for edge in net.getEdges():
        if edge.getFunction() != "":
            continue
        lanes = edge.getLanes()
        shapes = [np.array([p[:2] for p in lane.getShape()]) for lane in lanes]
        if min(np.linalg.norm(s - centre, axis=1).min() for s in shapes) > VIEW_RANGE_M:
            continue
        for lane, shape in zip(lanes, shapes, strict=True):
            half = lane.getWidth() / 2
            surfaces.append(_ribbon(shape, -half, half))
        # Lanes are ordered from the kerb (index 0); borders between them are dashed.
        for inner, outer in itertools.pairwise(shapes):
            border = (inner + outer) / 2 if len(inner) == len(outer) else inner
            for dash in _dashes(border, 3.0, 5.0):
                if np.linalg.norm(dash[-1] - dash[0]) > 0.1:
                    dashed.append(_ribbon(dash, -0.07, 0.07))
        if edge.getToNode().getType() == "traffic_light":
            for lane, shape in zip(lanes, shapes, strict=True):
                end = shape[-1]
                direction = shape[-1] - shape[-2]
                direction /= np.linalg.norm(direction)
                right = np.array([direction[1], -direction[0]])
                half = lane.getWidth() / 2
                stop = np.array([end - right * half, end + right * half])
                solid.append(_ribbon(stop, -0.25, 0.25))
    return _RoadGeometry(surfaces, solid, dashed)


def _lift(points_2d: NDArray[np.float64], z: float = 0.0) -> NDArray[np.float64]:
    return np.column_stack([points_2d, np.full(len(points_2d), z)])


class VirtualCamera:
    """Renders one camera's frames."""

    def __init__(self, camera: Camera, pinhole: PinholeCamera, road: _RoadGeometry,
                 line_footprints: dict[str, NDArray[np.float64]]) -> None:
        self.camera = camera
        self.pinhole = pinhole
        self.road = road
        self.line_footprints = line_footprints
        self._backgrounds: dict[tuple[str, bool], NDArray[np.uint8]] = {}
        self._last_centres: dict[str, NDArray[np.float64]] = {}
        self._counted: set[tuple[str, str]] = set()

    @property
    def size(self) -> tuple[int, int]:
        return self.pinhole.width_px, self.pinhole.height_px

    def background(self, conditions: Conditions) -> NDArray[np.uint8]:
        key = (conditions.lighting, conditions.rain)
        if key not in self._backgrounds:
            self._backgrounds[key] = self._draw_background(conditions)
        return self._backgrounds[key]

    def _draw_background(self, conditions: Conditions) -> NDArray[np.uint8]:
        width, height = self.size
        image = np.zeros((height, width, 3), dtype=np.uint8)
        horizon = round(height / 2 - self.pinhole.focal_px * math.tan(
            math.radians(self.pinhole.tilt_deg)))
        sky = {"day": (225, 200, 170), "dusk": (120, 120, 190), "night": (40, 20, 15)}
        ground = {"day": (80, 115, 95), "dusk": (60, 75, 80), "night": (20, 22, 22)}
        asphalt = {"day": (95, 95, 95), "dusk": (70, 70, 75), "night": (35, 35, 38)}
        paint = {"day": (235, 235, 235), "dusk": (180, 180, 190), "night": (110, 110, 110)}
        light = conditions.lighting
        image[:] = ground[light]
        if horizon > 0:
            image[: min(horizon, height)] = sky[light]
        for polygon in self.road.surfaces:
            self._fill_ground(image, polygon, asphalt[light])
        for polygon in self.road.dashed_marks + self.road.solid_marks:
            self._fill_ground(image, polygon, paint[light])
        if conditions.rain:
            image = (image.astype(np.float32) * 0.8 + 20).clip(0, 255).astype(np.uint8)
        return image

    def _fill_ground(self, image: NDArray[np.uint8], polygon: NDArray[np.float64],
                     colour: tuple[int, int, int]) -> None:
        pixels = self.pinhole.clip_polygon(_lift(polygon))
        if len(pixels) >= 3:
            cv2.fillPoly(image, [np.round(pixels * 4).astype(np.int32)], colour, cv2.LINE_AA,
                         shift=2)

    def render(
        self, vehicles: list[VehicleState], track_ids: dict[str, int], conditions: Conditions,
        rng: np.random.Generator,
    ) -> tuple[NDArray[np.uint8], list[LabelledBox]]:
        """One frame and its labelled boxes."""
        width, height = self.size
        image = self.background(conditions).copy()
        corners = box_corners(vehicles)
        labels: list[LabelledBox] = []
        if len(vehicles):
            cam = self.pinhole.to_camera(corners.reshape(-1, 3)).reshape(-1, 8, 3)
            depth = cam[:, :, 2]
            near = depth.min(axis=1)
            centre_distance = np.linalg.norm(
                corners[:, :4, :2].mean(axis=1) - np.asarray(self.pinhole.position[:2]), axis=1)
            candidates = np.flatnonzero((near > 0.5) & (centre_distance < VIEW_RANGE_M))
            pixels = cam[candidates, :, :2] * self.pinhole.focal_px / depth[candidates, :, None]
            pixels += np.array([width / 2, height / 2])
            x1, y1 = pixels[:, :, 0].min(axis=1), pixels[:, :, 1].min(axis=1)
            x2, y2 = pixels[:, :, 0].max(axis=1), pixels[:, :, 1].max(axis=1)
            on_screen = (x2 > 0) & (y2 > 0) & (x1 < width) & (y1 < height)
            order = np.argsort(-near[candidates])
            ids = np.zeros((height, width), dtype=np.int32)
            for rank in order:
                if not on_screen[rank]:
                    continue
                index = int(candidates[rank])
                outline = pixels[rank]
                if vehicles[index].vehicle_class is VehicleClass.BICYCLE:
                    outline = _bicycle_outline(outline)
                hull = cv2.convexHull(np.round(outline * 4).astype(np.int32))
                self._draw_vehicle(image, vehicles[index], outline, hull, conditions,
                                   near[index])
                cv2.fillConvexPoly(ids, hull, int(rank) + 1, shift=2)
            visible_counts = np.bincount(ids.ravel(), minlength=len(candidates) + 1)
            for rank in range(len(candidates)):
                if not on_screen[rank]:
                    continue
                index = int(candidates[rank])
                full = np.array([x1[rank], y1[rank], x2[rank], y2[rank]])
                clipped = np.clip(full, 0, [width, height, width, height])
                box_area = (clipped[2] - clipped[0]) * (clipped[3] - clipped[1])
                if box_area < 4:
                    continue
                hull_area = cv2.contourArea(cv2.convexHull(pixels[rank].astype(np.float32)))
                visible = visible_counts[rank + 1] / max(hull_area, 1.0)
                vehicle = vehicles[index]
                labels.append(LabelledBox(
                    track_id=track_ids[vehicle.vehicle_id],
                    vehicle_id=vehicle.vehicle_id,
                    vehicle_class=vehicle.vehicle_class,
                    box_xyxy=(float(clipped[0]), float(clipped[1]), float(clipped[2]),
                              float(clipped[3])),
                    visibility=float(min(visible, 1.0)),
                    truncated=bool((full != clipped).any()),
                    distance_m=float(centre_distance[index]),
                ))
        image = self._finish(image, conditions, rng)
        return image, labels

    def _draw_vehicle(self, image: NDArray[np.uint8], vehicle: VehicleState,
                      pixels: NDArray[np.float64], hull: NDArray[np.int32],
                      conditions: Conditions, depth_m: float) -> None:
        colour = _body_colour(vehicle)
        dim = {"day": 1.0, "dusk": 0.65, "night": 0.3}[conditions.lighting]
        body = tuple(int(c) for c in colour * dim * 0.75)
        if vehicle.vehicle_class is VehicleClass.BICYCLE:
            _draw_bicycle(image, pixels, body, dim)
        else:
            cv2.fillConvexPoly(image, hull, body, cv2.LINE_AA, shift=2)
        top = np.round(pixels[4:] * 4).astype(np.int32)
        cv2.fillConvexPoly(image, cv2.convexHull(top), tuple(int(c) for c in colour * dim),
                           cv2.LINE_AA, shift=2)
        if vehicle.vehicle_class in (VehicleClass.CAR, VehicleClass.BUS, VehicleClass.TRUCK):
            # A dark windscreen band on the front face, just under the roof.
            front_top = pixels[[4, 5]]
            front_bottom = pixels[[0, 1]]
            # A bus's windscreen reaches much lower than a car's or a truck cab's.
            reach = 0.6 if vehicle.vehicle_class is VehicleClass.BUS else 0.4
            band = np.vstack([front_top, front_top[::-1] * (1 - reach)
                              + front_bottom[::-1] * reach])
            cv2.fillConvexPoly(image, np.round(band * 4).astype(np.int32), (40, 35, 30),
                               cv2.LINE_AA, shift=2)
        if vehicle.vehicle_class is VehicleClass.BUS:
            _draw_bus_windows(image, pixels, conditions.lighting, dim)
        elif vehicle.vehicle_class is VehicleClass.TRUCK:
            _draw_cargo_box(image, pixels, _cargo_colour(vehicle) * dim)
        if conditions.lighting != "day":
            radius = max(1, round(60.0 / max(depth_m, 1.0)))
            front_lights = pixels[[0, 1]] * 0.8 + pixels[[4, 5]] * 0.2
            rear_lights = pixels[[3, 2]] * 0.8 + pixels[[7, 6]] * 0.2
            # The front is nearer the bottom of the image than the rear: coming towards us.
            facing_camera = (pixels[0, 1] + pixels[1, 1]) > (pixels[2, 1] + pixels[3, 1])
            lights = front_lights if facing_camera else rear_lights
            light_colour = (235, 250, 255) if facing_camera else (40, 40, 230)
            if vehicle.vehicle_class in (VehicleClass.MOTORCYCLE, VehicleClass.BICYCLE):
                lights = lights.mean(axis=0, keepdims=True)
            for x, y in lights:
                cv2.circle(image, (int(x), int(y)), radius * 2, tuple(c // 3 for c in
                                                                       light_colour), -1,
                           cv2.LINE_AA)
                cv2.circle(image, (int(x), int(y)), radius, light_colour, -1, cv2.LINE_AA)

    def _finish(self, image: NDArray[np.uint8], conditions: Conditions,
                rng: np.random.Generator) -> NDArray[np.uint8]:
        height, width = image.shape[:2]
        if conditions.rain:
            streaks = rng.uniform(0, 1, size=(120, 3))
            overlay = image.copy()
            for x, y, length in streaks:
                start = (int(x * width), int(y * height))
                end = (start[0] - 3, start[1] + int(8 + 14 * length))
                cv2.line(overlay, start, end, (200, 200, 200), 1, cv2.LINE_AA)
            image = cv2.addWeighted(overlay, 0.35, image, 0.65, 0)
        if conditions.blur_px >= 3:
            image = cv2.GaussianBlur(image, (conditions.blur_px | 1, conditions.blur_px | 1), 0)
        if conditions.noise_sigma > 0:
            noise = np.empty(image.shape, dtype=np.int16)
            cv2.randn(noise, 0, conditions.noise_sigma)
            image = cv2.add(image.astype(np.int16), noise, dtype=cv2.CV_16S).clip(
                0, 255).astype(np.uint8)
        return image

    def crossings(self, vehicles: list[VehicleState], track_ids: dict[str, int],
                  t_s: float) -> list[LineCrossing]:
        """Counting-line crossings since the previous call (every simulation step); each
        vehicle crosses each line at most once."""
        centres = np.array([[v.x_m, v.y_m] for v in vehicles]).reshape(-1, 2)  # front middle
        events: list[LineCrossing] = []
        previous = self._last_centres
        current = {v.vehicle_id: centres[i] for i, v in enumerate(vehicles)}
        moved = [v for v in vehicles if v.vehicle_id in previous]
        if moved and self.line_footprints:
            starts = np.array([previous[v.vehicle_id] for v in moved])
            ends = np.array([current[v.vehicle_id] for v in moved])
            for line_id, footprint in self.line_footprints.items():
                direction = segments_cross(
                    starts, ends, np.repeat(footprint[:1], len(moved), axis=0),
                    np.repeat(footprint[1:], len(moved), axis=0),
                )
                for index in np.flatnonzero(direction):
                    vehicle = moved[index]
                    # A vehicle standing on the line can wobble across it (its heading
                    # changes as it edges sideways): only its first crossing counts.
                    if (vehicle.vehicle_id, line_id) in self._counted:
                        continue
                    self._counted.add((vehicle.vehicle_id, line_id))
                    events.append(LineCrossing(
                        line_id, track_ids[vehicle.vehicle_id], vehicle.vehicle_id,
                        vehicle.vehicle_class, "in" if direction[index] > 0 else "out", t_s,
                    ))
        self._last_centres = current
        return events


def _bicycle_outline(corners_px: NDArray[np.float64]) -> NDArray[np.float64]:
    """A bicycle's outline: its bottom corners on its centre line (wheels and frame), its top
    (the rider's shoulders) full width; it hides what is behind it. The labelled box stays the
    3-D box's extent."""
    outline = corners_px.copy()
    bottom = outline[:4]
    outline[:4] = bottom * 0.3 + bottom.mean(axis=0) * 0.7
    return outline


def _draw_bicycle(image: NDArray[np.uint8], pixels: NDArray[np.float64],
                  rider_bgr: tuple[int, ...], dim: float) -> None:
    """A bicycle as a camera sees one: two thin wheels and a frame, the road showing through
    them, under a rider (where a motorcycle is bodywork down to the road). ``pixels`` is
    :func:`_bicycle_outline`'s: bottom corners on the bicycle's centre line, top full width."""
    bottom, top = pixels[:4], pixels[4:]
    front, rear = bottom[[0, 1]].mean(axis=0), bottom[[2, 3]].mean(axis=0)
    front_up, rear_up = top[[0, 1]].mean(axis=0), top[[2, 3]].mean(axis=0)
    # Wheels of 0.33 m radius, in the bicycle's own vertical plane: a fifth of its 1.6 m
    # height up, a fifth of its 1.8 m length along (seen end on, a thin upright ellipse).
    steel = tuple(int(c * dim) for c in (35, 35, 35))
    turn = np.linspace(0, 2 * np.pi, 17)[:, None]
    hubs = []
    for along in (0.8, 0.2):
        base = front * along + rear * (1 - along)
        up = (front_up * along + rear_up * (1 - along) - base) * 0.2
        hub = base + up
        hubs.append(hub)
        rim = hub + np.cos(turn) * (front - rear) * 0.18 + np.sin(turn) * up
        thickness = max(1, round(float(np.linalg.norm(up)) / 4))
        cv2.polylines(image, [np.round(rim * 4).astype(np.int32)], True, steel, thickness,
                      cv2.LINE_AA, shift=2)
    seat = (front * 0.5 + rear * 0.5) * 0.45 + (front_up * 0.5 + rear_up * 0.5) * 0.55
    for start, end in ((hubs[0], hubs[1]), (hubs[1], seat), (hubs[0], seat)):
        cv2.line(image, _fixed_point(start), _fixed_point(end), steel, 1, cv2.LINE_AA, shift=2)
    waist = bottom * 0.45 + top * 0.55
    waist = waist.mean(axis=0) * 0.4 + waist * 0.6
    rider = cv2.convexHull(np.round(np.vstack([waist, top]) * 4).astype(np.int32))
    cv2.fillConvexPoly(image, rider, rider_bgr, cv2.LINE_AA, shift=2)


def _signed_area(points: NDArray[np.float64]) -> float:
    x, y = points[:, 0], points[:, 1]
    return float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y)) / 2


def _visible_sides(pixels: NDArray[np.float64]) -> list[tuple[int, int, int, int]]:
    """The long sides of a box the camera sees: those wound the way its roof is (a pole
    camera always sees the roof), each as (bottom front, bottom rear, top front, top rear)."""
    roof = np.sign(_signed_area(pixels[_TOP_FACE]))
    return [corners for corners, clockwise in _SIDES.values()
            if np.sign(_signed_area(pixels[clockwise])) == roof]


def _side_patch(pixels: NDArray[np.float64], side: tuple[int, int, int, int],
                along: tuple[float, float], up: tuple[float, float]) -> NDArray[np.int32]:
    """A quadrilateral on a side face (or on the roof, ``_ROOF``): ``along`` from the front
    (0) to the rear (1), ``up`` from the bottom (0) to the top (1), as quarter-pixel points for
    ``shift=2``."""
    bottom_front, bottom_rear, top_front, top_rear = (pixels[i] for i in side)

    def at(a: float, u: float) -> NDArray[np.float64]:
        bottom = bottom_front * (1 - a) + bottom_rear * a
        top = top_front * (1 - a) + top_rear * a
        return bottom * (1 - u) + top * u

    corners = [at(along[0], up[0]), at(along[1], up[0]), at(along[1], up[1]),
               at(along[0], up[1])]
    return np.round(np.array(corners) * 4).astype(np.int32)


def _draw_bus_windows(image: NDArray[np.uint8], pixels: NDArray[np.float64],
                      lighting: str, dim: float) -> None:
    """A bus's band of side windows along the whole body, lit from inside after dark, and
    the air-conditioning unit on its roof: what tells a bus from a box truck of nearly its
    size and colour."""
    glass = (40, 35, 30) if lighting == "day" else (70, 150, 190)
    for side in _visible_sides(pixels):
        cv2.fillConvexPoly(image, _side_patch(pixels, side, (0.05, 0.95), (0.5, 0.85)), glass,
                           cv2.LINE_AA, shift=2)
    # The roof's air-conditioning unit, pale against the body.
    cv2.fillConvexPoly(image, _side_patch(pixels, _ROOF, (0.3, 0.55), (0.2, 0.8)),
                       tuple(int(210 * dim) for _ in range(3)), cv2.LINE_AA, shift=2)


def _draw_cargo_box(image: NDArray[np.uint8], pixels: NDArray[np.float64],
                    cargo_bgr: NDArray[np.float64]) -> None:
    """A truck's cargo box behind its cab, in its own colour, with a dark gap between the
    two on the sides and the roof."""
    cargo = tuple(int(c) for c in cargo_bgr)
    gap = (25, 25, 25)
    for side in _visible_sides(pixels):
        cv2.fillConvexPoly(image, _side_patch(pixels, side, (0.3, 1.0), (0.12, 1.0)), cargo,
                           cv2.LINE_AA, shift=2)
        cv2.fillConvexPoly(image, _side_patch(pixels, side, (0.25, 0.3), (0.12, 1.0)), gap,
                           cv2.LINE_AA, shift=2)
    for along, colour in (((0.3, 1.0), cargo), ((0.25, 0.3), gap)):
        cv2.fillConvexPoly(image, _side_patch(pixels, _ROOF, along, (0.0, 1.0)), colour,
                           cv2.LINE_AA, shift=2)


def _fixed_point(point: NDArray[np.float64]) -> tuple[int, int]:
    """A pixel position for OpenCV drawing with ``shift=2`` (quarter pixels)."""
    return round(float(point[0]) * 4), round(float(point[1]) * 4)


def _body_colour(vehicle: VehicleState) -> NDArray[np.float64]:
    digest = sum(ord(c) * 31 ** i for i, c in enumerate(vehicle.vehicle_id[-8:]))
    if vehicle.vehicle_class is VehicleClass.BUS:
        return BUS_COLOURS_BGR[digest % len(BUS_COLOURS_BGR)]
    return BODY_COLOURS_BGR[digest % len(BODY_COLOURS_BGR)]


def _cargo_colour(vehicle: VehicleState) -> NDArray[np.float64]:
    digest = sum(ord(c) * 37 ** i for i, c in enumerate(vehicle.vehicle_id[-8:]))
    return CARGO_COLOURS_BGR[digest % len(CARGO_COLOURS_BGR)]


def build_cameras(site: Site, net_file: Path) -> list[tuple[Intersection, VirtualCamera]]:
    """A :class:`VirtualCamera` for every camera of a simulated site."""
    net = sumolib.net.readNet(str(net_file))
    out = []
    for intersection in site.intersections:
        for camera in intersection.cameras:
            approach = next(a for a in intersection.approaches if a.id == camera.approach)
            sumo_lanes = [net.getLane(lane.sumo_lane) for lane in approach.lanes
                          if lane.sumo_lane]
            if not sumo_lanes:
                continue
            stop_middle, travel, right = approach_frame(sumo_lanes)
            pinhole = camera_model(camera.view, stop_middle, travel, right)
            road = _road_geometry(net, stop_middle)
            footprints = {}
            for line in camera.counting_lines:
                ground = pinhole.image_to_ground(np.array([line.start_xy, line.end_xy]))
                if not np.isnan(ground).any():
                    footprints[line.id] = ground[:, :2]
            out.append((intersection, VirtualCamera(camera, pinhole, road, footprints)))
    return out


@dataclass
class CameraRig:
    """All cameras of a run as a frame source (:class:`simulator.simulate.FrameSource`).

    Frames are due every ``1 / fps`` simulated seconds (each camera's own ``fps`` unless
    ``fps`` is given); vehicle positions are interpolated between simulation steps.
    Conditions follow the time of day (day 06–17, dusk 17–19, night otherwise) unless fixed.
    """

    cameras: list[tuple[Intersection, VirtualCamera]]
    seed: int = 0
    fps: float | None = None
    conditions: Conditions | None = None
    rng: np.random.Generator = field(init=False)
    track_ids: dict[str, int] = field(default_factory=dict)
    seq: dict[str, int] = field(default_factory=dict)
    crossings: list[tuple[str, LineCrossing]] = field(default_factory=list)
    _previous: dict[str, VehicleState] = field(default_factory=dict)
    _previous_t: float | None = None
    _next_frame_t: float | None = None

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    @classmethod
    def for_site(cls, site: Site, sumocfg: Path, *, seed: int = 0, fps: float | None = None,
                 conditions: Conditions | None = None) -> CameraRig:
        cameras = build_cameras(site, read_sumocfg(sumocfg).net_file)
        return cls(cameras, seed=seed, fps=fps, conditions=conditions)

    @property
    def frame_interval_s(self) -> float:
        fps = self.fps or max(camera.camera.view.fps for _, camera in self.cameras)
        return 1.0 / fps

    def conditions_at(self, t_s: float) -> Conditions:
        if self.conditions is not None:
            return self.conditions
        hour = (t_s / 3600) % 24
        lighting = "day" if 6 <= hour < 17 else "dusk" if 17 <= hour < 19 else "night"
        return Conditions(lighting=lighting)

    def observe(self, run: SumoRun) -> tuple[list[VehicleState], float]:
        """Vehicles now; assigns track ids and records counting-line crossings."""
        vehicles = run.vehicles()
        t_s = run.time_s
        for vehicle in vehicles:
            if vehicle.vehicle_id not in self.track_ids:
                self.track_ids[vehicle.vehicle_id] = len(self.track_ids) + 1
        for _, camera in self.cameras:
            for event in camera.crossings(vehicles, self.track_ids, t_s):
                self.crossings.append((camera.camera.id, event))
        return vehicles, t_s

    def frames(self, run: SumoRun) -> list[tuple[float, str, NDArray[np.uint8],
                                                 list[LabelledBox], Conditions]]:
        """Frames due since the previous step: (time, camera id, image, labels, conditions)."""
        vehicles, t_s = self.observe(run)
        if self._next_frame_t is None:
            self._next_frame_t = t_s
        out = []
        while self._next_frame_t <= t_s + 1e-9:
            frame_t = self._next_frame_t
            states = self._interpolate(vehicles, t_s, frame_t)
            conditions = self.conditions_at(frame_t)
            for _, camera in self.cameras:
                image, labels = camera.render(states, self.track_ids, conditions, self.rng)
                out.append((frame_t, camera.camera.id, image, labels, conditions))
            self._next_frame_t = frame_t + self.frame_interval_s
        self._previous = {v.vehicle_id: v for v in vehicles}
        self._previous_t = t_s
        return out

    def _interpolate(self, vehicles: list[VehicleState], t_s: float,
                     frame_t: float) -> list[VehicleState]:
        if self._previous_t is None or frame_t >= t_s - 1e-9 or t_s <= self._previous_t:
            return vehicles
        alpha = (frame_t - self._previous_t) / (t_s - self._previous_t)
        states = []
        for vehicle in vehicles:
            before = self._previous.get(vehicle.vehicle_id)
            if before is None:
                continue
            turn = ((vehicle.angle_deg - before.angle_deg + 180) % 360) - 180
            states.append(VehicleState(
                vehicle.vehicle_id,
                before.x_m + alpha * (vehicle.x_m - before.x_m),
                before.y_m + alpha * (vehicle.y_m - before.y_m),
                (before.angle_deg + alpha * turn) % 360,
                vehicle.vehicle_class, vehicle.length_m, vehicle.width_m, vehicle.height_m,
            ))
        return states

    def frames_due(self, run: SumoRun, t_run_s: float) -> list[StreamMessage]:
        messages = []
        for frame_t, camera_id, image, _, conditions in self.frames(run):
            ok, jpeg = cv2.imencode(".jpg", image,
                                    [cv2.IMWRITE_JPEG_QUALITY, conditions.jpeg_quality])
            if not ok:
                continue
            self.seq[camera_id] = self.seq.get(camera_id, -1) + 1
            ts = run.timestamp(frame_t).astimezone(UTC).isoformat()
            messages.append(StreamMessage(
                t_run_s - (run.time_s - frame_t), "camera_frames", camera_id, jpeg.tobytes(),
                (("v", b"1"), ("camera_id", camera_id.encode()), ("ts", ts.encode()),
                 ("seq", str(self.seq[camera_id]).encode())),
            ))
        return messages


def write_label_files(
    out_dir: Path, name: str, image: NDArray[np.uint8], labels: list[LabelledBox],
    conditions: Conditions, extra: dict[str, Any],
) -> dict[str, Any]:
    """Write one frame of a training set: JPEG, YOLO label file; return its JSON record."""
    height, width = image.shape[:2]
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "labels").mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out_dir / "images" / f"{name}.jpg"), image,
                [cv2.IMWRITE_JPEG_QUALITY, conditions.jpeg_quality])
    lines = []
    for box in labels:
        x1, y1, x2, y2 = box.box_xyxy
        lines.append(
            f"{CLASS_INDEX[box.vehicle_class]} {(x1 + x2) / 2 / width:.6f} "
            f"{(y1 + y2) / 2 / height:.6f} {(x2 - x1) / width:.6f} {(y2 - y1) / height:.6f}"
        )
    (out_dir / "labels" / f"{name}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
    return {"image": f"images/{name}.jpg", "label": f"labels/{name}.txt", "width": width,
            "height": height, "conditions": conditions.as_dict(),
            "boxes": [box.as_dict() for box in labels], **extra}


def write_dataset_index(out_dir: Path, records: list[dict[str, Any]],
                        crossings: list[dict[str, Any]]) -> None:
    names = [c.value for c in CLASS_INDEX]
    (out_dir / "classes.txt").write_text("\n".join(names) + "\n")
    (out_dir / "dataset.yaml").write_text(
        "# YOLO-style dataset written by `simpang simulate render`.\n"
        f"path: {out_dir.resolve()}\ntrain: images\nval: images\n"
        f"names: {json.dumps(dict(enumerate(names)))}\n"
    )
    with (out_dir / "annotations.jsonl").open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, separators=(",", ":")) + "\n")
    with (out_dir / "crossings.jsonl").open("w", encoding="utf-8") as handle:
        for crossing in crossings:
            handle.write(json.dumps(crossing, separators=(",", ":")) + "\n")
