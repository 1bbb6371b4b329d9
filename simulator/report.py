"""``simpang evaluate --report DIR``: plots and a short Markdown summary of an evaluation.

- ``delay_over_time.png``: mean delay per vehicle by the 5-minute period it wanted to leave
  in, per controller (averaged over seeds);
- ``queue_per_approach.png``: mean queue of each approach, per controller;
- ``plan_changes.png``: the cycle each intersection ran over time, per controller that
  changes plans (first seed);
- ``summary.md``: the measures with their 95 % confidence intervals, the change against the
  fixed programme, the saturation survey, and what the measures mean.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from simulator.evaluate import MEASURES, Evaluation
from simulator.saturation import MIN_SATURATED_S

BIN_MINUTES = 5


def _clock(t_s: float) -> str:
    t_s = int(t_s) % 86400
    return f"{t_s // 3600:02d}:{t_s % 3600 // 60:02d}"


def write_report(evaluation: Evaluation, out: Path) -> list[Path]:
    """Write the report into ``out``; the files written."""
    import matplotlib

    matplotlib.use("Agg")  # files only: servers have no display
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    summary = evaluation.summary()
    controllers = list(summary)
    written = []

    figure, axes = plt.subplots(figsize=(9, 4.5))
    for controller in controllers:
        bins: dict[int, list[float]] = {}
        for run in evaluation.runs:
            if run.controller == controller:
                for minute, delay in run.delay_by_depart_minute.items():
                    bins.setdefault(minute // BIN_MINUTES, []).append(delay)
        periods = sorted(bins)
        axes.plot([(evaluation.begin_s + p * BIN_MINUTES * 60) / 3600 for p in periods],
                  [statistics.fmean(bins[p]) for p in periods], label=controller)
    axes.set_xlabel("time of day (h), by wanted departure")
    axes.set_ylabel("mean delay per vehicle (s)")
    axes.set_title(f"{evaluation.scenario}: delay over time")
    axes.legend()
    figure.tight_layout()
    written.append(out / "delay_over_time.png")
    figure.savefig(written[-1], dpi=100)
    plt.close(figure)

    approaches = sorted({a for run in evaluation.runs for a in run.queue_by_approach_m})
    figure, axes = plt.subplots(figsize=(max(6.0, 1.2 * len(approaches) + 2), 4.5))
    width = 0.8 / max(len(controllers), 1)
    for index, controller in enumerate(controllers):
        mine = [r for r in evaluation.runs if r.controller == controller]
        axes.bar([a + index * width for a in range(len(approaches))],
                 [statistics.fmean(r.queue_by_approach_m.get(a, 0.0) for r in mine)
                  for a in approaches], width, label=controller)
    axes.set_xticks([a + 0.4 - width / 2 for a in range(len(approaches))], approaches,
                    rotation=30, ha="right")
    axes.set_ylabel("mean queue (m)")
    axes.set_title(f"{evaluation.scenario}: queue per approach")
    axes.legend()
    figure.tight_layout()
    written.append(out / "queue_per_approach.png")
    figure.savefig(written[-1], dpi=100)
    plt.close(figure)

    figure, axes = plt.subplots(figsize=(9, 4.5))
    for controller in controllers:
        first = next(r for r in evaluation.runs if r.controller == controller)
        for intersection in sorted({i for _, i, _ in first.plans}):
            changes = [(t, c) for t, i, c in first.plans if i == intersection]
            if len(changes) < 2:
                continue
            times = [t / 3600 for t, _ in changes] + [evaluation.end_s / 3600]
            cycles = [c for _, c in changes] + [changes[-1][1]]
            axes.step(times, cycles, where="post", label=f"{controller} {intersection}")
    axes.set_xlabel("time of day (h)")
    axes.set_ylabel("cycle (s)")
    axes.set_title(f"{evaluation.scenario}: plan changes (seed {evaluation.runs[0].seed})")
    if axes.get_legend_handles_labels()[0]:
        axes.legend()
    else:
        axes.text(0.5, 0.5, "no controller changed plans", ha="center",
                  transform=axes.transAxes)
    figure.tight_layout()
    written.append(out / "plan_changes.png")
    figure.savefig(written[-1], dpi=100)
    plt.close(figure)

    written.append(out / "summary.md")
    written[-1].write_text(_markdown(evaluation), encoding="utf-8")
    return written


def _markdown(evaluation: Evaluation) -> str:
    summary = evaluation.summary()
    seeds = sorted({r.seed for r in evaluation.runs})
    lines = [
        f"# {evaluation.scenario}: signal control, "
        f"{_clock(evaluation.begin_s)}–{_clock(evaluation.end_s)}",
        "",
        f"Seeds {', '.join(map(str, seeds))}; each figure is the mean over seeds ± the half-width "
        "of its 95 % confidence interval (Student's t)."
        + (f" Vehicles that wanted to leave in the first {evaluation.warmup_s:g} s (warm-up: "
           "the network starts empty) are left out." if evaluation.warmup_s else ""),
        "",
        "| controller | delay s/veh | travel time s | mean queue m | max queue m | throughput "
        "| stops/veh | never entered | plan changes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for controller, entry in summary.items():
        cells = [f"{entry[m]:.1f} ± {entry[f'{m}_ci95']:.1f}" for m in MEASURES]
        lines.append(f"| {controller} | " + " | ".join(cells)
                     + f" | {entry['never_departed']} | {entry['plan_changes']} |")
    if "fixed" in summary:
        lines.append("")
        fixed = summary["fixed"]["mean_delay_s"]
        for controller, entry in summary.items():
            if controller != "fixed" and fixed > 0:
                change = entry["mean_delay_s"] / fixed - 1
                lines.append(f"- {controller}: delay {abs(change):.1%} "
                             f"{'lower' if change < 0 else 'higher'} than the fixed programme")
    if evaluation.surveyed:
        lines += ["", "Saturation flows Simpang's plans used (survey at demand × 1.5):", "",
                  "| intersection | approach | lane | saturated green s | PCU/h of green |",
                  "|---|---|---|---|---|"]
        for s in evaluation.surveyed:
            flow = (f"{s.saturation_flow_pcu_per_hour:.0f}"
                    if s.saturated_green_s >= MIN_SATURATED_S and s.pcu > 0
                    else "too little queueing seen: PKJI's formula")
            lines.append(f"| {s.intersection} | {s.approach} | {s.lane} | "
                         f"{s.saturated_green_s:.0f} | {flow} |")
    lines += [
        "", "Delay per vehicle: SUMO timeLoss + departDelay over every vehicle the routes "
        "insert, those still driving at the end and those never inserted included. Queue: "
        "per-minute longest jam over an approach's lanes. Figures: delay_over_time.png, "
        "queue_per_approach.png, plan_changes.png.", ""]
    return "\n".join(lines)
