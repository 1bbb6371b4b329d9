"""Reliability figures: every fault scenario of ``tests/fault_rig.py`` on real servers, and a
soak at the design load with the worker's memory sampled.

    .venv/bin/python bench/faults.py [--outage-s 60] [--soak-s 600] [--only NAME ...]
                                     [--repeat N]

Each scenario counts *sent* (readings the broker acknowledged) against *stored* (readings in
InfluxDB's lane rows at the end); see ``tests/fault_rig.py``. Side by side with each fault
run is a control run of the same length with no fault, so the accounting itself is shown to
be exact.

Soak: the design load of ``bench/stream.py`` (1,000 loop detectors, one 1-s reading each per
second, one message per intersection and second) for ``--soak-s`` seconds into one worker
with the production windows (60 s, and 300 s every 60 s). The worker's RSS is read from
``/proc`` every 5 s; growth = the median over the last minute − the median over the minute
after a one-minute warm-up.

``--repeat N`` runs each fault scenario N times (a loss one run in thirty shows only over
many), one control run each, and prints per scenario the runs with readings lost or
duplicated, the worker restarts, and the median and worst of its figure; the JSON then has
the lost readings summed over the runs and the worst figure.

The last line printed is JSON: ``influx_outage_lost``, ``worker_kill_lost``,
``broker_restart_lost``, ``takeover_s``, ``sigterm_flush_s``, ``soak_rss_growth_mb``.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Run as a script, this folder would be first on the path, and its signal.py would shadow the
# standard library's signal module for everything imported after.
sys.path[0] = str(REPO)

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

from tests import fault_rig  # noqa: E402
from tests.fault_rig import Outcome, Rig  # noqa: E402

DESIGN_INTERSECTIONS = 125  # × 8 detectors = 1,000 readings/s


def control(rig: Rig, *, run_s: float) -> Outcome:
    """No fault: one worker, the feeder for ``run_s``."""
    rig.start_worker()
    feeder = rig.start_feeder()
    rig.wait_first_rows()
    time.sleep(run_s)
    return fault_rig.finish(rig, feeder)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def soak(rig: Rig, *, soak_s: float) -> tuple[Outcome, dict[str, float]]:
    worker = rig.start_worker()
    feeder = rig.start_feeder()
    samples: list[tuple[float, float]] = []
    started = time.monotonic()
    while time.monotonic() - started < soak_s:
        time.sleep(5)
        rig.check_workers()
        samples.append((time.monotonic() - started, rss_mb(worker.process.pid)))
    outcome = fault_rig.finish(rig, feeder, timeout_s=180)
    warm = [mb for t, mb in samples if 60 <= t < 120]
    last = [mb for t, mb in samples if t >= soak_s - 60]
    memory = {
        "rss_start_mb": round(statistics.median(warm), 1),
        "rss_end_mb": round(statistics.median(last), 1),
        "rss_max_mb": round(max(mb for _, mb in samples), 1),
    }
    memory["rss_growth_mb"] = round(memory["rss_end_mb"] - memory["rss_start_mb"], 1)
    return outcome, memory


def line(name: str, outcome: Outcome, baseline: Outcome | None = None) -> None:
    timings = " ".join(f"{k}={v:.1f}" for k, v in outcome.timings_s.items())
    text = (f"{name:<16} sent {outcome.sent:>7}  stored {outcome.stored:>7}  lost "
            f"{outcome.lost:>5}  duplicated {outcome.duplicated:>4}  {timings}")
    if baseline is not None:
        text += (f"   | control: sent {baseline.sent} stored {baseline.stored} "
                 f"lost {baseline.lost}")
    print(text, flush=True)


def summary(name: str, runs: list[Outcome]) -> None:
    restarts = sum(len(o.notes.get("worker_restarts", [])) for o in runs)
    text = (f"{name}: {len(runs)} runs, {sum(o.lost > 0 for o in runs)} lost readings "
            f"({sum(o.lost for o in runs)} in all), {sum(o.duplicated > 0 for o in runs)} "
            f"duplicated, {restarts} worker restarts")
    for key in runs[0].timings_s:
        values = [o.timings_s[key] for o in runs]
        text += f", {key} median {statistics.median(values):.1f} max {max(values):.1f}"
    print(text, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--outage-s", type=float, default=60.0)
    parser.add_argument("--soak-s", type=float, default=600.0)
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()

    scenarios: dict[str, tuple[Callable[[Rig], Outcome], dict[str, Any], float]] = {
        # name: (scenario, Rig options, the control run's length in seconds)
        "influx_outage": (lambda r: fault_rig.influx_outage(r, outage_s=args.outage_s), {},
                          args.outage_s + 10),
        "worker_kill": (fault_rig.worker_kill, {}, 25),
        "takeover": (fault_rig.takeover, {}, 25),
        "broker_restart": (fault_rig.broker_restart, {"durable": True}, 23),
        "sigterm": (fault_rig.sigterm, {}, 13),
        "bad_input": (fault_rig.bad_input, {}, 13),
    }
    results: dict[str, list[Outcome]] = {}
    for name, (scenario, options, control_s) in scenarios.items():
        if args.only and name not in args.only:
            continue
        with Rig(**options) as rig:
            baseline = control(rig, run_s=control_s)
        runs = results[name] = []
        for run in range(args.repeat):
            with Rig(**options) as rig:
                runs.append(scenario(rig))
            line(name if run == 0 else f"{name} #{run + 1}", runs[-1],
                 baseline if run == 0 else None)
            if runs[-1].notes:
                print(f"{'':<16} {runs[-1].notes}", flush=True)
        if args.repeat > 1:
            summary(name, runs)

    memory: dict[str, float] = {}
    if not args.only or "soak" in args.only:
        with Rig(intersections=DESIGN_INTERSECTIONS, windows="60,300/60", count_window_s=60,
                 grace_s=5) as rig:
            outcome, memory = soak(rig, soak_s=args.soak_s)
        line("soak", outcome)
        print(f"{'':<16} {args.soak_s:.0f} s at {DESIGN_INTERSECTIONS * 8} readings/s: "
              f"worker RSS {memory}", flush=True)

    def lost(name: str) -> int | None:
        return sum(o.lost for o in results[name]) if name in results else None

    def timing(name: str, key: str) -> float | None:
        return round(max(o.timings_s[key] for o in results[name]), 1) if name in results else None

    print(json.dumps({
        "influx_outage_lost": lost("influx_outage"),
        "worker_kill_lost": lost("worker_kill"),
        "broker_restart_lost": lost("broker_restart"),
        "takeover_s": timing("takeover", "takeover_s"),
        "sigterm_flush_s": timing("sigterm", "sigterm_exit_s"),
        "soak_rss_growth_mb": memory.get("rss_growth_mb"),
    }))


if __name__ == "__main__":
    main()
