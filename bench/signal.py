"""Benchmark of signal control: every bundled scenario in closed loop under each controller.

    .venv/bin/python bench/signal.py [--seeds 5] [--begin 06:00] [--duration SECONDS]
                                     [--scenarios four_arm,t_junction,corridor]

Runs ``simpang evaluate``'s evaluation (``simulator.evaluate``) on each bundled scenario over
the same simulated span (by default the scenario's whole day, 06:00–24:00, both peaks
included), seeds 1..N, controllers fixed (the scenario's own programme), actuated (SUMO's
actuated control over the same phases), max-pressure (Varaiya, 20 s slots) and Simpang's
plan mode. Simpang's plans use saturation flows from a survey run of the same span with its
own seed (never an evaluation seed).

Delay is SUMO's ``timeLoss`` + ``departDelay`` per vehicle, vehicles still driving or never
inserted at the end included (see ``simulator/evaluate.py``).

The last line printed is JSON: ``{"scenarios": {NAME: {CONTROLLER: {"mean_delay_s": D,
"ci95": C, ...}}}, "simpang_plan_vs_fixed_delay_reduction": {NAME: R},
"adaptive_vs_fixed_delay_reduction": R, "adaptive_beats_actuated": …,
"adaptive_beats_max_pressure": …}``; the adaptive figures are ``null`` while the adaptive
controller is not built.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

from simulator.bundled import build_scenario, scenario_names
from simulator.evaluate import CONTROLLERS, evaluate
from simulator.simulate import parse_time_of_day
from simulator.sumo_tools import read_sumocfg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--begin", default=None, help="HH:MM (default: the scenario's begin)")
    parser.add_argument("--duration", type=float, default=None,
                        help="simulated seconds (default: to the scenario's end)")
    parser.add_argument("--warmup", type=float, default=0.0,
                        help="simulated seconds left out of the measures at the start")
    parser.add_argument("--scenarios", default=",".join(scenario_names()))
    parser.add_argument("--controllers", default=",".join(CONTROLLERS))
    args = parser.parse_args()
    controllers = args.controllers.split(",")
    out: dict[str, dict[str, dict[str, float]]] = {}
    reduction: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="simpang-bench-signal-") as tmp:
        for name in args.scenarios.split(","):
            built = build_scenario(name, Path(tmp) / "scenarios")
            begin_s = (parse_time_of_day(args.begin) if args.begin
                       else read_sumocfg(built.sumocfg).begin_s)
            end_s = begin_s + args.duration if args.duration else None
            started = time.monotonic()
            evaluation = evaluate(
                built.site(), built.sumocfg, Path(tmp) / name, scenario=name,
                controllers=controllers, seeds=list(range(1, args.seeds + 1)),
                begin_s=begin_s, end_s=end_s, warmup_s=args.warmup,
                on_run=lambda r: print(f"  {r.controller:>13} seed {r.seed}: "
                                       f"{r.mean_delay_s:.1f} s/veh", flush=True))
            summary = evaluation.summary()
            out[name] = {c: {k: v for k, v in entry.items() if k != "seeds"}
                         for c, entry in summary.items()}
            print(f"{name} ({time.monotonic() - started:.0f} s, "
                  f"{evaluation.begin_s / 3600:.1f} h–{evaluation.end_s / 3600:.1f} h):")
            for controller, entry in summary.items():
                print(f"  {controller:>13}: delay {entry['mean_delay_s']:.1f} ± "
                      f"{entry['ci95']:.1f} s/veh, travel {entry['mean_travel_time_s']:.1f} s, "
                      f"queue {entry['mean_queue_m']:.1f} m (max {entry['max_queue_m']:.0f}), "
                      f"throughput {entry['throughput_veh']:.0f}, stops "
                      f"{entry['mean_stops']:.2f}", flush=True)
            if "fixed" in summary and "simpang-plan" in summary:
                reduction[name] = round(1 - summary["simpang-plan"]["mean_delay_s"]
                                        / summary["fixed"]["mean_delay_s"], 3)
                print(f"  simpang-plan vs fixed: {reduction[name]:+.1%} delay reduction")
    print(json.dumps({
        "scenarios": out,
        "simpang_plan_vs_fixed_delay_reduction": reduction,
        "adaptive_vs_fixed_delay_reduction": None,
        "adaptive_beats_actuated": None,
        "adaptive_beats_max_pressure": None,
    }))


if __name__ == "__main__":
    main()
