"""The control room's Grafana dashboards, as code (grafana-foundation-sdk builders).

``python -m dashboards.build`` (or ``simpang dashboards generate``) writes the JSON committed
under ``dashboards/json/``; a test checks that regenerating gives the committed files.

>>> sorted(d["uid"] for d in (b.build().to_json() for b in all_dashboards()))
['simpang-control-room', 'simpang-devices', 'simpang-intersection', 'simpang-pipeline']
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Self

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import geomap, table, timeseries
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import encoder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model

from dashboards import queries
from dashboards.queries import Query
from simpang.schema import APPROACH_METRICS

DATASOURCE_UID = "simpang-influxdb"
DATASOURCE_TYPE = "influxdb"
DATASOURCE = model.DataSourceRef(type_val=DATASOURCE_TYPE, uid=DATASOURCE_UID)
FOLDER_TITLE = "Simpang"
FOLDER_UID = "simpang"
JSON_DIR = Path(__file__).resolve().parent / "json"
REFRESH = "30s"
DS_STEPS = [model.Threshold(value=None, color="green"), model.Threshold(value=0.8, color="yellow"),
            model.Threshold(value=0.9, color="orange"), model.Threshold(value=1.0, color="red")]


class InfluxQLQuery(cogvariants.Dataquery):
    """An InfluxDB datasource target in raw InfluxQL mode."""

    def __init__(self, ref_id: str, query: Query) -> None:
        self.ref_id = ref_id
        self.query = query

    def to_json(self) -> dict[str, object]:
        payload: dict[str, object] = {
            "refId": self.ref_id,
            "datasource": DATASOURCE.to_json(),
            "query": self.query.influxql,
            "rawQuery": True,
            "resultFormat": self.query.result_format,
        }
        if self.query.alias is not None:
            payload["alias"] = self.query.alias
        return payload

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        return cls(data["refId"], Query(data["query"], data["resultFormat"], data.get("alias")))


class Target(cogbuilder.Builder[cogvariants.Dataquery]):
    def __init__(self, ref_id: str, query: Query) -> None:
        self._query = InfluxQLQuery(ref_id, query)

    def build(self) -> cogvariants.Dataquery:
        return self._query


def with_queries(panel: Any, *found: Query) -> Any:
    """The panel, its targets A, B, … and the datasource (builders return themselves)."""
    for index, query in enumerate(found):
        panel.with_target(Target(chr(ord("A") + index), query))
    return panel.datasource(DATASOURCE)


def series(title: str, unit: str, *found: Query, description: str = "", height: int = 8,
           width: int = 12, bars: bool = False) -> timeseries.Panel:
    panel = (timeseries.Panel().title(title).unit(unit).height(height).span(width)
             .line_width(1).fill_opacity(10).span_nulls(True)
             .legend(common_builders.VizLegendOptions().show_legend(True)
                     .display_mode(common.LegendDisplayMode.LIST)
                     .placement(common.LegendPlacement.BOTTOM))
             .tooltip(common_builders.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI)
                      .sort(common.SortOrder.NONE)))
    if description:
        panel.description(description)
    if bars:
        panel.draw_style(common.GraphDrawStyle.BARS).fill_opacity(80).stacking(
            common_builders.StackingConfig().mode(common.StackingMode.NORMAL))
    with_queries(panel, *found)
    return panel


def merged_table(title: str, *found: Query, sort_desc: str | None = None, height: int = 8,
                 width: int = 12, description: str = "") -> table.Panel:
    """A table of one or more queries; several are merged into one row per shared tag."""
    panel = table.Panel().title(title).height(height).span(width).show_header(True)
    if description:
        panel.description(description)
    if len(found) > 1:
        panel.with_transformation(model.DataTransformerConfig(id_val="merge", options={}))
    if sort_desc:
        panel.sort_by([common_builders.TableSortByFieldState().display_name(sort_desc)
                       .desc(True)])
    with_queries(panel, *found)
    return panel


def hide_time(panel: table.Panel) -> table.Panel:
    return panel.with_transformation(model.DataTransformerConfig(
        id_val="organize", options={"excludeByName": {"Time": True}}))


def ds_colours(panel: Any, field: str) -> Any:
    panel.thresholds(dash.ThresholdsConfig().mode(model.ThresholdsMode.ABSOLUTE)
                     .steps(DS_STEPS))
    panel.override_by_name(field, [
        model.DynamicConfigValue(id_val="custom.cellOptions",
                                 value={"type": "color-background"}),
    ])
    return panel


def variable(name: str, query: str, label: str, *, multi: bool = False) -> dash.QueryVariable:
    found = (dash.QueryVariable(name).label(label).query(query).datasource(DATASOURCE)
             .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
             .sort(model.VariableSort.ALPHABETICAL_ASC))
    if multi:
        found.multi(True).include_all(True).all_value(".*")
    return found


def site_variable() -> dash.QueryVariable:
    return variable("site", queries.variable_values(APPROACH_METRICS, "site"), "Site")


def intersection_variable(*, multi: bool = False) -> dash.QueryVariable:
    return variable("intersection", queries.variable_values(APPROACH_METRICS, "intersection",
                                                            "site"), "Intersection", multi=multi)


def window_variable() -> dash.QueryVariable:
    return variable("window", queries.variable_values(APPROACH_METRICS, "window"), "Window")


def source_variable() -> dash.CustomVariable:
    return (dash.CustomVariable("source").label("Source").values("field,camera")
            .current(model.VariableOption(selected=True, text="field", value="field")))


def base(uid: str, title: str, description: str, tags: Iterable[str] = ()) -> dash.Dashboard:
    return (dash.Dashboard(title).uid(uid).description(description)
            .tags(["simpang", *tags]).refresh(REFRESH).time("now-6h", "now")
            .timezone("browser").tooltip(model.DashboardCursorSync.CROSSHAIR)
            .link(dash.DashboardLink("Simpang").type(model.DashboardLinkType.DASHBOARDS)
                  .tags(["simpang"]).as_dropdown(True).include_vars(True).keep_time(True)))


def control_room() -> dash.Dashboard:
    intersections = (
        merged_table(
            "Intersections", queries.intersection_flows_pcu_per_hour(),
            queries.intersection_status(), queries.intersection_queues_m(),
            queries.intersection_detector_faults(), sort_desc="degree_of_saturation",
            width=16, description=(
                "Latest flow (sum of the approaches' latest window), degree of saturation "
                "under the running plan, running and recommended cycle, longest camera queue, "
                "detectors dead or stuck."))
        .unit("none"))
    hide_time(intersections)
    ds_colours(intersections, "degree_of_saturation")
    worst = merged_table("Worst approaches now", queries.worst_approaches(),
                         sort_desc="degree_of_saturation", width=12,
                         description="Degree of saturation under the running plan.")
    hide_time(worst)
    ds_colours(worst, "degree_of_saturation")
    site_map = with_queries(
        geomap.Panel().title("Degree of saturation by intersection").height(12).span(12)
        .view(geomap.MapViewConfig().id("fit").all_layers(True).zoom(13))
        .basemap(common_builders.MapLayerOptions().type("default").name("Basemap"))
        .layers([common_builders.MapLayerOptions().type("markers").name("Intersections")
                 .tooltip(True)
                 .location(common_builders.FrameGeometrySource()
                           .mode(common.FrameGeometrySourceMode.COORDS)
                           .latitude("latitude").longitude("longitude"))
                 .config({"style": {"color": {"field": "degree_of_saturation"},
                                    "size": {"fixed": 10}, "symbol": {"fixed": "img/icons/"
                                    "marker/circle.svg", "mode": "fixed"}},
                          "showLegend": True})])
        .thresholds(dash.ThresholdsConfig().mode(model.ThresholdsMode.ABSOLUTE)
                    .steps(DS_STEPS)),
        queries.intersection_status(),
    )
    alerts = (dash.Panel().type("alertlist").title("Alerts firing").height(8).span(8)
              .options({"viewMode": "list", "groupMode": "default", "maxItems": 20,
                        "sortOrder": 1, "stateFilter": {"firing": True, "pending": True,
                                                        "noData": False, "normal": False,
                                                        "error": True},
                        "alertInstanceLabelFilter": "", "folder": {"uid": FOLDER_UID,
                                                                   "title": FOLDER_TITLE}}))
    return (base("simpang-control-room", "Simpang — control room",
                 "Every intersection at a glance: map, table, worst approaches, alerts.",
                 ["control-room"])
            .with_variable(site_variable()).with_variable(window_variable())
            .with_variable(source_variable())
            .with_panel(site_map).with_panel(worst)
            .with_panel(intersections).with_panel(alerts))


def intersection() -> dash.Dashboard:
    approach = variable("approach", queries.variable_values(
        APPROACH_METRICS, "approach", "site", "intersection"), "Approach", multi=True)
    reasons = merged_table("Latest recommendations and their reasons",
                           queries.latest_recommendations(), width=24, height=8)
    return (base("simpang-intersection", "Simpang — intersection",
                 "One intersection: flows, occupancy, speed, queues, saturation, and the plan "
                 "running beside the plan recommended.", ["intersection"])
            .with_variable(site_variable()).with_variable(intersection_variable())
            .with_variable(approach).with_variable(source_variable())
            .with_variable(window_variable())
            .with_row(dash.Row("Demand"))
            .with_panel(series("Flow by approach (PCU/h)", "PCU/h",
                               queries.approach_series("flow_pcu_per_hour")))
            .with_panel(series("Flow by approach (veh/h)", "veh/h",
                               queries.approach_series("flow_veh_per_hour")))
            .with_panel(series("Flow by class (veh/h)", "veh/h",
                               queries.class_flows_veh_per_hour(), bars=True,
                               description="The selected approaches' flow, split by the "
                               "classes counted."))
            .with_panel(series("Occupancy (%)", "percent",
                               queries.approach_series("occupancy_pct")))
            .with_panel(series("Mean speed (km/h)", "velocitykmh",
                               queries.approach_series("mean_speed_kmh")))
            .with_panel(series("Queue (m)", "lengthm", queries.camera_queue_m(),
                               description="Stop line to the last stopped vehicle, per camera."))
            .with_row(dash.Row("Signal timing"))
            .with_panel(series("Degree of saturation", "none",
                               queries.approach_ds("running_degree_of_saturation"),
                               queries.approach_ds("degree_of_saturation"),
                               description="Under the running plan, and under the plan "
                               "recommended."))
            .with_panel(series("Cycle: running and recommended (s)", "s", queries.cycles()))
            .with_panel(series("Green by phase: running and recommended (s)", "s",
                               queries.greens("running_green_s"),
                               queries.greens("green_s"), width=24))
            .with_panel(reasons))


def devices() -> dash.Dashboard:
    cameras = merged_table("Cameras now", queries.cameras_now(), width=24,
                           description="Time = the camera's latest health sample (last seen).")
    detectors = merged_table("Field detectors now", queries.detectors_now(), width=24,
                             height=10, sort_desc="silent_s",
                             description="Dead: silent too long; stuck on: occupancy pinned "
                             "high; stuck off: counts nothing while the others count.")
    for faulty in ("dead", "stuck_on", "stuck_off"):
        detectors.override_by_name(faulty, [
            model.DynamicConfigValue(id_val="mappings", value=[{
                "type": "value", "options": {"0": {"text": "ok", "color": "green"},
                                             "1": {"text": faulty.replace("_", " "),
                                                   "color": "red"}}}]),
            model.DynamicConfigValue(id_val="custom.cellOptions",
                                     value={"type": "color-background"}),
        ])
    return (base("simpang-devices", "Simpang — devices",
                 "Cameras (fps, inference time, frozen, last seen) and field detectors "
                 "(last seen, dead, stuck).", ["devices"])
            .with_variable(site_variable()).with_variable(intersection_variable(multi=True))
            .with_panel(cameras)
            .with_panel(series("Camera frames per second", "fps",
                               queries.camera_series("fps")))
            .with_panel(series("Inference time per frame (ms)", "ms",
                               queries.camera_series("inference_ms")))
            .with_panel(detectors)
            .with_panel(series("Detectors dead or stuck", "none",
                               queries.detector_faults_over_time(), width=24, bars=True)))


def pipeline() -> dash.Dashboard:
    workers = hide_time(merged_table("Workers", queries.workers_now(), width=24, height=6))
    dead_letters = merged_table("Latest dead letters", queries.latest_dead_letters(),
                                width=24, height=8)
    return (base("simpang-pipeline", "Simpang — pipeline",
                 "Consumer lag, rates, dead letters by reason, InfluxDB write errors.",
                 ["pipeline"])
            .with_panel(workers)
            .with_panel(series("Consumer lag by topic (messages)", "short",
                               queries.consumer_lag_by_topic()))
            .with_panel(series("Readings per second", "reqps",
                               queries.worker_rate("readings_in"),
                               queries.worker_rate("readings_accepted"),
                               queries.worker_rate("readings_resent"),
                               description="Taken off sensor-readings, accepted, and left "
                               "out of their windows as re-sends (device + seq)."))
            .with_panel(series("Dead letters by reason", "short",
                               queries.dead_letters_by_reason(), bars=True))
            .with_panel(series("InfluxDB write errors", "short",
                               queries.worker_increase("sink_write_errors"), bars=True))
            .with_panel(series("Points written per second", "reqps",
                               queries.worker_rate("points_written")))
            .with_panel(series("Field devices over HTTP (readings/s)", "reqps",
                               queries.worker_rate("http_readings_in"),
                               queries.worker_rate("http_readings_accepted"),
                               queries.worker_rate("http_duplicates"),
                               description="Received, accepted (sent on) and re-sends "
                               "recognised; the rest were refused (dead letters)."))
            .with_panel(dead_letters))


def all_dashboards() -> list[dash.Dashboard]:
    return [control_room(), intersection(), devices(), pipeline()]


def dashboard_json(builder: dash.Dashboard) -> dict[str, Any]:
    """Plain JSON, as Grafana stores it, panels numbered in order (stable links)."""
    loaded: dict[str, Any] = json.loads(json.dumps(builder.build(), cls=encoder.JSONEncoder))
    for number, panel in enumerate(loaded.get("panels", []), start=1):
        panel["id"] = number
    return loaded


def render(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def generate(out_dir: Path = JSON_DIR) -> list[Path]:
    """Write every dashboard as ``UID.json``; returns the files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for builder in all_dashboards():
        data = dashboard_json(builder)
        path = out_dir / f"{data['uid']}.json"
        path.write_text(render(data))
        written.append(path)
    return written


if __name__ == "__main__":
    for path in generate():
        print(path)
