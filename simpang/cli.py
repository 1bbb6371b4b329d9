"""The ``simpang`` command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from simpang.schema import ALL_MEASUREMENTS
from simpang.settings import Settings
from simpang.site_file import SiteFileError, load_site
from simulator.cli import scenario_app, simulate_app

app = typer.Typer(
    help="Simpang: real-time smart-traffic stream processing.", no_args_is_help=True,
    pretty_exceptions_enable=False,
)
site_app = typer.Typer(help="Site files.", no_args_is_help=True)
app.add_typer(site_app, name="site")
app.add_typer(scenario_app, name="scenario")
app.add_typer(simulate_app, name="simulate")
console = Console()


@app.command()
def worker(
    shutdown_timeout: Annotated[float, typer.Option(help="Seconds to exit after SIGTERM.")] = 15.0,
) -> None:
    """Run one stream-processing worker (Faust) with the configured settings."""
    from streams.worker import run_worker

    run_worker(Settings(), shutdown_timeout_s=shutdown_timeout)


@app.command()
def demo(
    duration: Annotated[float, typer.Option(help="Wall-clock seconds to run.")] = 60.0,
    out: Annotated[Path, typer.Option(help="Where metrics.lp and summary.json go.")] = Path(
        "demo-out"
    ),
    scenario: Annotated[str, typer.Option(
        help="Bundled SUMO scenario (four_arm, t_junction, corridor) or a site file with a "
             "simulation section.")] = "four_arm",
    speed: Annotated[float, typer.Option(help="Simulated seconds per wall second.")] = 30.0,
    begin: Annotated[str | None, typer.Option(
        help="Simulate from this time of day, HH:MM, on the latest day it is past "
             "(default: end now).")] = None,
    seed: Annotated[int, typer.Option(help="SUMO's random seed (and the faults').")] = 7,
    faults: Annotated[float, typer.Option(
        help="Share of readings broken on purpose, to show the dead-letter path.")] = 0.01,
    live: Annotated[bool, typer.Option(help="Show the live terminal view.")] = True,
) -> None:
    """Embedded broker + worker + a SUMO scenario's detectors, with a live view."""
    from simpang.demo import run_demo
    from simulator.simulate import parse_time_of_day
    from simulator.sumo_tools import SumoError
    from streams.embedded import ServerStartError

    try:
        begin_s = parse_time_of_day(begin) if begin is not None else None
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--begin") from None
    if not 0.0 <= faults <= 1.0:
        raise typer.BadParameter("must be within [0, 1]", param_hint="--faults")
    try:
        summary = run_demo(Settings(), scenario=scenario, duration_s=duration, out_dir=out,
                           speed=speed, seed=seed, begin_s=begin_s, fault_fraction=faults,
                           live=live, console=console)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: broker and worker stopped[/yellow]")
        raise typer.Exit(130) from None
    except (ServerStartError, SumoError) as exc:
        console.print(f"could not start: {exc}", style="red", markup=False)
        raise typer.Exit(1) from None
    console.print()
    console.print_json(json.dumps(summary))


@site_app.command("validate")
def site_validate(path: Path) -> None:
    """Check a site file; print what it holds or every problem in it."""
    try:
        site = load_site(path)
    except SiteFileError as exc:
        console.print(str(exc), style="red", markup=False, highlight=False)
        raise typer.Exit(1) from None
    table = Table(title=f"{site.name} ({site.id})")
    for column in ("intersection", "approaches", "lanes", "phases", "cycle s", "sensors"):
        table.add_column(column)
    for i in site.intersections:
        table.add_row(
            f"{i.id}: {i.name}",
            str(len(i.approaches)),
            str(sum(len(a.lanes) for a in i.approaches)),
            str(len(i.phases)),
            f"{i.plan.cycle_s:g}",
            str(len(i.sensors)),
        )
    console.print(table)


@app.command()
def schema() -> None:
    """Print the InfluxDB measurement schema (measurements, tags, fields, units)."""
    for measurement in ALL_MEASUREMENTS:
        table = Table(title=f"{measurement.name}: tags {', '.join(measurement.tags)}")
        for column in ("field", "type", "unit", "description"):
            table.add_column(column)
        for field in measurement.fields:
            table.add_row(field.name, field.type, field.unit, field.description)
        console.print(table)
        console.print(measurement.description)


@app.command("settings")
def show_settings() -> None:
    """Print the effective settings as JSON, secrets redacted."""
    console.print_json(json.dumps(Settings().redacted(), default=str))


if __name__ == "__main__":
    app()
