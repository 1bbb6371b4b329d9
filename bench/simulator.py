"""Benchmark of the simulator: SUMO speed with detectors publishing, and camera render rate.

    .venv/bin/python bench/simulator.py [--sim-s 1800] [--frames 600]

Pinned to one CPU core (SUMO, Python and OpenCV all on it).

``sim_speedup``: simulated seconds per wall second for the bundled four-arm scenario from
17:00 (the evening peak) with its eight loop detectors reporting every 60 s, each reading
published to a real Kafka-protocol broker (Tansu, started here on a free port) and
acknowledged. Baseline beside it: the same run with SUMO alone (no detectors read, nothing
published).

``render_fps``: 640×360 frames per wall second from the four cameras of that scenario at
the peak, with random conditions (night, rain, noise, blur) and JPEG encoding, SUMO stepping
included. Baseline beside it: plain day frames without noise, blur or JPEG.

The last line printed is JSON: ``{"sim_speedup": X, "render_fps": Y, "baseline": {...}}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path and its name would hide the
# ``simulator`` package.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

import cv2

from simpang.settings import Settings
from simulator.bundled import build_scenario
from simulator.camera import CameraRig, Conditions
from simulator.simulate import latest_day_ending_before, run_simulation
from simulator.stream_io import KafkaSink
from simulator.sumo_run import SumoRun
from streams.embedded import TansuBroker

PEAK_S = 17 * 3600


def _sim(work: Path, *, duration_s: float, broker: str | None) -> tuple[float, int]:
    built = build_scenario("four_arm", work / "scenarios")
    site = built.site()
    if broker is None:
        site = site.model_copy(update={"intersections": [
            i.model_copy(update={"sensors": []}) for i in site.intersections]})
    day = latest_day_ending_before(datetime.now(UTC), PEAK_S + duration_s, site.timezone)
    run = SumoRun(site, built.sumocfg, work / "run", seed=1, begin_s=PEAK_S,
                  end_s=PEAK_S + duration_s, interval_s=60, day=day, queue_detectors=False)

    async def go() -> tuple[float, int]:
        sinks = []
        sink = None
        if broker is not None:
            settings = Settings(kafka={"brokers": broker})  # type: ignore[arg-type]
            sink = KafkaSink(settings)
            await sink.start()
            sinks.append(sink)
        started = time.perf_counter()
        with run:
            summary = await run_simulation(run, sinks, speed=None)
        if sink is not None:
            await sink.close()
        wall = time.perf_counter() - started
        return summary.simulated_s / wall, summary.readings

    return asyncio.run(go())


def _render(work: Path, *, frames: int, plain: bool) -> float:
    built = build_scenario("four_arm", work / "scenarios")
    site = built.site()
    run = SumoRun(site, built.sumocfg, work / "render", seed=1, begin_s=PEAK_S - 120,
                  day=datetime(2026, 1, 5, tzinfo=UTC), track_vehicles=True,
                  queue_detectors=False)
    rig = CameraRig.for_site(site, built.sumocfg, seed=1, fps=2.0)
    with run:
        while run.time_s < PEAK_S:
            run.step()
            rig.observe(run)
        rendered = 0
        started = time.perf_counter()
        while rendered < frames:
            rig.conditions = (Conditions("day", noise_sigma=0) if plain else
                              Conditions.random(rig.rng))
            run.step()
            if plain:
                rendered += len(rig.frames(run))
            else:
                rendered += len(rig.frames_due(run, run.time_s))
        wall = time.perf_counter() - started
    return rendered / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sim-s", type=float, default=1800.0)
    parser.add_argument("--frames", type=int, default=600)
    args = parser.parse_args()
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory() as tmp, TansuBroker() as broker:
        work = Path(tmp)
        speedup, readings = _sim(work / "a", duration_s=args.sim_s, broker=broker.bootstrap)
        alone, _ = _sim(work / "b", duration_s=args.sim_s, broker=None)
        print(f"sim four_arm 17:00 +{args.sim_s:g} s, loops publishing to Tansu: "
              f"{speedup:.0f}x real time ({readings} readings)")
        print(f"sim baseline, SUMO alone: {alone:.0f}x real time")
        fps = _render(work / "c", frames=args.frames, plain=False)
        plain_fps = _render(work / "d", frames=args.frames, plain=True)
        print(f"render 640x360, random conditions + JPEG, one core: {fps:.0f} frames/s")
        print(f"render baseline, plain day, no noise/blur/JPEG: {plain_fps:.0f} frames/s")
    print(json.dumps({"sim_speedup": round(speedup, 1), "render_fps": round(fps, 1),
                      "baseline": {"sim_speedup_sumo_alone": round(alone, 1),
                                   "render_fps_plain": round(plain_fps, 1)}}))


if __name__ == "__main__":
    main()
