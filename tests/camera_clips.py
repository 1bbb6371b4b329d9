"""A bundled scenario's camera as a clip: rendered frames with the simulator's ground truth."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np

from simulator.bundled import build_scenario
from simulator.camera import CameraRig, Conditions, LineCrossing
from simulator.stream_io import StreamMessage
from simulator.sumo_run import SumoRun


@dataclass
class Clip:
    site_file: Path
    messages: list[StreamMessage]  # JPEG frames as the simulator publishes them
    crossings: list[LineCrossing]  # after the warm-up

    def write_video(self, path: Path, fps: float = 10.0) -> None:
        images = [cv2.imdecode(np.frombuffer(m.value, np.uint8), cv2.IMREAD_COLOR)
                  for m in self.messages]
        height, width = images[0].shape[:2]
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps,
                                 (width, height))
        for image in images:
            writer.write(image)
        writer.release()


def render_clip(scenario_cache: Path, work_dir: Path, *, camera: str, begin_s: float,
                seconds: float, seed: int, day: datetime, warmup_s: float = 120.0,
                conditions: Conditions | None = None) -> Clip:
    built = build_scenario("four_arm", scenario_cache)
    site = built.site()
    run = SumoRun(site, built.sumocfg, work_dir, seed=seed, begin_s=begin_s - warmup_s,
                  end_s=begin_s + seconds, day=day, track_vehicles=True,
                  queue_detectors=False)
    rig = CameraRig.for_site(site, built.sumocfg, seed=seed, fps=10, conditions=conditions or
                             Conditions("day", noise_sigma=3, jpeg_quality=80))
    rig.cameras = [(i, c) for i, c in rig.cameras if c.camera.id == camera]
    messages = []
    with run:
        while run.time_s < begin_s - 1e-9:
            run.step()
            rig.observe(run)
        first = len(rig.crossings)
        while not run.finished():
            run.step()
            messages.extend(rig.frames_due(run, 0.0))
    return Clip(built.site_file, messages, [e for _, e in rig.crossings[first:]])
