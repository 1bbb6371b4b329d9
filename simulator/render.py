"""``simpang simulate render``: a labelled image set from the virtual cameras, for training and
evaluating the vehicle detector and the counter.

Output directory::

    images/<camera>_<seq>.jpg    frames (JPEG, the frame's own quality setting)
    labels/<camera>_<seq>.txt    YOLO labels: "class cx cy w h", normalised to the image size
    classes.txt                  class names in label-index order
    dataset.yaml                 YOLO dataset description (path, train/val, names)
    annotations.jsonl            one line per frame: image, label, camera_id, t (simulated s
                                 since midnight), ts (ISO 8601), conditions, and every box with
                                 track_id, vehicle_id, class, box_xyxy (pixels), visibility
                                 (0–1, share not hidden by nearer vehicles), truncated,
                                 distance_m
    crossings.jsonl              every counting-line crossing: camera_id, line_id, track_id,
                                 vehicle_id, class, direction ("in"/"out"), t

Boxes include vehicles only partly visible; a trainer may drop those below a visibility.
With ``vary_poses`` every camera stands somewhere else near its approach (height, tilt, field
of view, sideways and downstream position drawn at random), for training a detector that does
not learn one pose; counting lines are then left out (they are drawn for the site's own poses).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any

import numpy as np

from simpang.site import Site
from simulator.camera import CameraRig, Conditions, write_dataset_index, write_label_files
from simulator.simulate import ResolvedScenario
from simulator.sumo_run import SumoRun


@dataclass(frozen=True)
class RenderSummary:
    frames: int
    boxes: int
    crossings: int
    simulated_s: float


def vary_camera_poses(site: Site, rng: np.random.Generator) -> Site:
    """A copy of ``site`` whose cameras stand at random poses near their own, without
    counting lines. One in four stands on a tall pole across the junction, looking back over
    it, as a turning-movement camera does (:func:`simulator.importer.junction_camera`)."""
    intersections = []
    for intersection in site.intersections:
        cameras = []
        for camera in intersection.cameras:
            if rng.random() < 0.25:
                pose = {"height_m": rng.uniform(12.0, 22.0), "tilt_deg": rng.uniform(28.0, 45.0),
                        "fov_deg": rng.uniform(80.0, 105.0), "lateral_m": rng.uniform(-10.0, 10.0),
                        "downstream_m": rng.uniform(20.0, 40.0)}
            else:
                pose = {"height_m": rng.uniform(5.0, 12.0), "tilt_deg": rng.uniform(14.0, 34.0),
                        "fov_deg": rng.uniform(48.0, 80.0), "lateral_m": rng.uniform(-5.0, 5.0),
                        "downstream_m": rng.uniform(-2.0, 12.0)}
            view = camera.view.model_copy(update={k: float(v) for k, v in pose.items()})
            cameras.append(camera.model_copy(update={"view": view, "counting_lines": []}))
        intersections.append(intersection.model_copy(update={"cameras": cameras}))
    return site.model_copy(update={"intersections": intersections})


def render_dataset(
    scenario: ResolvedScenario,
    out_dir: Path,
    *,
    frames: int,
    work_dir: Path,
    begin_s: float,
    seed: int,
    frame_interval_s: float = 1.0,
    warmup_s: float = 300.0,
    conditions: str = "random",
    clip_frames: int = 20,
    vary_poses: bool = False,
) -> RenderSummary:
    """Run the scenario and save ``frames`` frames (over all cameras) with labels.

    ``conditions``: ``random`` (new random conditions every ``clip_frames`` frames of a
    camera), ``auto`` (by time of day), or one lighting (``day``, ``dusk``, ``night``).
    """
    from datetime import datetime
    from zoneinfo import ZoneInfo

    day = datetime(2026, 1, 5, tzinfo=ZoneInfo(scenario.site.timezone))
    run = SumoRun(scenario.site, scenario.sumocfg, work_dir, seed=seed,
                  begin_s=begin_s - warmup_s, day=day, track_vehicles=True,
                  queue_detectors=False)
    rng = np.random.default_rng(seed)
    site = vary_camera_poses(scenario.site, rng) if vary_poses else scenario.site
    rig = CameraRig.for_site(site, scenario.sumocfg, seed=seed,
                             fps=1.0 / frame_interval_s)
    records: list[dict[str, Any]] = []
    saved = 0
    boxes = 0
    with run:
        while run.time_s < begin_s - 1e-9:
            run.step()
            rig.observe(run)
        first_crossing = len(rig.crossings)
        while saved < frames and not run.finished():
            run.step()
            if conditions == "random":
                if saved % max(clip_frames * len(rig.cameras), 1) == 0:
                    rig.conditions = Conditions.random(rng)
            elif conditions != "auto":
                rig.conditions = Conditions(lighting=conditions)
            for frame_t, camera_id, image, labels, frame_conditions in rig.frames(run):
                if saved >= frames:
                    break
                name = f"{camera_id}_{rig.seq.get(camera_id, 0):06d}"
                rig.seq[camera_id] = rig.seq.get(camera_id, 0) + 1
                records.append(write_label_files(
                    out_dir, name, image, labels, frame_conditions,
                    {"camera_id": camera_id, "t": round(frame_t, 3),
                     "ts": run.timestamp(frame_t).astimezone(UTC).isoformat()},
                ))
                saved += 1
                boxes += len(labels)
        simulated = run.time_s - begin_s
    crossings = [{"camera_id": camera_id, **event.as_dict()}
                 for camera_id, event in rig.crossings[first_crossing:]]
    write_dataset_index(out_dir, records, crossings)
    return RenderSummary(frames=saved, boxes=boxes, crossings=len(crossings),
                         simulated_s=simulated)
