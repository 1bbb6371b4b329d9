"""The ``simpang`` command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from simpang.schema import ALL_MEASUREMENTS
from simpang.settings import Settings
from simpang.site import Camera
from simpang.site_file import SiteFileError, load_site
from simulator.cli import evaluate_command, scenario_app, simulate_app

app = typer.Typer(
    help="Simpang: real-time smart-traffic stream processing.", no_args_is_help=True,
    pretty_exceptions_enable=False,
)
site_app = typer.Typer(help="Site files.", no_args_is_help=True)
camera_app = typer.Typer(help="Cameras.", no_args_is_help=True)
dashboards_app = typer.Typer(help="Grafana dashboards, alerts and provisioning.",
                             no_args_is_help=True)
app.add_typer(site_app, name="site")
app.add_typer(dashboards_app, name="dashboards")
devices_app = typer.Typer(help="Field-device tokens for HTTP ingest.", no_args_is_help=True)
app.add_typer(devices_app, name="devices")
dead_letters_app = typer.Typer(help="Rejected messages.", no_args_is_help=True)
app.add_typer(dead_letters_app, name="dead-letters")
export_app = typer.Typer(help="Simpang's data in other systems' models.", no_args_is_help=True)
app.add_typer(export_app, name="export")
app.add_typer(camera_app, name="camera")
app.add_typer(scenario_app, name="scenario")
app.add_typer(simulate_app, name="simulate")
app.command("evaluate")(evaluate_command)
console = Console()


@app.command()
def worker(
    shutdown_timeout: Annotated[float, typer.Option(help="Seconds to exit after SIGTERM.")] = 15.0,
) -> None:
    """Run one stream-processing worker (Faust) with the configured settings."""
    from streams.worker import run_worker

    run_worker(Settings(), shutdown_timeout_s=shutdown_timeout)


@app.command()
def broker(
    durable: Annotated[bool | None, typer.Option(
        "--durable/--memory", help="Keep topics in S3 (default: broker.durable).")] = None,
) -> None:
    """Run the embedded Kafka-protocol broker (Tansu) until Ctrl-C or SIGTERM.

    Durable (``broker.s3_endpoint``: S3 or MinIO) it is the single-machine alternative to a
    Kafka cluster: a restart keeps every acknowledged message."""
    import signal

    from streams.embedded import ServerStartError, broker_from_settings

    settings = Settings()
    if durable is not None:
        settings.broker.durable = durable
    def leave(*_: object) -> None:
        # SIGTERM (docker stop, systemd) leaves through the context managers like Ctrl-C; a
        # second one must not cut their stop short.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        sys.exit(0)

    signal.signal(signal.SIGTERM, leave)
    try:
        with broker_from_settings(settings.broker, port=settings.broker.port,
                                  listen_host=settings.broker.listen_host,
                                  advertised_host=settings.broker.advertised_host) as tansu:
            where = (settings.broker.s3_endpoint or "a local S3") if settings.broker.durable \
                else "memory"
            console.print(f"broker at {tansu.bootstrap}, topics in {where}", markup=False)
            assert tansu.process is not None
            tansu.process.wait()
            console.print(f"broker exited with code {tansu.process.returncode}:\n"
                          f"{tansu.output_tail()}", style="red", markup=False)
            raise typer.Exit(1)
    except ServerStartError as exc:
        console.print(f"could not start: {exc}", style="red", markup=False)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


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
    ingest: Annotated[str, typer.Option(
        help="How the detectors send: kafka (produce directly) or http (POST /v1/readings "
             "to the worker with a device token).")] = "kafka",
    durable: Annotated[bool, typer.Option(
        help="Keep the broker's topics in S3 (broker.s3_endpoint, or a local S3 started "
             "beside it) instead of memory.")] = False,
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
    if ingest not in ("kafka", "http"):
        raise typer.BadParameter("kafka or http", param_hint="--ingest")
    try:
        settings = Settings()
        if durable:
            settings.broker.durable = True
        summary = run_demo(settings, scenario=scenario, duration_s=duration, out_dir=out,
                           speed=speed, seed=seed, begin_s=begin_s, fault_fraction=faults,
                           live=live, console=console, ingest=ingest)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: broker and worker stopped[/yellow]")
        raise typer.Exit(130) from None
    except (ServerStartError, SumoError) as exc:
        console.print(f"could not start: {exc}", style="red", markup=False)
        raise typer.Exit(1) from None
    console.print()
    console.print_json(json.dumps(summary))


def _site_camera(site_file: Path, camera_id: str) -> Camera:
    """A camera of a site file, or exit 1 saying what is wrong."""
    try:
        site_model = load_site(site_file)
    except SiteFileError as exc:
        console.print(str(exc), style="red", markup=False, highlight=False)
        raise typer.Exit(1) from None
    cameras = {c.id: c for i in site_model.intersections for c in i.cameras}
    if camera_id not in cameras:
        console.print(f"camera {camera_id!r} is not in {site_file}; it has: "
                      f"{', '.join(sorted(cameras)) or 'no cameras'}", style="red",
                      markup=False, highlight=False)
        raise typer.Exit(1)
    return cameras[camera_id]


@app.command()
def count(
    video: Annotated[Path, typer.Argument(help="Video file (any format OpenCV reads).")],
    camera: Annotated[str, typer.Option(help="Camera id in the site file: its lines count.")],
    site: Annotated[Path | None, typer.Option(help="Site file (default: the configured one).")
                    ] = None,
    annotated: Annotated[Path | None, typer.Option(
        help="Write an annotated video (boxes, track ids, speeds, lines, totals).")] = None,
    model: Annotated[Path | None, typer.Option(help="ONNX detector (default: settings).")
                     ] = None,
    max_frames: Annotated[int | None, typer.Option(help="Stop after this many frames.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the counts as JSON.")] = False,
) -> None:
    """Count vehicles crossing a camera's lines in a video file, per line, class and
    direction, with turning movements, speeds and queue when the camera is calibrated."""
    from detectors.onnx_detector import OnnxDetector
    from detectors.video import VideoError, count_video

    settings = Settings()
    camera_model = _site_camera(site or settings.site_file, camera)
    detector_settings = settings.detector
    try:
        detector = OnnxDetector(model or detector_settings.model_path,
                                layout=detector_settings.layout,
                                confidence=detector_settings.confidence,
                                iou=detector_settings.iou,
                                batch_size=detector_settings.batch_size,
                                threads=detector_settings.threads)
        result = count_video(video, camera_model, detector, annotated=annotated,
                             max_frames=max_frames)
    except (FileNotFoundError, ValueError, VideoError) as exc:
        console.print(str(exc), style="red", markup=False, highlight=False)
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(result.as_dict()))
        return
    table = Table(title=f"{video.name}: {result.frames} frames, camera {camera}")
    for column in ("line", "class", "in", "out"):
        table.add_column(column)
    for line_id, by_class in result.counts["lines"].items():
        for vehicle_class, by_direction in by_class.items():
            table.add_row(line_id, vehicle_class, str(by_direction["in"]),
                          str(by_direction["out"]))
    console.print(table)


@camera_app.command("publish")
def camera_publish(
    camera: Annotated[str, typer.Option(help="Camera id in the site file.")],
    source: Annotated[str | None, typer.Option(
        help="RTSP/HTTP URL, device index or video file (default: the camera's source_url).")
                      ] = None,
    max_fps: Annotated[float | None, typer.Option(help="Publish at most this many frames/s.")
                       ] = None,
    max_frames: Annotated[int | None, typer.Option(help="Stop after this many frames.")] = None,
    quality: Annotated[int, typer.Option(help="JPEG quality (lowered when over the cap).")
                       ] = 80,
    max_bytes: Annotated[int, typer.Option(help="Largest message, bytes.")] = 900 * 1024,
    no_realtime: Annotated[bool, typer.Option(
        "--no-realtime", help="Read a file as fast as possible instead of at its frame rate.")
                           ] = False,
) -> None:
    """Send a camera's frames as JPEG to camera-frames, keyed by camera id."""
    import asyncio

    from detectors.camera_input import CameraReader, ReaderSettings
    from streams.camera_publish import publish_camera

    settings = Settings()
    camera_model = _site_camera(settings.site_file, camera)
    reader = CameraReader(source or camera_model.source_url,
                          ReaderSettings(max_fps=max_fps, realtime=not no_realtime))
    summary = asyncio.run(publish_camera(settings, camera, reader, quality=quality,
                                         max_bytes=max_bytes, max_frames=max_frames))
    typer.echo(json.dumps({"camera": camera, "frames": summary.frames, "bytes": summary.bytes,
                           "frozen_frames": summary.frozen,
                           "reconnects": reader.stats.failed_opens}))


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


@app.command("mqtt-bridge")
def mqtt_bridge() -> None:
    """Bridge readings that devices publish over MQTT (PREFIX/SITE/DEVICE/readings) to Kafka."""
    import asyncio
    import logging
    import signal

    from streams.mqtt_bridge import run_bridge
    from streams.worker import prepare_topics

    settings = Settings()
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    site = load_site(settings.site_file)
    prepare_topics(settings)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        counters = await run_bridge(settings, site, stop=stop)
        console.print(f"mqtt-bridge stopped: {counters}")

    asyncio.run(main())


@dead_letters_app.command("tail")
def dead_letters_tail(
    count: Annotated[int, typer.Option("-n", "--count", help="How many of the latest.")] = 20,
    follow: Annotated[bool, typer.Option("-f", "--follow", help="Keep printing new ones.")
    ] = False,
    source: Annotated[str | None, typer.Option(
        help="Only sources starting with this (http, mqtt:, kafka:sensor-readings, ...).")
    ] = None,
    reason: Annotated[str | None, typer.Option(help="Only this reason code.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")
    ] = False,
    since_hours: Annotated[float, typer.Option(help="Look back this far.")] = 24.0,
) -> None:
    """Show the latest rejected messages (source, reason, device, raw payload)."""
    import asyncio

    from streams.dead_letters import LetterFilter, tail

    settings = Settings()
    only = LetterFilter(source_prefix=source, reason_code=reason)

    async def show() -> None:
        async for item in tail(settings, count=count, follow=follow, only=only,
                               since_s=since_hours * 3600):
            if isinstance(item, str):
                console.print(item, markup=False)
            elif as_json:
                typer.echo(item.model_dump_json())
            else:
                console.print(f"{item.ts.isoformat()} {item.source} {item.reason_code.value} "
                              f"{item.device_id or '-'}: {item.reason}", markup=False)
                console.print(f"    {item.raw[:300]}", markup=False, style="dim")

    try:
        asyncio.run(show())
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


@export_app.command("fiware")
def export_fiware(
    broker_url: Annotated[str | None, typer.Option(
        help="NGSI-LD context broker to upsert into (default: print JSON lines).")] = None,
    token: Annotated[str | None, typer.Option(help="Bearer token for the broker.")] = None,
    level: Annotated[str, typer.Option(help="approach or lane rows.")] = "approach",
    window: Annotated[str | None, typer.Option(help="Only this window, e.g. 60s.")] = None,
    limit: Annotated[int | None, typer.Option(help="Stop after this many entities.")] = None,
    follow: Annotated[bool, typer.Option("-f", "--follow", help="Keep sending new rows.")
    ] = False,
) -> None:
    """Send approach metrics as FIWARE TrafficFlowObserved entities (NGSI-LD)."""
    import asyncio

    from streams.fiware import export

    if level not in ("approach", "lane"):
        console.print("[red]--level: approach or lane[/red]")
        raise typer.Exit(2)
    settings = Settings()
    site = load_site(settings.site_file)
    try:
        sent = asyncio.run(export(settings, site, level=level, window=window, limit=limit,
                                  follow=follow, broker_url=broker_url, token=token,
                                  emit=typer.echo))
    except (RuntimeError, OSError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    if broker_url:
        console.print(f"{sent} TrafficFlowObserved entities upserted into {broker_url}")


@dashboards_app.command("generate")
def dashboards_generate() -> None:
    """Regenerate dashboards/json and dashboards/provisioning from the code."""
    from dashboards import build, provisioning

    for path in [*build.generate(), *provisioning.generate()]:
        console.print(str(path))


@dashboards_app.command("push")
def dashboards_push(
    grafana_url: Annotated[str | None, typer.Option(
        help="Grafana's URL (default: settings grafana.url).")] = None,
    token: Annotated[str | None, typer.Option(
        help="Service-account token (default: SIMPANG_GRAFANA__TOKEN).")] = None,
    influx_url: Annotated[str | None, typer.Option(
        help="InfluxDB URL as Grafana reaches it (default: grafana.influx_url, influx.url).")
    ] = None,
    rotate_token: Annotated[bool, typer.Option(
        help="Write the InfluxDB token into the datasource even if it has one.")] = False,
) -> None:
    """Create or update the folder, datasource, dashboards and alert rules in Grafana."""
    from grafana_client import GrafanaApi
    from grafana_client.client import GrafanaException

    from dashboards.push import InfluxTarget, push

    settings = Settings()
    url = grafana_url or settings.grafana.url
    secret = token or (settings.grafana.token.get_secret_value()
                       if settings.grafana.token else None)
    target_url = influx_url or settings.grafana.influx_url or settings.influx.url
    if not target_url:
        console.print("[red]no InfluxDB URL for Grafana: give --influx-url or set "
                      "SIMPANG_GRAFANA__INFLUX_URL[/red]")
        raise typer.Exit(2)
    influx_token = settings.influx.token.get_secret_value() if settings.influx.token else None
    try:
        report = push(GrafanaApi.from_url(url, credential=secret),
                      InfluxTarget(target_url, settings.influx.bucket, influx_token),
                      rotate_token=rotate_token)
    except (GrafanaException, OSError) as exc:
        console.print(f"[red]Grafana at {url} refused or could not be reached: {exc}[/red]")
        raise typer.Exit(1) from exc
    for kind, names in (("created", report.created), ("updated", report.updated)):
        for name in names:
            console.print(f"{kind}: {name}")
    console.print(report.line())


@devices_app.command("token")
def devices_token(
    name: Annotated[str, typer.Option(help="Who holds it: a device id or a gateway's name.")],
    device: Annotated[list[str], typer.Option(
        help="Device ids it may write (shell patterns, e.g. 'smd-lembuswana-*'); repeat.")],
    intersection: Annotated[list[str] | None, typer.Option(
        help="Only devices at these intersections (patterns); repeat.")] = None,
    rate: Annotated[float, typer.Option(help="Readings per second it may send.")] = 200.0,
    burst: Annotated[int, typer.Option(help="Readings it may send at once.")] = 2000,
) -> None:
    """Make a device token: print it once, and the entry for the devices file (hash only)."""
    import yaml

    from simpang.devices import issue_token

    token, entry = issue_token(name, devices=device, intersections=intersection or None,
                               max_readings_per_s=rate, burst_readings=burst)
    typer.echo(f"token (give it to the device; it is not stored): {token}")
    typer.echo("add to the devices file under tokens:")
    typer.echo(yaml.safe_dump([entry.model_dump(exclude_none=True)], sort_keys=False))


@app.command("settings")
def show_settings() -> None:
    """Print the effective settings as JSON, secrets redacted."""
    console.print_json(json.dumps(Settings().redacted(), default=str))


if __name__ == "__main__":
    app()
