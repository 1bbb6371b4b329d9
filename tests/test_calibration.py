"""Ground-plane calibration, speeds and queues, against the virtual camera's exact geometry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import sumolib
from pydantic import ValidationError

from detectors.calibration import CalibrationError, GroundPlane
from detectors.pipeline import CameraCounter
from detectors.tracker import Tracks
from simpang.site import Camera, CountingLine, GroundCalibration, QueueZone, TurningMovement
from simulator.bundled import build_scenario
from simulator.importer import approach_frame, camera_model
from simulator.sumo_tools import read_sumocfg


def one_track(xyxy: list[float], track_id: int = 1) -> Tracks:
    return Tracks(np.array([xyxy], np.float32), np.ones(1, np.float32),
                  np.ones(1, np.int64), np.array([track_id]))


@pytest.fixture(scope="module")
def north_camera(scenario_cache: Path) -> tuple[Camera, object, np.ndarray, np.ndarray]:
    """The four-arm site's north camera, its pinhole model, stop-line middle and travel."""
    built = build_scenario("four_arm", scenario_cache)
    site = built.site()
    intersection = site.intersections[0]
    camera = next(c for c in intersection.cameras if c.id == "C-north-cam")
    approach = next(a for a in intersection.approaches if a.id == camera.approach)
    net = sumolib.net.readNet(str(read_sumocfg(built.sumocfg).net_file))
    lanes = [net.getLane(lane.sumo_lane) for lane in approach.lanes]
    stop_middle, travel, right = approach_frame(lanes)
    return camera, camera_model(camera.view, stop_middle, travel, right), stop_middle, travel


def test_the_importer_calibrates_virtual_cameras_exactly(north_camera) -> None:
    camera, pinhole, _, _ = north_camera
    assert camera.calibration is not None and len(camera.calibration.image_xy) >= 4
    plane = GroundPlane.from_points(camera.calibration.image_xy, camera.calibration.ground_xy_m)
    # Any road pixel, not only the calibration points, lands where the camera's rays meet
    # the road.
    pixels = np.array([[100.0, 300.0], [320.0, 200.0], [500.0, 120.0], [330.0, 60.0]])
    expected = pinhole.image_to_ground(pixels)[:, :2]
    assert np.abs(plane.to_ground(pixels) - expected).max() < 0.05


def test_speed_of_a_vehicle_driving_towards_the_camera(north_camera) -> None:
    camera, pinhole, stop_middle, travel = north_camera
    counter = CameraCounter.for_camera(camera)
    assert counter.speeds is not None
    speeds = counter.speeds
    fps, speed_mps = 10.0, 10.0  # 36 km/h
    readings = []
    for frame in range(30):
        upstream_m = 50.0 - speed_mps * frame / fps
        ground = stop_middle - travel * upstream_m
        u, v = pinhole.project(np.array([[*ground, 0.0]]))[0]
        box = [u - 15, v - 25, u + 15, v]  # bottom centre on the vehicle's ground point
        readings.append(speeds.update(one_track(box), frame / fps).get(1))
    measured = [r for r in readings if r is not None]
    assert len(measured) >= 20
    assert max(abs(r - 36.0) for r in measured) < 0.5, measured


def test_queue_counts_stopped_vehicles_in_the_zone_and_measures_back_to_the_last(
        north_camera) -> None:
    camera, pinhole, stop_middle, travel = north_camera
    counter = CameraCounter.for_camera(camera)
    assert counter.queue is not None
    boxes = []
    for upstream_m in (6.0, 13.0, 20.0):
        u, v = pinhole.project(np.array([[*(stop_middle - travel * upstream_m), 0.0]]))[0]
        boxes.append([u - 10, v - 20, u + 10, v])
    moving_u, moving_v = pinhole.project(np.array([[*(stop_middle - travel * 30.0), 0.0]]))[0]
    boxes.append([moving_u - 10, moving_v - 20, moving_u + 10, moving_v])
    tracks = Tracks(np.array(boxes, np.float32), np.ones(4, np.float32),
                    np.ones(4, np.int64), np.array([1, 2, 3, 4]))
    reading = counter.queue.measure(tracks, {1: 0.0, 2: 1.0, 3: 2.0, 4: 30.0})
    assert reading.vehicles == 3
    # The stop line's footprint is the approach's edge-to-edge line at the lanes' ends.
    assert reading.length_m == pytest.approx(20.0, abs=0.3)
    assert counter.queue.measure(tracks, {}).vehicles == 0  # no speed yet: not queued


def test_degenerate_and_short_calibrations_are_refused() -> None:
    with pytest.raises(CalibrationError, match="at least 4"):
        GroundPlane.from_points([(0, 0), (1, 0), (0, 1)], [(0, 0), (1, 0), (0, 1)])
    with pytest.raises(CalibrationError, match="degenerate"):
        GroundPlane.from_points([(0, 0), (1, 1), (2, 2), (3, 3)],
                                [(0, 0), (1, 1), (2, 2), (3, 3)])


def test_site_checks_calibration_zone_and_movements() -> None:
    line = CountingLine(id="in", start_xy=(0, 0), end_xy=(10, 0), approach="north")
    with pytest.raises(ValidationError, match="they go in pairs"):
        GroundCalibration(image_xy=[(0, 0)] * 4, ground_xy_m=[(0, 0)] * 5)
    with pytest.raises(ValidationError, match="no counting line 'out'"):
        Camera(id="c", source_url="x", approach="north", counting_lines=[line],
               turning_movements=[TurningMovement(id="nl", from_line="in", to_line="out")])
    with pytest.raises(ValidationError, match="needs a calibration"):
        Camera(id="c", source_url="x", approach="north",
               queue_zone=QueueZone(polygon_xy=[(0, 0), (1, 0), (1, 1)],
                                    stop_line_xy=((0, 0), (1, 0))))


def test_named_turning_movements() -> None:
    from detectors.detections import Detections

    lines = [CountingLine(id="south-in", start_xy=(0, 300), end_xy=(400, 300), approach="s"),
             CountingLine(id="east-out", start_xy=(500, 0), end_xy=(500, 400), approach="s")]
    camera = Camera(id="c", source_url="x", approach="s", counting_lines=lines,
                    turning_movements=[TurningMovement(id="south-right", from_line="south-in",
                                                       to_line="east-out", movement="right")])
    counter = CameraCounter.for_camera(camera)
    # Up the image across the first line, then right across the second.
    path = [(200, 380 - 8 * i) for i in range(18)] + [(200 + 8 * i, 244) for i in range(1, 50)]
    named = []
    for frame, (x, y) in enumerate(path):
        result = counter.update(Detections(np.array([[x - 15, y - 30, x + 15, y]], np.float32),
                                           np.array([0.9], np.float32), np.array([1])),
                                frame / 10)
        named += [name for name, _ in result.movements]
    assert named == ["south-right"]
    assert counter.totals.as_dict()["movements"] == {"south-right": {"car": 1}}
