"""``simpang scenario …`` and ``simpang simulate …`` commands."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from simpang.settings import Settings

scenario_app = typer.Typer(help="SUMO scenarios: import any .sumocfg, list and build bundled ones.",
                           no_args_is_help=True)
simulate_app = typer.Typer(help="Run, record and replay simulated intersections.",
                           no_args_is_help=True)
console = Console(soft_wrap=True)


def _fail(message: str) -> typer.Exit:
    console.print(message, style="red", markup=False, highlight=False)
    return typer.Exit(1)


def _parse_clock(text: str) -> float:
    from simulator.simulate import parse_time_of_day

    try:
        return parse_time_of_day(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


@scenario_app.command("import")
def scenario_import(
    sumocfg: Annotated[Path, typer.Argument(help="Any SUMO configuration file.")],
    out: Annotated[Path | None, typer.Option(help="Site file to write; stdout if unset.")] = None,
    site_id: Annotated[str | None, typer.Option(help="Site id (default: the file's name).")] = None,
    name: Annotated[str | None, typer.Option(help="Site name.")] = None,
    origin: Annotated[str, typer.Option(
        help="LAT,LON of the network's (0, 0) when it has no geo-reference.")] = "0,0",
    timezone: Annotated[str, typer.Option(help="IANA time zone of the site.")] = "Asia/Makassar",
) -> None:
    """Find the signalised intersections of a SUMO scenario and write a Simpang site file."""
    from simulator.importer import import_sumocfg, site_to_yaml
    from simulator.sumo_tools import SumoError

    try:
        lat, lon = (float(v) for v in origin.split(","))
    except ValueError:
        raise _fail(f"--origin {origin!r}: expected LAT,LON like -0.47,117.15") from None
    try:
        result = import_sumocfg(
            sumocfg, site_id=site_id, site_name=name, origin_lat_lon=(lat, lon),
            timezone=timezone, site_file_dir=out.parent if out else Path.cwd(),
        )
    except (SumoError, ValueError) as exc:
        raise _fail(str(exc)) from None
    for warning in result.warnings:
        console.print(f"warning: {warning}", style="yellow", markup=False, highlight=False)
    text = site_to_yaml(result.site)
    if out is None:
        typer.echo(text)
        return
    out.write_text(f"# Imported from {sumocfg} by `simpang scenario import`.\n" + text,
                   encoding="utf-8")
    intersections = result.site.intersections
    console.print(
        f"wrote {out}: {len(intersections)} intersections, "
        f"{sum(len(i.approaches) for i in intersections)} approaches, "
        f"{sum(len(i.sensors) for i in intersections)} loops, "
        f"{sum(len(i.cameras) for i in intersections)} cameras",
        markup=False, highlight=False,
    )


@scenario_app.command("list")
def scenario_list() -> None:
    """The bundled scenarios."""
    import yaml

    from simulator.bundled import SCENARIO_ROOT, scenario_names

    for scenario in scenario_names():
        meta = yaml.safe_load((SCENARIO_ROOT / scenario / "scenario.yaml").read_text())
        console.print(f"{scenario}: {meta['title']} — {meta['site_name']}", markup=False)


@scenario_app.command("build")
def scenario_build(
    name: str,
    site_out: Annotated[Path | None, typer.Option(
        help="Also copy the site file here (a fixed path the workers can be pointed at).")
    ] = None,
) -> None:
    """Build a bundled scenario (netconvert, routes, site file); print where it is."""
    from simulator.bundled import build_scenario
    from simulator.sumo_tools import SumoError

    try:
        built = build_scenario(name, Settings().data_dir / "scenarios")
    except SumoError as exc:
        raise _fail(str(exc)) from None
    if site_out is not None:
        site_out.parent.mkdir(parents=True, exist_ok=True)
        site_out.write_bytes(built.site_file.read_bytes())
    typer.echo(json.dumps({"sumocfg": str(built.sumocfg), "site_file": str(built.site_file)}))


@simulate_app.command("run")
def simulate_run(
    scenario: Annotated[str, typer.Option(
        help="Bundled scenario name or a site file with a simulation section.")] = "four_arm",
    duration: Annotated[float, typer.Option(help="Simulated seconds to run.")] = 3600.0,
    speed: Annotated[float, typer.Option(
        help="Simulated seconds per wall second; 0 = as fast as possible.")] = 0.0,
    begin: Annotated[str | None, typer.Option(
        help="Time of day to start, HH:MM (default: the scenario's begin).")] = None,
    seed: Annotated[int, typer.Option(help="SUMO's random seed.")] = 42,
    interval: Annotated[float, typer.Option(help="Detector interval, seconds.")] = 60.0,
    cameras: Annotated[bool, typer.Option(help="Publish virtual camera JPEG frames too.")] = False,
    camera_fps: Annotated[float | None, typer.Option(
        help="Frames per simulated second of every camera (default: each camera's fps).")
    ] = None,
    record: Annotated[Path | None, typer.Option(help="Also write the stream to this file.")] = None,
    kafka: Annotated[bool, typer.Option(help="Publish to Kafka (--no-kafka: files only).")] = True,
    out: Annotated[Path | None, typer.Option(help="With --no-kafka: write files here.")] = None,
    via: Annotated[str, typer.Option(
        help="How the field devices send their readings: kafka, http (a worker's "
             "/v1/readings) or mqtt (for simpang mqtt-bridge). Frames always go to Kafka.")
    ] = "kafka",
    http_url: Annotated[str | None, typer.Option(
        help="With --via http: the worker's web address, e.g. http://127.0.0.1:6066.")] = None,
    token: Annotated[str | None, typer.Option(
        envvar="SIMPANG_DEVICE_TOKEN",
        help="With --via http: a device token whose scope covers the site's devices.")] = None,
) -> None:
    """Run a SUMO scenario and publish its detector readings (and camera frames)."""
    from simulator.simulate import latest_day_ending_before, resolve_scenario, run_simulation
    from simulator.stream_io import (
        DirectorySink,
        FramesOnly,
        HttpDeviceSink,
        KafkaSink,
        MessageSink,
        MqttDeviceSink,
        RecordSink,
    )
    from simulator.sumo_run import SumoRun
    from simulator.sumo_tools import SumoError, read_sumocfg

    settings = Settings()
    if not kafka and out is None and record is None:
        raise _fail("--no-kafka needs --out DIR (or --record FILE)")
    if via not in ("kafka", "http", "mqtt"):
        raise _fail(f"--via {via!r}: choose kafka, http or mqtt")
    if via == "http" and not (http_url and token):
        raise _fail("--via http needs --http-url and --token (or SIMPANG_DEVICE_TOKEN)")
    try:
        resolved = resolve_scenario(scenario, settings.data_dir / "scenarios")
        begin_s = _parse_clock(begin) if begin else read_sumocfg(resolved.sumocfg).begin_s
    except (SumoError, ValueError) as exc:
        raise _fail(str(exc)) from None
    day = latest_day_ending_before(datetime.now(UTC), begin_s + duration, resolved.site.timezone)
    run = SumoRun(resolved.site, resolved.sumocfg, settings.data_dir / "runs" / resolved.name,
                  seed=seed, begin_s=begin_s, end_s=begin_s + duration, interval_s=interval,
                  day=day, track_vehicles=cameras)
    header: dict[str, Any] = {"scenario": resolved.name, "seed": seed, "begin_s": begin_s,
                              "day": day.isoformat(), "interval_s": interval}

    async def go() -> dict[str, Any]:
        sinks: list[MessageSink] = []
        kafka_sink = KafkaSink(settings) if kafka else None
        device_sink: HttpDeviceSink | MqttDeviceSink | None = None
        try:
            if kafka_sink is not None:
                await kafka_sink.start()
                # Readings go one way only: straight to Kafka, or through HTTP/MQTT.
                sinks.append(kafka_sink if via == "kafka" else FramesOnly(kafka_sink))
            if via == "http":
                assert http_url is not None and token is not None
                device_sink = HttpDeviceSink(http_url, token)
            elif via == "mqtt":
                device_sink = MqttDeviceSink(settings, resolved.site.id)
            if device_sink is not None:
                sinks.append(device_sink)
            if record is not None:
                sinks.append(RecordSink(record, header))
            if out is not None:
                sinks.append(DirectorySink(out))
            frames = None
            if cameras:
                from simulator.camera import CameraRig

                frames = CameraRig.for_site(resolved.site, resolved.sumocfg, seed=seed,
                                            fps=camera_fps)
            with run:
                summary = await run_simulation(
                    run, sinks, speed=speed or None, frames=frames,
                    on_interval=lambda t, s: console.print(
                        f"{_clock(t)}  {s.readings} readings, {s.frames} frames, "
                        f"{s.simulated_s / max(s.wall_s, 1e-9):.0f}x", markup=False,
                        highlight=False),
                )
        finally:
            for sink in sinks:
                await sink.close()
        result = {"scenario": resolved.name, "simulated_s": summary.simulated_s,
                  "wall_s": round(summary.wall_s, 2), "speedup": round(summary.speedup, 1),
                  "reading_messages": summary.reading_messages, "readings": summary.readings,
                  "frames": summary.frames, "via": via}
        if isinstance(device_sink, HttpDeviceSink):
            result["http_accepted"] = device_sink.accepted
            result["http_refused"] = device_sink.refused
        elif isinstance(device_sink, MqttDeviceSink):
            result["mqtt_published"] = device_sink.published
        return result

    try:
        result = asyncio.run(go())
    except SumoError as exc:
        raise _fail(str(exc)) from None
    typer.echo(json.dumps(result))


@simulate_app.command("replay")
def simulate_replay(
    record: Annotated[Path, typer.Argument(help="A file written by `simulate run --record`.")],
    speed: Annotated[float, typer.Option(
        help="Simulated seconds per wall second; 0 = as fast as possible.")] = 0.0,
    kafka: Annotated[bool, typer.Option(help="Publish to Kafka (--no-kafka: files only).")] = True,
    out: Annotated[Path | None, typer.Option(help="With --no-kafka: write files here.")] = None,
) -> None:
    """Publish a recorded stream again, message for message."""
    from simulator.stream_io import DirectorySink, KafkaSink, MessageSink, replay

    if not kafka and out is None:
        raise _fail("--no-kafka needs --out DIR")
    settings = Settings()

    async def go() -> int:
        sinks: list[MessageSink] = []
        try:
            if kafka:
                kafka_sink = KafkaSink(settings)
                await kafka_sink.start()
                sinks.append(kafka_sink)
            if out is not None:
                sinks.append(DirectorySink(out))
            return await replay(record, sinks, speed=speed or None)
        finally:
            for sink in sinks:
                await sink.close()

    try:
        count = asyncio.run(go())
    except (OSError, ValueError) as exc:
        raise _fail(f"{record}: {exc}") from None
    typer.echo(json.dumps({"messages": count}))


def _clock(t_s: float) -> str:
    seconds = int(t_s) % 86400
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


@simulate_app.command("render")
def simulate_render(
    frames: Annotated[int, typer.Option(help="Frames to write (over all cameras).")] = 200,
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("render-out"),
    scenario: Annotated[str, typer.Option(
        help="Bundled scenario name or a site file with a simulation section.")] = "four_arm",
    begin: Annotated[str, typer.Option(help="Time of day of the first frame, HH:MM.")] = "07:00",
    seed: Annotated[int, typer.Option(help="Random seed (SUMO and image conditions).")] = 1,
    frame_interval: Annotated[float, typer.Option(
        help="Simulated seconds between frames of a camera.")] = 1.0,
    warmup: Annotated[float, typer.Option(help="Simulated seconds before the first frame.")
                      ] = 300.0,
    conditions: Annotated[str, typer.Option(
        help="random, auto (by time of day), day, dusk or night.")] = "random",
    vary_poses: Annotated[bool, typer.Option(
        help="Cameras at random poses near their own (for training; no counting lines).")
                          ] = False,
) -> None:
    """Write camera frames with ground truth (boxes, classes, track ids, crossings)."""
    from simulator.render import render_dataset
    from simulator.simulate import resolve_scenario
    from simulator.sumo_tools import SumoError

    if conditions not in ("random", "auto", "day", "dusk", "night"):
        raise _fail(f"--conditions {conditions!r}: use random, auto, day, dusk or night")
    settings = Settings()
    try:
        resolved = resolve_scenario(scenario, settings.data_dir / "scenarios")
        summary = render_dataset(
            resolved, out, frames=frames, work_dir=settings.data_dir / "render" / resolved.name,
            begin_s=_parse_clock(begin), seed=seed, frame_interval_s=frame_interval,
            warmup_s=warmup, conditions=conditions, vary_poses=vary_poses,
        )
    except (SumoError, ValueError) as exc:
        raise _fail(str(exc)) from None
    typer.echo(json.dumps({"frames": summary.frames, "boxes": summary.boxes,
                           "crossings": summary.crossings, "out": str(out)}))


def evaluate_command(
    scenario: Annotated[str, typer.Option(
        help="Bundled scenario name, a site file with a simulation section, or any .sumocfg "
             "(imported on the fly).")] = "four_arm",
    controllers: Annotated[str, typer.Option(
        help="Comma-separated: fixed, actuated, max-pressure, simpang-plan, simpang-adaptive.")
    ] = "fixed,actuated,max-pressure,simpang-plan,simpang-adaptive",
    seeds: Annotated[int, typer.Option(help="Seeds per controller (1..N).", min=1)] = 3,
    begin: Annotated[str | None, typer.Option(
        help="Time of day to start, HH:MM (default: the scenario's begin).")] = None,
    duration: Annotated[float | None, typer.Option(
        help="Simulated seconds (default: to the scenario's end).")] = None,
    out: Annotated[Path | None, typer.Option(
        help="Work directory for SUMO outputs (default: the data directory).")] = None,
    warmup: Annotated[float, typer.Option(
        help="Simulated seconds at the start left out of the measures (the network starts "
             "empty).", min=0)] = 0.0,
    survey: Annotated[bool, typer.Option(
        help="Measure saturation flows in simulation first (for Simpang's controllers).")
    ] = True,
    report: Annotated[Path | None, typer.Option(
        help="Write plots (PNG) and a Markdown summary into this directory.")] = None,
    jobs: Annotated[int, typer.Option(
        help="Runs at a time, each in its own process (one per CPU core at most).", min=1)
    ] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
) -> None:
    """Run a SUMO scenario under each signal controller and seed; mean delay per vehicle,
    travel time, queues, throughput and stops with 95 % confidence intervals."""
    import shutil
    import tempfile

    from simulator.evaluate import CONTROLLERS, evaluate, run_as_dict
    from simulator.simulate import resolve_scenario
    from simulator.sumo_tools import SumoError, read_sumocfg

    settings = Settings()
    names = [c.strip() for c in controllers.split(",") if c.strip()]
    unknown = [c for c in names if c not in CONTROLLERS]
    if unknown or not names:
        raise _fail(f"unknown controller(s) {', '.join(unknown) or '(none given)'}; "
                    f"known: {', '.join(CONTROLLERS)}")
    try:
        if scenario.endswith(".sumocfg"):
            from simulator.importer import import_sumocfg

            imported = import_sumocfg(Path(scenario))
            for warning in imported.warnings:
                if not as_json:
                    console.print(f"warning: {warning}", style="yellow", markup=False,
                                  highlight=False)
            site, sumocfg, name = imported.site, Path(scenario).resolve(), Path(scenario).stem
        else:
            resolved = resolve_scenario(scenario, settings.data_dir / "scenarios")
            site, sumocfg, name = resolved.site, resolved.sumocfg, resolved.name
        config = read_sumocfg(sumocfg)
        begin_s = _parse_clock(begin) if begin else config.begin_s
        end_s = begin_s + duration if duration is not None else config.end_s
        if end_s is None:
            raise _fail(f"{sumocfg} has no end time: give --duration")
        if not any(i.sumo_tls for i in site.intersections):
            raise _fail(f"{scenario}: no signalised intersection to control")
        work = out or Path(tempfile.mkdtemp(prefix="simpang-evaluate-"))

        def progress(run: Any) -> None:
            if not as_json:
                console.print(f"{run.controller:>13} seed {run.seed}: mean delay "
                              f"{run.mean_delay_s:.1f} s, {run.throughput_veh} arrived, "
                              f"{run.never_departed} never departed", markup=False,
                              highlight=False)

        try:
            evaluation = evaluate(site, sumocfg, work, scenario=name, controllers=names,
                                  seeds=list(range(1, seeds + 1)), begin_s=begin_s,
                                  end_s=end_s, survey_saturation=survey, warmup_s=warmup,
                                  on_run=progress, jobs=jobs)
        finally:
            if out is None:
                shutil.rmtree(work, ignore_errors=True)
    except (SumoError, ValueError) as exc:
        raise _fail(str(exc)) from None
    summary = evaluation.summary()
    if report is not None:
        from simulator.report import write_report

        written = write_report(evaluation, report)
        if not as_json:
            console.print(f"report: {', '.join(str(p) for p in written)}", markup=False,
                          highlight=False)
    result = {
        "scenario": name, "begin_s": evaluation.begin_s, "end_s": evaluation.end_s,
        "warmup_s": warmup, "seeds": seeds, "controllers": summary,
        "saturation_survey": [
            {"intersection": s.intersection, "approach": s.approach, "lane": s.lane,
             "saturated_green_s": round(s.saturated_green_s, 1),
             "saturation_flow_pcu_per_hour": round(s.saturation_flow_pcu_per_hour, 1)
             if s.saturated_green_s else None}
            for s in evaluation.surveyed],
        "runs": [{k: v for k, v in run_as_dict(r).items() if k != "delay_by_depart_minute"}
                 for r in evaluation.runs],
    }
    if as_json:
        typer.echo(json.dumps(result))
        return
    from rich.table import Table

    table = Table(title=f"{name}: {seeds} seed(s), {_clock(evaluation.begin_s)}–"
                        f"{_clock(evaluation.end_s)}")
    for column in ("controller", "delay s", "travel s", "queue m", "max queue m", "arrived",
                   "stops"):
        table.add_column(column, justify="right")
    for controller, entry in summary.items():
        table.add_row(controller, *(
            f"{entry[m]:.1f}±{entry[f'{m}_ci95']:.1f}" for m in (
                "mean_delay_s", "mean_travel_time_s", "mean_queue_m", "max_queue_m",
                "throughput_veh", "mean_stops")))
    console.print(table)
