"""The scenarios that ship with Simpang, built on demand from plain SUMO XML.

Each directory under ``simulator/scenarios/`` holds nodes, edges, connections and the
signal programme (``*.nod.xml``, ``*.edg.xml``, ``*.con.xml``, ``*.tll.xml``) and a
``scenario.yaml`` with names and demand. :func:`build_scenario` runs netconvert (left-hand
traffic, as in Indonesia), writes the day's routes and a ``.sumocfg``, and imports the result
into a site file, all in a cache directory keyed by the sources' hash, so a second build is
free and an edited source rebuilds.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import sumolib
import yaml

from simpang.site import Site
from simpang.site_file import load_site
from simpang.vehicles import VehicleClass
from simulator.demand import Demand, routes_xml
from simulator.importer import import_sumocfg, site_to_yaml
from simulator.sumo_tools import SumoError, run_tool

SCENARIO_ROOT = Path(__file__).parent / "scenarios"
BUILD_VERSION = "1"
"""Bump when something the build depends on outside the hashed files changes (SUMO itself)."""
STEP_LENGTH_S = 0.5
LATERAL_RESOLUTION_M = 0.8


@dataclass(frozen=True)
class BuiltScenario:
    name: str
    title: str
    sumocfg: Path
    site_file: Path

    def site(self) -> Site:
        return load_site(self.site_file)


def scenario_names() -> list[str]:
    return sorted(p.name for p in SCENARIO_ROOT.iterdir() if (p / "scenario.yaml").exists())


def build_scenario(name: str, cache_dir: Path,
                   mix: Mapping[VehicleClass, float] | None = None) -> BuiltScenario:
    """Build (or reuse) a bundled scenario; ``mix`` (class → share) replaces its vehicle mix,
    as the detector's training does to see more of the rare classes.

    >>> import tempfile
    >>> built = build_scenario("four_arm", Path(tempfile.mkdtemp()))
    >>> [i.id for i in built.site().intersections]
    ['C']
    """
    source = SCENARIO_ROOT / name
    if not (source / "scenario.yaml").exists():
        raise SumoError(f"no bundled scenario {name!r}; there are {', '.join(scenario_names())}")
    meta = yaml.safe_load((source / "scenario.yaml").read_text(encoding="utf-8"))
    digest = hashlib.sha256(BUILD_VERSION.encode())
    # The code that builds is part of what is built.
    for module in ("bundled.py", "demand.py", "importer.py"):
        digest.update((Path(__file__).parent / module).read_bytes())
    for path in sorted(source.iterdir()):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    if mix is not None:
        digest.update(json.dumps({c.value: share for c, share in mix.items()}).encode())
    out = cache_dir / f"{name}-{digest.hexdigest()[:12]}"
    built = BuiltScenario(
        name=name,
        title=meta["title"],
        sumocfg=out / f"{name}.sumocfg",
        site_file=out / f"{name}.site.yaml",
    )
    if built.site_file.exists():
        return built
    staging = out.with_name(out.name + ".partial")
    staging.mkdir(parents=True, exist_ok=True)
    net_file = staging / f"{name}.net.xml"
    run_tool("netconvert", [
        "--node-files", str(source / f"{name}.nod.xml"),
        "--edge-files", str(source / f"{name}.edg.xml"),
        "--connection-files", str(source / f"{name}.con.xml"),
        "--tllogic-files", str(source / f"{name}.tll.xml"),
        "--lefthand", "--no-turnarounds", "--no-warnings",
        "--output-file", str(net_file),
    ])
    demand_meta = meta["demand"]
    if mix is None and "mix" in demand_meta:
        mix = {VehicleClass(k): v for k, v in demand_meta["mix"].items()}
    demand = Demand(
        peak_veh_per_hour=demand_meta["peak_veh_per_hour"],
        od_weight=demand_meta.get("od_weight", {}),
        destination_weight=demand_meta.get("destination_weight", {}),
        **({"mix": dict(mix)} if mix is not None else {}),
    )
    reachable = _reachable_exits(net_file, list(demand.peak_veh_per_hour))
    (staging / f"{name}.rou.xml").write_text(routes_xml(demand, reachable), encoding="utf-8")
    (staging / f"{name}.sumocfg").write_text(_sumocfg(name), encoding="utf-8")
    result = import_sumocfg(
        staging / f"{name}.sumocfg",
        site_id=meta["site_id"],
        site_name=meta["site_name"],
        origin_lat_lon=tuple(meta["origin_lat_lon"]),
    )
    if result.warnings:
        raise SumoError(f"bundled scenario {name!r} imports with warnings: {result.warnings}")
    # What the network cannot say: which intersections run as a green wave.
    site = Site.model_validate({**result.site.model_dump(),
                                "corridors": meta.get("corridors", [])})
    (staging / f"{name}.site.yaml").write_text(
        f"# Built from simulator/scenarios/{name} by simpang; edit the sources, not this.\n"
        + site_to_yaml(site),
        encoding="utf-8",
    )
    if out.exists():
        # Another build finished first; its result is the same.
        return built
    staging.replace(out)
    return built


def _reachable_exits(net_file: Path, entries: list[str]) -> dict[str, list[str]]:
    """Exit edges (ending at a dead end) reachable from each entry, U-turns excluded."""
    net = sumolib.net.readNet(str(net_file))
    exits = [e.getID() for e in net.getEdges() if not e.getToNode().getOutgoing()
             or all(o.getToNode() == e.getFromNode() for o in e.getToNode().getOutgoing())]
    reachable: dict[str, list[str]] = {}
    for entry in entries:
        start = net.getEdge(entry)
        found = []
        for exit_id in exits:
            target = net.getEdge(exit_id)
            if target.getToNode() == start.getFromNode():
                continue
            path, _ = net.getShortestPath(start, target)
            if path:
                found.append(exit_id)
        reachable[entry] = sorted(found)
    return reachable


def _sumocfg(name: str) -> str:
    return f"""<configuration>
    <input>
        <net-file value="{name}.net.xml"/>
        <route-files value="{name}.rou.xml"/>
    </input>
    <time>
        <begin value="21600"/>
        <end value="86400"/>
        <step-length value="{STEP_LENGTH_S}"/>
    </time>
    <processing>
        <time-to-teleport value="300"/>
        <!-- Sublane model: motorcycles share lanes and filter, as they do in Indonesia. -->
        <lateral-resolution value="{LATERAL_RESOLUTION_M}"/>
    </processing>
    <report>
        <no-step-log value="true"/>
    </report>
</configuration>
"""
