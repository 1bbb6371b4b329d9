"""The SUMO importer and the bundled scenarios, on real SUMO networks: Simpang's own, the ones
shipped in the eclipse-sumo wheel, and one made by netgenerate."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import sumolib

from simpang.site_file import load_site
from simulator.bundled import build_scenario, scenario_names
from simulator.importer import import_sumocfg
from simulator.sumo_tools import game_scenario, run_tool


def _tls_link_count(net_file: Path, tls_id: str) -> int:
    net = sumolib.net.readNet(str(net_file), withPrograms=True)
    return max(index for _, _, index in net.getTLS(tls_id).getConnections()) + 1


def test_bundled_scenarios_are_the_three_the_issue_names() -> None:
    assert scenario_names() == ["corridor", "four_arm", "t_junction"]


def test_four_arm_imports_as_written(scenario_cache: Path) -> None:
    built = build_scenario("four_arm", scenario_cache)
    site = load_site(built.site_file)
    (junction,) = site.intersections
    assert junction.name == "Simpang Lembuswana"
    assert [a.id for a in junction.approaches] == ["north", "east", "south", "west"]
    assert [a.name for a in junction.approaches] == [
        "Jl. S. Parman", "Jl. M. Yamin", "Jl. Dr. Soetomo", "Jl. Wahid Hasyim"]
    north = junction.approaches[0]
    # Left-hand traffic: the kerb lane (index 0) takes the easy left turn.
    assert [(lane.id, lane.movements) for lane in north.lanes] == [
        ("n1", ["left", "through"]), ("n2", ["through", "right"])]
    assert [lane.sumo_lane for lane in north.lanes] == ["N2C_0", "N2C_1"]
    assert [(p.id, p.movements) for p in junction.phases] == [
        ("p1", ["north:left", "north:right", "north:through"]),
        ("p2", ["east:left", "east:right", "east:through"]),
        ("p3", ["south:left", "south:right", "south:through"]),
        ("p4", ["west:left", "west:right", "west:through"]),
    ]
    assert junction.plan.greens_s == {"p1": 29, "p2": 24, "p3": 29, "p4": 24}
    assert junction.plan.cycle_s == 130
    assert all(p.yellow_s == 3 and p.all_red_s == 3 for p in junction.phases)
    # Measured from the junction's shape: 2 + 2 lanes of 3.2 m plus the corner radii.
    assert junction.width_m is not None and 18 < junction.width_m < 24
    assert {len(p.sumo_state or "") for p in junction.phases} == {
        _tls_link_count(built.sumocfg.with_suffix(".net.xml"), "C")}
    assert len(junction.sensors) == 8 and all(s.kind == "loop" for s in junction.sensors)
    assert [c.approach for c in junction.cameras] == ["north", "east", "south", "west"]
    assert all(len(c.counting_lines) == 2 for c in junction.cameras)
    assert site.simulation is not None
    assert (built.site_file.parent / site.simulation.sumocfg).resolve() == built.sumocfg


def test_t_junction_and_corridor(scenario_cache: Path) -> None:
    t_site = build_scenario("t_junction", scenario_cache).site()
    (tee,) = t_site.intersections
    assert [a.id for a in tee.approaches] == ["east", "south", "west"]
    assert len(tee.phases) == 2
    # The right turn from the west yields to oncoming traffic: an opposed approach.
    assert {a.id: a.protected for a in tee.approaches} == {
        "east": True, "south": True, "west": False}

    corridor = build_scenario("corridor", scenario_cache).site()
    assert [i.id for i in corridor.intersections] == ["J1", "J2", "J3"]
    assert [i.plan.offset_s for i in corridor.intersections] == [0, 27, 54]
    assert {i.plan.cycle_s for i in corridor.intersections} == {90}


def test_build_is_cached_and_rebuilt_when_a_source_changes(
    scenario_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = build_scenario("four_arm", scenario_cache)
    assert build_scenario("four_arm", scenario_cache) == first
    import simulator.bundled as bundled

    copy = tmp_path / "scenarios"
    subprocess.run(["cp", "-r", str(bundled.SCENARIO_ROOT), str(copy)], check=True)
    yaml_file = copy / "four_arm" / "scenario.yaml"
    yaml_file.write_text(yaml_file.read_text().replace("N2C: 1000", "N2C: 1200"))
    monkeypatch.setattr(bundled, "SCENARIO_ROOT", copy)
    rebuilt = build_scenario("four_arm", scenario_cache)
    assert rebuilt.sumocfg != first.sumocfg
    assert 'from="N2C"' in rebuilt.sumocfg.with_suffix(".rou.xml").read_text()


@pytest.mark.parametrize(("game", "intersections"), [("cross", 1), ("corridor", 3),
                                                      ("grid6", 6)])
def test_imports_sumo_game_scenarios_it_did_not_write(
    game: str, intersections: int, tmp_path: Path
) -> None:
    result = import_sumocfg(game_scenario(game), site_id=game, site_file_dir=tmp_path)
    site = result.site
    assert len(site.intersections) == intersections
    # Those programmes are switched by hand in SUMO's game: not fixed-time plans, said so.
    assert all("not a fixed-time plan" in w or "yellow" in w for w in result.warnings)
    assert len(result.warnings) >= intersections
    for intersection in site.intersections:
        served = {m.split(":")[0] for p in intersection.phases for m in p.movements}
        assert served == {a.id for a in intersection.approaches}
        assert intersection.plan.cycle_s <= 300


def test_imports_a_netgenerate_grid(tmp_path: Path) -> None:
    net = tmp_path / "grid.net.xml"
    run_tool("netgenerate", ["--grid", "--grid.number", "3", "--grid.length", "200",
                             "--default.lanenumber", "2", "--default-junction-type",
                             "traffic_light", "--tls.default-type", "static",
                             "--output-file", str(net)])
    cfg = tmp_path / "grid.sumocfg"
    cfg.write_text('<configuration><input><net-file value="grid.net.xml"/></input>'
                   '</configuration>')
    result = import_sumocfg(cfg, site_id="grid", origin_lat_lon=(-0.5, 117.15))
    site = result.site
    net_tls = sumolib.net.readNet(str(net), withPrograms=True).getTrafficLights()
    assert len(site.intersections) == len(net_tls) == 9
    centre = next(i for i in site.intersections if len(i.approaches) == 4)
    assert sorted(a.id for a in centre.approaches) == ["east", "north", "south", "west"]
    assert all(len(a.lanes) == 2 for a in centre.approaches)
    assert all(-0.51 < i.lat < -0.49 and 117.14 < i.lon < 117.16 for i in site.intersections)


def test_cli_import_writes_a_site_file_that_validates(tmp_path: Path) -> None:
    out = tmp_path / "cross.site.yaml"
    imported = subprocess.run(
        [sys.executable, "-m", "simpang", "scenario", "import", str(game_scenario("cross")),
         "--out", str(out), "--site-id", "cross", "--origin", "-0.5,117.1"],
        capture_output=True, text=True, check=False,
    )
    assert imported.returncode == 0, imported.stderr
    assert "1 intersections, 4 approaches, 10 loops, 4 cameras" in imported.stdout
    assert "not a fixed-time plan" in imported.stdout + imported.stderr
    validated = subprocess.run(
        [sys.executable, "-m", "simpang", "site", "validate", str(out)],
        capture_output=True, text=True, check=False,
    )
    assert validated.returncode == 0, validated.stdout + validated.stderr
    site = load_site(out)
    assert site.simulation is not None
    assert (out.parent / site.simulation.sumocfg).resolve() == game_scenario("cross").resolve()


def test_cli_import_of_a_missing_file_says_so(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "simpang", "scenario", "import", str(tmp_path / "nope.sumocfg")],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 1
    assert "cannot read SUMO configuration" in result.stdout + result.stderr
