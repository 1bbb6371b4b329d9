"""``simpang simulate run``: step SUMO, publish detector readings (and camera frames) with
simulated timestamps, as fast as asked.

Which scenario: a bundled one by name (built into the data directory) or any site file whose
``simulation.sumocfg`` names a SUMO configuration (``simpang scenario import`` writes those).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol
from zoneinfo import ZoneInfo

from simpang.site import Site
from simpang.site_file import load_site
from simpang.vehicles import VehicleClass
from simulator.bundled import build_scenario, scenario_names
from simulator.stream_io import MessageSink, Pacer, StreamMessage
from simulator.sumo_run import SumoRun
from simulator.sumo_tools import SumoError


@dataclass(frozen=True)
class ResolvedScenario:
    name: str
    site: Site
    site_file: Path
    sumocfg: Path


def resolve_scenario(scenario: str, cache_dir: Path,
                     mix: Mapping[VehicleClass, float] | None = None) -> ResolvedScenario:
    """A bundled scenario's name (``mix``: see :func:`build_scenario`), or a site file with a
    ``simulation`` section."""
    if scenario in scenario_names():
        built = build_scenario(scenario, cache_dir, mix)
        return ResolvedScenario(scenario, built.site(), built.site_file, built.sumocfg)
    site_file = Path(scenario)
    if mix is not None:
        raise SumoError(f"{scenario!r}: a vehicle mix applies to bundled scenarios only")
    if not site_file.exists():
        raise SumoError(
            f"{scenario!r} is neither a bundled scenario ({', '.join(scenario_names())}) "
            "nor a site file"
        )
    site = load_site(site_file)
    if site.simulation is None:
        raise SumoError(f"{site_file}: no simulation section (import a .sumocfg to make one)")
    sumocfg = (site_file.parent / site.simulation.sumocfg).resolve()
    return ResolvedScenario(site_file.stem, site, site_file, sumocfg)


def parse_time_of_day(text: str) -> float:
    """``HH:MM`` or ``HH:MM:SS`` → seconds since midnight.

    >>> parse_time_of_day("07:30")
    27000
    """
    try:
        parts = [int(p) for p in text.split(":")]
    except ValueError:
        parts = []
    if (len(parts) not in (2, 3) or not 0 <= parts[0] <= 24
            or not all(0 <= p < 60 for p in parts[1:])):
        raise ValueError(f"{text!r} is not a time of day like 07:30")
    return parts[0] * 3600 + parts[1] * 60 + (parts[2] if len(parts) == 3 else 0)


def latest_day_ending_before(now: datetime, end_s: float, timezone: str) -> datetime:
    """Local midnight of the latest day on which simulated second ``end_s`` is not in the
    future, so published timestamps are never ahead of the clock.

    >>> from datetime import UTC
    >>> latest_day_ending_before(datetime(2026, 11, 24, 1, 0, tzinfo=UTC), 9 * 3600,
    ...                          "Asia/Makassar").isoformat()
    '2026-11-24T00:00:00+08:00'
    >>> latest_day_ending_before(datetime(2026, 11, 24, 0, 0, tzinfo=UTC), 9 * 3600,
    ...                          "Asia/Makassar").isoformat()
    '2026-11-23T00:00:00+08:00'
    """
    local = now.astimezone(ZoneInfo(timezone))
    day = datetime(local.year, local.month, local.day, tzinfo=ZoneInfo(timezone))
    while day + timedelta(seconds=end_s) > now:
        day = datetime.combine((day - timedelta(days=1)).date(), day.timetz())
    return day


class FrameSource(Protocol):
    """Something that turns the simulation's vehicles into camera frames (the virtual
    cameras); called after every step."""

    def frames_due(self, run: SumoRun, t_run_s: float) -> list[StreamMessage]: ...


@dataclass
class RunSummary:
    simulated_s: float
    wall_s: float
    steps: int
    reading_messages: int
    readings: int
    frames: int

    @property
    def speedup(self) -> float:
        return self.simulated_s / self.wall_s if self.wall_s > 0 else float("inf")


async def run_simulation(
    run: SumoRun,
    sinks: list[MessageSink],
    *,
    speed: float | None,
    frames: FrameSource | None = None,
    on_interval: Callable[[float, RunSummary], None] | None = None,
) -> RunSummary:
    """Step ``run`` (already started) to its end, sending every message to every sink."""
    pacer = Pacer(speed)
    wall_start = time.perf_counter()
    summary = RunSummary(0.0, 0.0, 0, 0, 0, 0)
    begin = run.time_s
    while not run.finished():
        t_s = run.step()
        summary.steps += 1
        t_run = t_s - begin
        due = run.messages_due()
        messages = [StreamMessage(t_run, "sensor_readings", m.key, m.payload) for m in due]
        summary.reading_messages += len(due)
        summary.readings += sum(m.readings for m in due)
        if frames is not None:
            frame_messages = frames.frames_due(run, t_run)
            summary.frames += len(frame_messages)
            messages += frame_messages
        if messages or summary.steps % 20 == 0:
            await pacer.wait_for(t_run)
        for message in messages:
            for sink in sinks:
                await sink.send(message)
        summary.simulated_s = t_run
        if messages and on_interval is not None and messages[0].topic == "sensor_readings":
            summary.wall_s = time.perf_counter() - wall_start
            on_interval(t_s, summary)
    summary.wall_s = time.perf_counter() - wall_start
    return summary
