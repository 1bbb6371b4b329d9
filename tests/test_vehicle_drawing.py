"""The virtual camera draws a bus and a truck as different vehicles, not as one box in two
sizes: a bus has a pale air-conditioning unit on its roof and side windows, a truck a cab
and a cargo box of another colour behind it."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from simpang.vehicles import VehicleClass
from simulator.bundled import build_scenario
from simulator.camera import CameraRig, Conditions, VirtualCamera, box_corners
from simulator.sumo_run import VehicleState

DAYLIGHT = Conditions("day", noise_sigma=0)


@pytest.fixture(scope="module")
def camera(scenario_cache: Path) -> VirtualCamera:
    built = build_scenario("four_arm", scenario_cache)
    rig = CameraRig.for_site(built.site(), built.sumocfg, seed=1, fps=1.0,
                             conditions=DAYLIGHT)
    return rig.cameras[0][1]


def coming_towards(camera: VirtualCamera, vehicle_id: str, vehicle_class: VehicleClass
                   ) -> VehicleState:
    """A 12 m × 2.5 m × 3.2 m vehicle in the middle of the view, driving at the camera."""
    width, height = camera.size
    front = camera.pinhole.image_to_ground(np.array([[width / 2, height * 0.7]]))[0]
    to_camera = np.asarray(camera.pinhole.position[:2]) - front[:2]
    heading_deg = math.degrees(math.atan2(to_camera[0], to_camera[1]))
    # SUMO's position is the front bumper; the body reaches 12 m back, away from the camera.
    return VehicleState(vehicle_id, float(front[0]), float(front[1]), heading_deg,
                        vehicle_class, 12.0, 2.5, 3.2)


def roof_pixel(camera: VirtualCamera, vehicle: VehicleState, along: float,
               across: float = 0.5) -> tuple[int, int]:
    """(row, column) of a point of the roof as drawn (between the roof's corners in the
    image): ``along`` from the front (0) to the rear (1), ``across`` from the left (0) to the
    right (1)."""
    corners = camera.pinhole.project(box_corners([vehicle])[0])
    left = corners[4] * (1 - along) + corners[7] * along
    right = corners[5] * (1 - along) + corners[6] * along
    u, v = left * (1 - across) + right * across
    return round(v), round(u)


def draw(camera: VirtualCamera, vehicle: VehicleState) -> np.ndarray:
    image, labels = camera.render([vehicle], {vehicle.vehicle_id: 1}, DAYLIGHT,
                                  np.random.default_rng(0))
    assert [label.vehicle_class for label in labels] == [vehicle.vehicle_class]
    return image.astype(int)


def test_a_truck_has_a_cargo_box_of_its_own_colour_behind_its_cab(
        camera: VirtualCamera) -> None:
    truck = coming_towards(camera, "truck.1", VehicleClass.TRUCK)
    image = draw(camera, truck)
    cab = image[roof_pixel(camera, truck, 0.12)]
    gap = image[roof_pixel(camera, truck, 0.275)]
    cargo = image[roof_pixel(camera, truck, 0.7)]
    assert np.abs(cab - cargo).sum() > 60, (cab, cargo)
    assert gap.max() < 40, gap
    # The cargo box is one colour from just behind the gap to the rear.
    assert np.abs(image[roof_pixel(camera, truck, 0.4)] - cargo).sum() < 15


def test_a_bus_has_a_pale_unit_on_its_roof_and_is_not_drawn_as_a_truck(
        camera: VirtualCamera) -> None:
    bus = coming_towards(camera, "bus.3", VehicleClass.BUS)
    image = draw(camera, bus)
    unit = image[roof_pixel(camera, bus, 0.42)]
    roof = image[roof_pixel(camera, bus, 0.8)]
    assert unit.min() > 180 and np.abs(unit - roof).sum() > 100, (unit, roof)
    # A bus of the same size drawn as a truck looks otherwise: the drawings differ.
    as_truck = draw(camera, replace(bus, vehicle_class=VehicleClass.TRUCK))
    assert (np.abs(image - as_truck).sum(axis=2) > 60).sum() > 200
