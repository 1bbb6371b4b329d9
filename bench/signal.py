"""Benchmark of signal control: every bundled scenario in closed loop under each controller.

    .venv/bin/python bench/signal.py [--seeds 5] [--begin 06:00] [--duration SECONDS]
                                     [--scenarios four_arm,t_junction,corridor] [--jobs 2]

Runs ``simpang evaluate``'s evaluation (``simulator.evaluate``) on each bundled scenario over
the same simulated span (by default the scenario's whole day, 06:00–24:00, both peaks
included), seeds 1..N, controllers fixed (the scenario's own programme), actuated (SUMO's
actuated control over the same phases), max-pressure (Varaiya, 20 s slots), Simpang's plan
mode and Simpang's adaptive mode. Simpang's controllers use saturation flows from a survey
run of the same span with its own seed (never an evaluation seed). ``--jobs`` runs that many
simulations at a time, one per process.

Delay is SUMO's ``timeLoss`` + ``departDelay`` per vehicle, vehicles still driving or never
inserted at the end included (see ``simulator/evaluate.py``).

The last line printed is JSON: ``{"scenarios": {NAME: {CONTROLLER: {"mean_delay_s": D,
"ci95": C, ...}}}, "adaptive_vs_fixed_delay_reduction": R, "adaptive_beats_actuated": …,
"adaptive_beats_max_pressure": …}`` where R is the smallest reduction over the scenarios (the
target is met on every scenario when R ≥ 0.25; each scenario's is in
``adaptive_vs_fixed_delay_reduction_by_scenario``) and "beats" compares the mean delay
averaged over the scenarios.
"""

from __future__ import annotations

import argparse
import json
import statistics
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


def reduction(summary: dict[str, dict[str, float]], controller: str) -> float | None:
    if controller not in summary or "fixed" not in summary:
        return None
    return round(1 - summary[controller]["mean_delay_s"] / summary["fixed"]["mean_delay_s"], 3)


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
    parser.add_argument("--jobs", type=int, default=1, help="simulations at a time")
    args = parser.parse_args()
    controllers = args.controllers.split(",")
    out: dict[str, dict[str, dict[str, float]]] = {}
    plan_reduction: dict[str, float | None] = {}
    adaptive_reduction: dict[str, float | None] = {}
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
                begin_s=begin_s, end_s=end_s, warmup_s=args.warmup, jobs=args.jobs,
                on_run=lambda r, name=name: print(
                    f"  {name} {r.controller:>16} seed {r.seed}: {r.mean_delay_s:.1f} s/veh",
                    flush=True))
            summary = evaluation.summary()
            out[name] = {c: {k: v for k, v in entry.items() if k != "seeds"}
                         for c, entry in summary.items()}
            print(f"{name} ({time.monotonic() - started:.0f} s, "
                  f"{evaluation.begin_s / 3600:.1f} h–{evaluation.end_s / 3600:.1f} h, "
                  f"{args.seeds} seeds):")
            for controller, entry in summary.items():
                print(f"  {controller:>16}: delay {entry['mean_delay_s']:.1f} ± "
                      f"{entry['ci95']:.1f} s/veh, travel {entry['mean_travel_time_s']:.1f} s, "
                      f"queue {entry['mean_queue_m']:.1f} m (max {entry['max_queue_m']:.0f}), "
                      f"throughput {entry['throughput_veh']:.0f}, stops "
                      f"{entry['mean_stops']:.2f}", flush=True)
            plan_reduction[name] = reduction(summary, "simpang-plan")
            adaptive_reduction[name] = reduction(summary, "simpang-adaptive")
            for controller, value in (("simpang-plan", plan_reduction[name]),
                                      ("simpang-adaptive", adaptive_reduction[name])):
                if value is not None:
                    print(f"  {controller} vs fixed: {value:+.1%} delay reduction")

    def average(controller: str) -> float | None:
        values = [entry[controller]["mean_delay_s"] for entry in out.values()
                  if controller in entry]
        return statistics.fmean(values) if len(values) == len(out) else None

    adaptive = average("simpang-adaptive")
    beats = {}
    for baseline in ("actuated", "max-pressure"):
        other = average(baseline)
        beats[baseline] = None if adaptive is None or other is None else adaptive < other
    reductions = [r for r in adaptive_reduction.values() if r is not None]
    print(json.dumps({
        "scenarios": out,
        "simpang_plan_vs_fixed_delay_reduction": plan_reduction,
        "adaptive_vs_fixed_delay_reduction": min(reductions) if reductions else None,
        "adaptive_vs_fixed_delay_reduction_by_scenario": adaptive_reduction,
        "mean_delay_over_scenarios_s": {c: None if average(c) is None else round(average(c), 2)
                                        for c in controllers},
        "adaptive_beats_actuated": beats["actuated"],
        "adaptive_beats_max_pressure": beats["max-pressure"],
    }))


if __name__ == "__main__":
    main()
