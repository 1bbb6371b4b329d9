"""Benchmark of camera counting: the ONNX detector + tracker + line counter against the
simulator's ground truth, beside a background-subtraction baseline on the same frames.

    .venv/bin/python bench/detector.py [--seconds 120] [--model models/simpang-vehicles.onnx]
                                       [--seed-offset 0]

Held-out scenes (simulation seeds and times the default model never trained on; cameras at
their own poses, every camera of the scenario, 10 frames/s, JPEG at quality 70): day, dusk,
night, day in rain, night in rain. Each scene warms up 180 simulated seconds, then counts for
``--seconds``. The counters already run on the 20 s of frames before the counted time, as a
counter in service has seen the vehicles standing at its lines when a count period begins.
``--seed-offset N`` adds N to every scene's seed: the same scenes with other traffic, a
validation set on which to choose tracker and counter settings (offsets 100 and 200 were
used), so that the benchmark's own scenes (offset 0) stay a fair test of them.

``count_accuracy``: 1 − Σ|counted − true| / Σ true over every (camera, line, class,
direction), true being the simulator's own counting-line crossings; per class and per scene
the same sum restricted to them; ``approach_count_accuracy`` the same with each camera's lane
lines pooled (a vehicle counted on the next lane's line is right there). Crossings in the last
5 s are left out on both sides (a vehicle standing on the line at the cut is counted by one
and not the other). A counter reports a crossing once the vehicle has stayed beyond the line
``frames_beyond`` frames, so its counts are taken over the counted time shifted by that delay.

Baseline: OpenCV MOG2 background subtraction (shadows dropped, opened and closed) whose blobs
go through the same tracker and counter; a blob's class comes from its width against the
lane's width on the counting line (< 0.45 motorcycle, < 1.3 car, else truck).

MOTA and IDF1 (CLEAR MOT, IDF1) of the ONNX pipeline's tracks against ground-truth boxes at
least 30 % visible and 16 px tall (tracks under 16 px are left out too).

Turning movements: the four-arm scenes add a junction camera
(:func:`simulator.importer.junction_camera` on the south approach: on a pole 30 m past the
stop line, 18 m up, looking back across the junction; a view the default model never trained
on) with an
entry line on each approach and an exit line on each departing road it sees.
``turning_movement_accuracy`` is 1 − Σ|counted − true| / Σ true over every (scene, movement,
class), a true movement being a vehicle's simulator crossing of an entry line followed by one
of an exit line, both inside the counted time; ``turning_movement_accuracy_all_classes`` the
same with classes pooled. The junction camera's lines are not in ``count_accuracy`` (which
stays comparable between runs) nor in MOTA/IDF1.

Speed: ``fps_batch1`` / ``fps_batch8`` are frames per second through ``OnnxDetector.detect``
(letterbox, inference, decoding, NMS) on 256 held-out frames at batch 1 and 8, on all cores
of this machine; ``baseline_fps`` is MOG2 + blobs on the same frames.

The last line printed is JSON with those figures.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

# Run as a script, this file's folder comes first on sys.path.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

import cv2
import numpy as np
from numpy.typing import NDArray

from detectors.counting import CounterSettings
from detectors.detections import DETECTED_CLASSES, Detections
from detectors.mot_metrics import MotAccumulator
from detectors.onnx_detector import OnnxDetector
from detectors.pipeline import CameraCounter
from simpang.settings import DEFAULT_MODEL_FILE, Settings
from simpang.site import Camera, Site
from simpang.vehicles import VehicleClass
from simulator.camera import CameraRig, Conditions, LabelledBox, LineCrossing
from simulator.importer import junction_camera
from simulator.simulate import parse_time_of_day, resolve_scenario
from simulator.sumo_run import SumoRun
from simulator.sumo_tools import read_sumocfg

DAY = datetime(2026, 3, 10, tzinfo=ZoneInfo("Asia/Makassar"))
WARMUP_S = 180.0
COUNTER_WARMUP_S = 20.0
FPS = 10
CUT_S = 5.0
MIN_TRACK_HEIGHT_PX = 16.0
ID_SPACE = 1_000_000
JUNCTION_APPROACH = "south"


@dataclass(frozen=True)
class Scene:
    name: str
    scenario: str
    begin: str
    conditions: Conditions
    seed: int
    junction_camera: bool = False


SCENES = [
    Scene("day", "four_arm", "07:40", Conditions("day", noise_sigma=4, jpeg_quality=70), 9101,
          junction_camera=True),
    Scene("dusk", "four_arm", "17:40", Conditions("dusk", noise_sigma=4, jpeg_quality=70), 9102,
          junction_camera=True),
    Scene("night", "four_arm", "19:30", Conditions("night", noise_sigma=5, jpeg_quality=70),
          9103, junction_camera=True),
    Scene("rain", "four_arm", "08:20", Conditions("day", rain=True, noise_sigma=4,
                                                 jpeg_quality=70), 9104,
          junction_camera=True),
    Scene("night-rain", "t_junction", "18:50", Conditions("night", rain=True, noise_sigma=5,
                                                          jpeg_quality=70), 9105),
]


class BlobDetector:
    """MOG2 foreground blobs as detections, classed by width against the lane's width."""

    def __init__(self, camera: Camera, background: NDArray[np.uint8]) -> None:
        self.subtractor = cv2.createBackgroundSubtractorMOG2(history=300, varThreshold=25,
                                                             detectShadows=True)
        for _ in range(30):
            self.subtractor.apply(background, learningRate=0.1)
        lines = camera.counting_lines
        self.lane_width_px = float(np.mean([np.hypot(line.end_xy[0] - line.start_xy[0],
                                                     line.end_xy[1] - line.start_xy[1])
                                            for line in lines])) if lines else 60.0
        self.lane_y = float(np.mean([line.start_xy[1] for line in lines])) if lines else 0.0
        self.kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))

    def detect(self, frame: NDArray[np.uint8]) -> Detections:
        mask = self.subtractor.apply(frame)
        mask = np.where(mask == 255, 255, 0).astype(np.uint8)  # 127 = shadow
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, self.kernel)
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, self.kernel)
        count, _, stats, _ = cv2.connectedComponentsWithStats(mask)
        boxes, classes = [], []
        for x, y, w, h, area in stats[1:count]:
            if area < 40:
                continue
            # Lane width grows towards the bottom of the image; scale by the row.
            lane = self.lane_width_px * max((y + h) / max(self.lane_y, 1.0), 0.2)
            ratio = w / lane
            name = "motorcycle" if ratio < 0.45 else "car" if ratio < 1.3 else "truck"
            boxes.append([x, y, x + w, y + h])
            classes.append(DETECTED_CLASSES.index(VehicleClass(name)))
        return Detections(np.array(boxes, np.float32).reshape(-1, 4),
                          np.full(len(boxes), 0.9, np.float32), np.array(classes, np.int64))


@dataclass
class Tally:
    truth: Counter[tuple[str, str, str, str]] = field(default_factory=Counter)
    onnx: Counter[tuple[str, str, str, str]] = field(default_factory=Counter)
    baseline: Counter[tuple[str, str, str, str]] = field(default_factory=Counter)
    true_movements: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    movements: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    baseline_movements: Counter[tuple[str, str, str]] = field(default_factory=Counter)

    def crossings_of(self, pipeline: str) -> Counter[tuple[str, str, str, str]]:
        return self.onnx if pipeline == "onnx" else self.baseline

    def movements_of(self, pipeline: str) -> Counter[tuple[str, str, str]]:
        return self.movements if pipeline == "onnx" else self.baseline_movements


def accuracy(truth: Counter[tuple[str, ...]], counted: Counter[tuple[str, ...]],
             keep: int | None = None, value: str | None = None) -> float | None:
    keys = [k for k in truth.keys() | counted.keys() if keep is None or k[keep] == value]
    total = sum(truth[k] for k in keys)
    if total == 0:
        return None
    return round(1 - sum(abs(counted[k] - truth[k]) for k in keys) / total, 4)


def pool_classes(counted: Counter[tuple[str, str, str]]) -> Counter[tuple[str, ...]]:
    """(scene, movement, class) counts → (scene, movement) counts."""
    pooled: Counter[tuple[str, ...]] = Counter()
    for (scene, movement, _), count in counted.items():
        pooled[(scene, movement)] += count
    return pooled


def jpeg(image: NDArray[np.uint8], quality: int) -> NDArray[np.uint8]:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return np.asarray(cv2.imdecode(data, cv2.IMREAD_COLOR), np.uint8) if ok else image


def visible_truth(labels: list[LabelledBox]) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    kept = [b for b in labels if b.visibility >= 0.3
            and b.box_xyxy[3] - b.box_xyxy[1] >= MIN_TRACK_HEIGHT_PX]
    return (np.array([b.track_id for b in kept], np.int64),
            np.array([b.box_xyxy for b in kept], np.float64).reshape(-1, 4))


def with_junction_camera(site: Site, sumocfg: Path) -> Site:
    """The site with a junction camera at its first intersection."""
    import sumolib

    net = sumolib.net.readNet(str(read_sumocfg(sumocfg).net_file))
    intersection = site.intersections[0]
    camera = junction_camera(net, intersection, JUNCTION_APPROACH)
    changed = intersection.model_copy(update={"cameras": [*intersection.cameras, camera]})
    return site.model_copy(update={"intersections": [changed, *site.intersections[1:]]})


def true_movements(camera: Camera, crossings: list[LineCrossing], begin_s: float,
                   cut_s: float) -> Counter[tuple[str, str]]:
    """(movement, class) counts: each vehicle's crossing of a movement's entry line followed by
    its next crossing, of the exit line, both between ``begin_s`` and ``cut_s``."""
    named = {(m.from_line, m.to_line): m.id for m in camera.turning_movements}
    by_vehicle: dict[str, list[LineCrossing]] = {}
    for event in sorted((e for e in crossings if e.direction == "in"), key=lambda e: e.t_s):
        by_vehicle.setdefault(event.vehicle_id, []).append(event)
    counted: Counter[tuple[str, str]] = Counter()
    for events in by_vehicle.values():
        for first, then in itertools.pairwise(events):
            name = named.get((first.line_id, then.line_id))
            if name is not None and begin_s <= first.t_s and then.t_s <= cut_s:
                counted[(name, then.vehicle_class.value)] += 1
    return counted


def run_scene(scene: Scene, scene_index: int, detector: OnnxDetector, seconds: float,
              work: Path, tally: Tally, mot: MotAccumulator,
              sample: list[NDArray[np.uint8]]) -> None:
    resolved = resolve_scenario(scene.scenario, Settings().data_dir / "scenarios")
    begin_s = parse_time_of_day(scene.begin)
    site = (with_junction_camera(resolved.site, resolved.sumocfg) if scene.junction_camera
            else resolved.site)
    junction_id = f"{site.intersections[0].id}-junction-cam" if scene.junction_camera else None
    run = SumoRun(site, resolved.sumocfg, work / scene.name, seed=scene.seed,
                  begin_s=begin_s - WARMUP_S, end_s=begin_s + seconds, day=DAY,
                  track_vehicles=True, queue_detectors=False)
    rig = CameraRig.for_site(site, resolved.sumocfg, seed=scene.seed, fps=FPS,
                             conditions=scene.conditions)
    settings = CounterSettings()
    delay_s = settings.frames_beyond / FPS
    counters = {name: {c.camera.id: CameraCounter.for_camera(c.camera,
                                                            counter_settings=settings)
                       for _, c in rig.cameras} for name in ("onnx", "baseline")}
    blobs = {c.camera.id: BlobDetector(c.camera, c.background(scene.conditions))
             for _, c in rig.cameras}
    camera_index = {c.camera.id: index for index, (_, c) in enumerate(rig.cameras)}
    cut = begin_s + seconds - CUT_S
    # When each (pipeline, track) crossed each junction-camera line: a movement is counted
    # only when its entry too lies in the counted time, as a true one is.
    crossed_at: dict[tuple[str, int, str], float] = {}
    with run:
        while run.time_s < begin_s - COUNTER_WARMUP_S - 1e-9:
            run.step()
            rig.observe(run)
        pending: list[tuple[float, str, NDArray[np.uint8], list[LabelledBox]]] = []
        while not run.finished():
            run.step()
            for t_s, camera_id, image, labels, _ in rig.frames(run):
                pending.append((t_s, camera_id, jpeg(image, scene.conditions.jpeg_quality),
                                labels))
            if len(pending) < 8 and not run.finished():
                continue
            found = detector.detect([frame for _, _, frame, _ in pending])
            for (t_s, camera_id, frame, labels), detections in zip(pending, found,
                                                                   strict=True):
                results = {
                    "onnx": counters["onnx"][camera_id].update(detections, t_s),
                    "baseline": counters["baseline"][camera_id].update(
                        blobs[camera_id].detect(frame), t_s)}
                counted_now = begin_s + delay_s <= t_s <= cut + delay_s
                if camera_id == junction_id:
                    for name, result in results.items():
                        for e in result.crossings:
                            crossed_at[(name, e.track_id, e.line_id)] = t_s - delay_s
                        for movement_id, m in result.movements if counted_now else []:
                            if crossed_at[(name, m.track_id, m.from_line)] >= begin_s:
                                tally.movements_of(name)[
                                    (scene.name, movement_id, m.vehicle_class.value)] += 1
                    continue
                if t_s < begin_s:
                    continue
                if len(sample) < 256:
                    sample.append(frame)
                result = results["onnx"]
                tall = (result.tracks.xyxy[:, 3] - result.tracks.xyxy[:, 1]
                        >= MIN_TRACK_HEIGHT_PX)
                gt_ids, gt_boxes = visible_truth(labels)
                # Ids are unique per scene (truth) and per camera (tracks): make them unique
                # over the whole run, or identities would mix across cameras.
                camera_offset = ID_SPACE * (scene_index * 100 + camera_index[camera_id])
                mot.update(gt_ids + ID_SPACE * 100 * scene_index, gt_boxes,
                           result.tracks.track_id[tall] + camera_offset,
                           result.tracks.xyxy[tall])
                for name, counted_result in results.items() if counted_now else []:
                    for e in counted_result.crossings:
                        tally.crossings_of(name)[(scene.name, f"{camera_id}/{e.line_id}",
                                                  e.vehicle_class.value, e.direction)] += 1
            pending = []
    if junction_id is not None:
        junction = next(c.camera for _, c in rig.cameras if c.camera.id == junction_id)
        seen = true_movements(junction, [e for c, e in rig.crossings if c == junction_id],
                              begin_s, cut)
        for (name, vehicle_class), count in seen.items():
            tally.true_movements[(scene.name, name, vehicle_class)] += count
    for camera_id, event in rig.crossings:
        if begin_s <= event.t_s <= cut and camera_id != junction_id:
            tally.truth[(scene.name, f"{camera_id}/{event.line_id}",
                         event.vehicle_class.value, event.direction)] += 1


def frames_per_second(work: object, frames: list[NDArray[np.uint8]], repeat: int = 2) -> float:
    started = time.perf_counter()
    for _ in range(repeat):
        work(frames)  # type: ignore[operator]
    return round(repeat * len(frames) / (time.perf_counter() - started), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL_FILE)
    parser.add_argument("--seed-offset", type=int, default=0)
    args = parser.parse_args()
    scenes = [replace(scene, seed=scene.seed + args.seed_offset) for scene in SCENES]
    detector = OnnxDetector(args.model, batch_size=8)
    tally, mot = Tally(), MotAccumulator()
    sample: list[NDArray[np.uint8]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for scene_index, scene in enumerate(scenes):
            started = time.monotonic()
            run_scene(scene, scene_index, detector, args.seconds, Path(tmp), tally, mot, sample)
            true_crossings = sum(v for k, v in tally.truth.items() if k[0] == scene.name)
            print(f"scene {scene.name}: {true_crossings} true crossings, onnx accuracy "
                  f"{accuracy(tally.truth, tally.onnx, 0, scene.name)}, baseline "
                  f"{accuracy(tally.truth, tally.baseline, 0, scene.name)} "
                  f"({time.monotonic() - started:.0f} s)", flush=True)

    batch1 = OnnxDetector(args.model, batch_size=1)
    detector.detect(sample[:8])
    fps_batch1 = frames_per_second(batch1.detect, sample)
    fps_batch8 = frames_per_second(detector.detect, sample)
    blob = BlobDetector(Camera(id="bench", source_url="-", approach="a"), sample[0])
    baseline_fps = frames_per_second(lambda frames: [blob.detect(f) for f in frames], sample)

    classes = sorted({k[2] for k in tally.truth})
    per_class = {c: accuracy(tally.truth, tally.onnx, 2, c) for c in classes}
    per_scene = {s.name: accuracy(tally.truth, tally.onnx, 0, s.name) for s in scenes}
    per_scene_class = {s.name: {c: accuracy(Counter({k: v for k, v in tally.truth.items()
                                                     if k[0] == s.name}),
                                            Counter({k: v for k, v in tally.onnx.items()
                                                     if k[0] == s.name}), 2, c)
                                for c in classes} for s in scenes}
    summary = mot.summary()
    print(f"true crossings by class: {dict(Counter(k[2] for k in tally.truth.elements()))}, "
          f"counted: {dict(Counter(k[2] for k in tally.onnx.elements()))}")
    print(f"per scene and class: {json.dumps(per_scene_class)}")
    # A class's figure inside one scene often rests on a handful of crossings.
    true_by_scene_class = {s.name: dict(Counter(k[2] for k in tally.truth.elements()
                                                if k[0] == s.name)) for s in scenes}
    print(f"true crossings per scene and class: {json.dumps(true_by_scene_class)}")
    by_camera: dict[str, Counter[tuple[str, ...]]] = {"truth": Counter(), "onnx": Counter()}
    for name, counted in (("truth", tally.truth), ("onnx", tally.onnx)):
        for (scene, line, vehicle_class, direction), count in counted.items():
            by_camera[name][(scene, line.split("/")[0], vehicle_class, direction)] += count
    camera_accuracy = accuracy(by_camera["truth"], by_camera["onnx"])
    print(f"onnx:     count accuracy {accuracy(tally.truth, tally.onnx)}, "
          f"{camera_accuracy} with each camera's lanes pooled, "
          f"{fps_batch1} frames/s at batch 1, {fps_batch8} at batch 8")
    print(f"baseline: count accuracy {accuracy(tally.truth, tally.baseline)}, "
          f"{baseline_fps} frames/s (MOG2 + blobs)")
    pooled = {name: pool_classes(counted) for name, counted in (
        ("truth", tally.true_movements), ("onnx", tally.movements),
        ("baseline", tally.baseline_movements))}
    by_movement = {"/".join(key): [pooled["truth"][key], pooled["onnx"][key]]
                   for key in sorted(pooled["truth"].keys() | pooled["onnx"].keys())}
    print(f"turning movements, true and counted: {json.dumps(by_movement)}")
    print(f"turning movements: onnx accuracy {accuracy(tally.true_movements, tally.movements)}"
          f" by class, {accuracy(pooled['truth'], pooled['onnx'])} classes pooled; baseline "
          f"{accuracy(tally.true_movements, tally.baseline_movements)} by class, "
          f"{accuracy(pooled['truth'], pooled['baseline'])} pooled")
    print(f"tracking: MOTA {summary.mota:.3f}, IDF1 {summary.idf1:.3f}, "
          f"ID switches {summary.id_switches}")
    print(json.dumps({
        "count_accuracy": accuracy(tally.truth, tally.onnx),
        "per_class_accuracy": per_class,
        "per_scene_accuracy": per_scene,
        "approach_count_accuracy": camera_accuracy,
        "fps_batch1": fps_batch1,
        "fps_batch8": fps_batch8,
        "baseline_count_accuracy": accuracy(tally.truth, tally.baseline),
        "baseline_per_class_accuracy": {c: accuracy(tally.truth, tally.baseline, 2, c)
                                        for c in classes},
        "baseline_fps": baseline_fps,
        "mota": round(summary.mota, 4),
        "idf1": round(summary.idf1, 4),
        "turning_movement_accuracy": accuracy(tally.true_movements, tally.movements),
        "turning_movement_accuracy_all_classes": accuracy(pooled["truth"], pooled["onnx"]),
        "baseline_turning_movement_accuracy": accuracy(tally.true_movements,
                                                       tally.baseline_movements),
    }))


if __name__ == "__main__":
    main()
