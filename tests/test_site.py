"""The site model and site-file loading: the demo site, every validation the model implements
(each with the file, the path inside the file and the problem in the error) and PCU factors."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from simpang.settings import DEMO_SITE_FILE
from simpang.site import Site
from simpang.site_file import SiteFileError, format_location, load_site
from simpang.vehicles import PcuFactors, VehicleClass

DEMO_INTERSECTIONS = ["smd-lembuswana", "smd-air-hitam", "bpn-muara-rapak", "bpn-gunung-malang"]
Mutation = Callable[[dict[str, Any]], None]


def demo_data() -> dict[str, Any]:
    data = yaml.safe_load(DEMO_SITE_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def write_site(tmp_path: Path, data: Any, name: str = "site.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def load_error(path: Path) -> SiteFileError:
    with pytest.raises(SiteFileError) as info:
        load_site(path)
    return info.value


def mutated_error(tmp_path: Path, mutate: Mutation) -> SiteFileError:
    data = demo_data()
    mutate(data)
    return load_error(write_site(tmp_path, data))


# --- the demo site --------------------------------------------------------------------------


def test_demo_site_loads_with_four_intersections_in_file_order() -> None:
    site = load_site(DEMO_SITE_FILE)
    assert site.id == "kaltim-demo"
    assert site.name == "East Kalimantan demonstration site"
    assert site.timezone == "Asia/Makassar"
    assert [i.id for i in site.intersections] == DEMO_INTERSECTIONS
    assert site.intersection("bpn-muara-rapak").name == "Simpang Muara Rapak, Balikpapan"
    with pytest.raises(KeyError):
        site.intersection("nowhere")


def test_demo_site_geometry_and_plans() -> None:
    site = load_site(str(DEMO_SITE_FILE))  # a str path works as well as a Path
    lembuswana = site.intersection("smd-lembuswana")
    assert [a.id for a in lembuswana.approaches] == ["north", "east", "south", "west"]
    assert [lane.id for lane in lembuswana.approaches[0].lanes] == ["n1", "n2"]
    assert [p.id for p in lembuswana.phases] == ["p-north", "p-east", "p-south", "p-west"]
    assert lembuswana.plan.cycle_s == 130
    assert lembuswana.plan.greens_s == {"p-north": 30, "p-east": 25, "p-south": 30, "p-west": 25}
    assert lembuswana.approaches[0].lanes[0].width_m == 3.0  # default
    muara_rapak = site.intersection("bpn-muara-rapak")
    assert [a.id for a in muara_rapak.approaches] == ["north", "east", "west"]
    assert muara_rapak.plan.cycle_s == 95
    assert {i.id: len(i.sensors) for i in site.intersections} == {
        "smd-lembuswana": 8, "smd-air-hitam": 8, "bpn-muara-rapak": 5, "bpn-gunung-malang": 8,
    }


def test_demo_sensor_locations_map_devices_to_lanes() -> None:
    locations = load_site(DEMO_SITE_FILE).sensor_locations()
    assert len(locations) == 29
    n1 = locations["smd-lembuswana-n1-loop"]
    assert (n1.intersection, n1.approach, n1.lane, n1.kind) == (
        "smd-lembuswana", "north", "n1", "loop"
    )
    w2 = locations["bpn-gunung-malang-w2-loop"]
    assert (w2.intersection, w2.approach, w2.lane, w2.kind) == (
        "bpn-gunung-malang", "west", "w2", "loop"
    )
    radar = locations["bpn-muara-rapak-e2-radar"]
    assert (radar.intersection, radar.approach, radar.lane, radar.kind) == (
        "bpn-muara-rapak", "east", "e2", "radar"
    )
    assert {loc.kind for loc in locations.values()} == {"loop", "radar"}
    assert sum(loc.kind == "radar" for loc in locations.values()) == 5
    # Every device id names its intersection and lane, as the file was written.
    for device_id, loc in locations.items():
        assert device_id.startswith(f"{loc.intersection}-{loc.lane}-"), device_id


def test_demo_approach_protection() -> None:
    protection = load_site(DEMO_SITE_FILE).approach_protection()
    assert len(protection) == 4 + 4 + 3 + 4
    assert protection[("bpn-muara-rapak", "west")] is True
    assert ("bpn-muara-rapak", "south") not in protection
    assert all(protection.values())


def test_site_model_is_frozen() -> None:
    site = load_site(DEMO_SITE_FILE)
    with pytest.raises(ValueError, match="frozen"):
        site.id = "other"  # type: ignore[misc]


# --- file-level problems --------------------------------------------------------------------


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    error = load_error(path)
    assert error.path == path
    assert error.problems == [("(file)", "No such file or directory")]
    assert str(error) == f"{path}: (file): No such file or directory"


def test_a_directory_is_not_a_site_file(tmp_path: Path) -> None:
    error = load_error(tmp_path)
    assert error.problems == [("(file)", "Is a directory")]
    assert str(error).startswith(f"{tmp_path}: (file): ")


def test_invalid_yaml_reports_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("id: demo\nname: Demo\nintersections: [\n  - id: x\n", encoding="utf-8")
    error = load_error(path)
    assert len(error.problems) == 1
    where, what = error.problems[0]
    assert where == "line 4, column 3"
    assert what.startswith("not valid YAML: ")
    assert str(error) == f"{path}: line 4, column 3: {what}"


def test_invalid_yaml_tab_indentation(tmp_path: Path) -> None:
    path = tmp_path / "tabs.yaml"
    path.write_text("id: demo\nname: Demo\n\tintersections: []\n", encoding="utf-8")
    error = load_error(path)
    assert error.problems == [
        ("line 3, column 1", "not valid YAML: found character '\\t' that cannot start any token")
    ]


@pytest.mark.parametrize("text", ["", "- id: demo\n- id: other\n", "just a string\n", "42\n"])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(text, encoding="utf-8")
    error = load_error(path)
    assert error.problems == [("(top level)", "expected a mapping with id, name, intersections")]
    assert str(error) == (
        f"{path}: (top level): expected a mapping with id, name, intersections"
    )


def test_every_problem_is_listed_one_per_line(tmp_path: Path) -> None:
    path = write_site(tmp_path, {"id": "bad id!", "intersections": []})
    error = load_error(path)
    assert [where for where, _ in error.problems] == ["id", "name", "intersections"]
    lines = str(error).splitlines()
    assert lines[0] == (
        f"{path}: id: String should match pattern '^[A-Za-z0-9][A-Za-z0-9._-]{{0,63}}$'"
    )
    assert lines[1] == f"{path}: name: Field required"
    assert lines[2] == (
        f"{path}: intersections: List should have at least 1 item after validation, not 0"
    )
    assert len(lines) == 3


def test_format_location() -> None:
    assert format_location(("intersections", 0, "plan", "cycle_s")) == (
        "intersections[0].plan.cycle_s"
    )
    assert format_location((3, "count")) == "[3].count"
    assert format_location(()) == "(top level)"
    assert format_location(("a", 1, 2, "b")) == "a[1][2].b"


# --- field-level and cross-reference validations ----------------------------------------------


def _set(path: list[str | int], value: Any) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        target: Any = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


def _append_sensor(intersection: int, sensor: dict[str, Any]) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        data["intersections"][intersection]["sensors"].append(sensor)

    return mutate


def _copy_intersection(source: int, target: int, new_id: str) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        data["intersections"][target] = copy.deepcopy(data["intersections"][source])
        data["intersections"][target]["id"] = new_id

    return mutate


def _rename_phase(intersection: int, phase: int, new_id: str) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        data["intersections"][intersection]["phases"][phase]["id"] = new_id

    return mutate


def _add_camera(approach: str, lines: list[dict[str, Any]] | None = None) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        data["intersections"][0]["cameras"] = [{
            "id": "cam-1", "source_url": "rtsp://cam-1/stream", "approach": approach,
            "counting_lines": lines or [],
        }]

    return mutate


def _two(first: Mutation, second: Mutation) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        first(data)
        second(data)

    return mutate


CASES: list[tuple[str, Mutation, str, str]] = [
    (
        "cycle_s above 300",
        _set(["intersections", 0, "plan", "cycle_s"], 400),
        "intersections[0].plan.cycle_s",
        "Input should be less than or equal to 300",
    ),
    (
        "cycle_s not a number",
        _set(["intersections", 0, "plan", "cycle_s"], "long"),
        "intersections[0].plan.cycle_s",
        "Input should be a valid number, unable to parse string as a number",
    ),
    (
        "negative offset",
        _set(["intersections", 2, "plan", "offset_s"], -5),
        "intersections[2].plan.offset_s",
        "Input should be greater than or equal to 0",
    ),
    (
        "min green above max green",
        _set(["intersections", 1, "phases", 2, "min_green_s"], 70),
        "intersections[1].phases[2]",
        "max_green_s is below min_green_s",
    ),
    (
        "yellow shorter than 3 s",
        _set(["intersections", 0, "phases", 0, "yellow_s"], 2),
        "intersections[0].phases[0].yellow_s",
        "Input should be greater than or equal to 3",
    ),
    (
        "all-red longer than 10 s",
        _set(["intersections", 0, "phases", 1, "all_red_s"], 11),
        "intersections[0].phases[1].all_red_s",
        "Input should be less than or equal to 10",
    ),
    (
        "zero min green",
        _set(["intersections", 0, "phases", 1, "min_green_s"], 0),
        "intersections[0].phases[1].min_green_s",
        "Input should be greater than 0",
    ),
    (
        "unknown key",
        _set(["intersections", 3, "plan", "cycle"], 110),
        "intersections[3].plan.cycle",
        "Extra inputs are not permitted",
    ),
    (
        "missing plan",
        lambda data: data["intersections"][0].pop("plan"),
        "intersections[0].plan",
        "Field required",
    ),
    (
        "id that is not a slug",
        _set(["intersections", 0, "id"], "Simpang Lembuswana"),
        "intersections[0].id",
        "String should match pattern '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'",
    ),
    (
        "latitude out of range",
        _set(["intersections", 0, "lat"], -91),
        "intersections[0].lat",
        "Input should be greater than or equal to -90",
    ),
    (
        "longitude out of range",
        _set(["intersections", 3, "lon"], 181),
        "intersections[3].lon",
        "Input should be less than or equal to 180",
    ),
    (
        "no approaches",
        _set(["intersections", 0, "approaches"], []),
        "intersections[0].approaches",
        "List should have at least 1 item after validation, not 0",
    ),
    (
        "lane without movements",
        _set(["intersections", 0, "approaches", 1, "lanes", 0, "movements"], []),
        "intersections[0].approaches[1].lanes[0].movements",
        "List should have at least 1 item after validation, not 0",
    ),
    (
        "unknown movement",
        _set(["intersections", 0, "approaches", 1, "lanes", 0, "movements"], ["sideways"]),
        "intersections[0].approaches[1].lanes[0].movements[0]",
        "Input should be 'through', 'left', 'right' or 'uturn'",
    ),
    (
        "lane too narrow",
        _set(["intersections", 0, "approaches", 0, "lanes", 1, "width_m"], 1.5),
        "intersections[0].approaches[0].lanes[1].width_m",
        "Input should be greater than 1.5",
    ),
    (
        "saturation flow too high",
        _set(
            ["intersections", 0, "approaches", 0, "lanes", 1, "saturation_flow_pcu_per_hour"],
            3500,
        ),
        "intersections[0].approaches[0].lanes[1].saturation_flow_pcu_per_hour",
        "Input should be less than or equal to 3000",
    ),
    (
        "speed limit zero",
        _set(["intersections", 2, "approaches", 0, "speed_limit_kmh"], 0),
        "intersections[2].approaches[0].speed_limit_kmh",
        "Input should be greater than 0",
    ),
    (
        "duplicate lane id",
        _set(["intersections", 0, "approaches", 0, "lanes", 1, "id"], "n1"),
        "intersections[0].approaches[0]",
        "duplicate lane id 'n1'",
    ),
    (
        "duplicate approach id",
        _set(["intersections", 0, "approaches", 1, "id"], "north"),
        "intersections[0]",
        "duplicate approach id 'north'",
    ),
    (
        "duplicate phase id",
        _rename_phase(0, 1, "p-north"),
        "intersections[0]",
        "duplicate phase id 'p-north'",
    ),
    (
        "phase serving an unknown approach",
        _set(["intersections", 2, "phases", 0, "movements"], ["south:left"]),
        "intersections[2]",
        "phase 'p-north' serves unknown approach 'south'",
    ),
    (
        "phase serving a movement no lane has",
        _set(["intersections", 2, "phases", 1, "movements"], ["east:left"]),
        "intersections[2]",
        "phase 'p-east': approach 'east' has no 'left' lane",
    ),
    (
        "plan naming an unknown phase",
        _set(
            ["intersections", 2, "plan", "greens_s"],
            {"p-north": 30, "p-east": 25, "p-south": 25},
        ),
        "intersections[2]",
        "plan greens_s must name every phase exactly: got ['p-east', 'p-north', 'p-south'], "
        "phases are ['p-east', 'p-north', 'p-west']",
    ),
    (
        "plan missing a phase",
        lambda data: data["intersections"][1]["plan"]["greens_s"].pop("p-west"),
        "intersections[1]",
        "plan greens_s must name every phase exactly: got ['p-east', 'p-north', 'p-south'], "
        "phases are ['p-east', 'p-north', 'p-south', 'p-west']",
    ),
    (
        "plan green below the phase minimum",
        _two(
            _set(["intersections", 2, "plan", "greens_s", "p-east"], 5),
            _set(["intersections", 2, "plan", "cycle_s"], 75),
        ),
        "intersections[2]",
        "plan green 5.0 s for phase 'p-east' is outside [8.0, 60.0]",
    ),
    (
        "cycle inconsistent with greens and intergreens",
        _set(["intersections", 3, "plan", "cycle_s"], 100),
        "intersections[3]",
        "plan cycle_s 100.0 differs from greens + yellow + all-red = 110.0",
    ),
    (
        "sensor on an unknown lane",
        _append_sensor(0, {"device_id": "extra-loop", "kind": "loop", "approach": "north",
                           "lane": "n9"}),
        "intersections[0]",
        "sensor 'extra-loop' names unknown lane 'north'/'n9'",
    ),
    (
        "sensor on an unknown approach",
        _append_sensor(2, {"device_id": "extra-radar", "kind": "radar", "approach": "south",
                           "lane": "s1"}),
        "intersections[2]",
        "sensor 'extra-radar' names unknown lane 'south'/'s1'",
    ),
    (
        "sensor of an unknown kind",
        _set(["intersections", 0, "sensors", 3, "kind"], "camera"),
        "intersections[0].sensors[3].kind",
        "Input should be 'loop', 'radar' or 'counter'",
    ),
    (
        "camera on an unknown approach",
        _add_camera("up"),
        "intersections[0]",
        "camera 'cam-1' names unknown approach 'up'",
    ),
    (
        "duplicate intersection id",
        _set(["intersections", 3, "id"], "smd-lembuswana"),
        "(top level)",
        "duplicate intersection id 'smd-lembuswana'",
    ),
    (
        "same sensors in a copied intersection",
        _copy_intersection(0, 1, "smd-copy"),
        "(top level)",
        "duplicate sensor device_id 'smd-lembuswana-n1-loop'",
    ),
    (
        "duplicate sensor device id",
        _append_sensor(1, {"device_id": "smd-lembuswana-n1-loop", "kind": "loop",
                           "approach": "north", "lane": "n1"}),
        "(top level)",
        "duplicate sensor device_id 'smd-lembuswana-n1-loop'",
    ),
    (
        "negative PCU factor",
        _set(["pcu_factors"], {"bus": -1}),
        "pcu_factors.bus",
        "Input should be greater than or equal to 0",
    ),
    (
        "unknown PCU class",
        _set(["pcu_factors"], {"becak": 0.5}),
        "pcu_factors.becak",
        "Extra inputs are not permitted",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "where", "what"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_broken_site_file_names_file_path_and_problem(
    tmp_path: Path, mutate: Mutation, where: str, what: str
) -> None:
    data = demo_data()
    mutate(data)
    path = write_site(tmp_path, data)
    error = load_error(path)
    assert error.path == path
    assert error.problems == [(where, what)]
    assert str(error) == f"{path}: {where}: {what}"


def test_duplicate_camera_id_across_intersections(tmp_path: Path) -> None:
    def mutate(data: dict[str, Any]) -> None:
        for index in (0, 1):
            data["intersections"][index]["cameras"] = [
                {"id": "cam-1", "source_url": f"rtsp://cam-{index}/s", "approach": "north"}
            ]

    error = mutated_error(tmp_path, mutate)
    assert error.problems == [("(top level)", "duplicate camera id 'cam-1'")]


def test_problems_in_several_intersections_are_all_reported(tmp_path: Path) -> None:
    def mutate(data: dict[str, Any]) -> None:
        data["intersections"][0]["plan"]["cycle_s"] = 0
        data["intersections"][3]["phases"][1]["max_green_s"] = 5

    error = mutated_error(tmp_path, mutate)
    assert error.problems == [
        ("intersections[0].plan.cycle_s", "Input should be greater than 0"),
        ("intersections[3].phases[1]", "max_green_s is below min_green_s"),
    ]
    assert len(str(error).splitlines()) == 2


def test_cycle_tolerance_is_half_a_second(tmp_path: Path) -> None:
    data = demo_data()
    data["intersections"][0]["plan"]["cycle_s"] = 130.5
    site = load_site(write_site(tmp_path, data, "ok.yaml"))
    assert site.intersections[0].plan.cycle_s == 130.5
    data["intersections"][0]["plan"]["cycle_s"] = 130.6
    error = load_error(write_site(tmp_path, data, "off.yaml"))
    assert error.problems == [
        ("intersections[0]", "plan cycle_s 130.6 differs from greens + yellow + all-red = 130.0")
    ]


def test_camera_with_counting_line_on_a_known_approach_loads(tmp_path: Path) -> None:
    line = {"id": "line-1", "start_xy": [0.1, 0.5], "end_xy": [0.9, 0.5], "approach": "north",
            "lane": "n1"}
    data = demo_data()
    _add_camera("north", [line])(data)
    site = load_site(write_site(tmp_path, data))
    camera = site.intersections[0].cameras[0]
    assert camera.approach == "north"
    assert camera.counting_lines[0].start_xy == (0.1, 0.5)
    assert camera.counting_lines[0].lane == "n1"


def test_counting_line_on_an_unknown_lane_is_rejected(tmp_path: Path) -> None:
    line = {"id": "line-1", "start_xy": [0, 0], "end_xy": [1, 1], "approach": "nowhere",
            "lane": "z9"}
    data = demo_data()
    _add_camera("north", [line])(data)
    load_error(write_site(tmp_path, data))


def test_unknown_timezone_is_rejected(tmp_path: Path) -> None:
    data = demo_data()
    data["timezone"] = "Borneo/Samarinda"
    load_error(write_site(tmp_path, data))


# --- PCU factors ------------------------------------------------------------------------------


def test_default_pcu_factors_follow_pkji() -> None:
    factors = PcuFactors()
    assert factors.for_class(VehicleClass.CAR) == 1.0
    assert factors.for_class(VehicleClass.BUS) == 1.3
    assert factors.for_class(VehicleClass.TRUCK) == 1.3
    assert factors.for_class(VehicleClass.MOTORCYCLE, protected=True) == 0.2
    assert factors.for_class(VehicleClass.MOTORCYCLE, protected=False) == 0.4
    assert factors.for_class(VehicleClass.MOTORCYCLE) == 0.2  # protected is the default
    assert factors.for_class(VehicleClass.BICYCLE) == 0.0
    assert factors.for_class(VehicleClass.UNCLASSIFIED) == 1.0
    # Protection only changes the motorcycle factor.
    assert factors.for_class(VehicleClass.BUS, protected=False) == 1.3


def test_pcu_of_a_mix() -> None:
    factors = PcuFactors()
    counts = {VehicleClass.MOTORCYCLE: 50, VehicleClass.CAR: 10, VehicleClass.BUS: 2,
              VehicleClass.TRUCK: 1, VehicleClass.BICYCLE: 7}
    # 50 × 0.2 + 10 + 3 × 1.3 + 7 × 0 = 23.9; opposed: 50 × 0.4 + 13.9 = 33.9.
    assert factors.pcu(counts) == pytest.approx(23.9)
    assert factors.pcu(counts, protected=False) == pytest.approx(33.9)
    assert factors.pcu({}) == 0.0


def test_demo_site_uses_default_pcu_factors() -> None:
    assert load_site(DEMO_SITE_FILE).pcu_factors == PcuFactors()


def test_site_file_overrides_some_pcu_factors(tmp_path: Path) -> None:
    data = demo_data()
    data["pcu_factors"] = {"motorcycle_protected": 0.25, "truck": 2.0, "unclassified": 0.5}
    site = load_site(write_site(tmp_path, data))
    factors = site.pcu_factors
    assert factors.for_class(VehicleClass.MOTORCYCLE, protected=True) == 0.25
    assert factors.for_class(VehicleClass.TRUCK) == 2.0
    assert factors.for_class(VehicleClass.UNCLASSIFIED) == 0.5
    # The rest keep their defaults.
    assert factors.for_class(VehicleClass.MOTORCYCLE, protected=False) == 0.4
    assert factors.for_class(VehicleClass.BUS) == 1.3
    assert factors.for_class(VehicleClass.CAR) == 1.0
    assert factors.pcu({VehicleClass.MOTORCYCLE: 4, VehicleClass.TRUCK: 1}) == pytest.approx(3.0)


def test_site_model_validate_without_a_file() -> None:
    site = Site.model_validate({
        "id": "mini", "name": "Mini",
        "intersections": [{
            "id": "x1", "name": "X", "lat": 0, "lon": 0,
            "approaches": [{"id": "a", "protected": False,
                            "lanes": [{"id": "a1", "movements": ["through", "uturn"]}]}],
            "phases": [{"id": "p1", "movements": ["a:uturn"], "min_green_s": 10,
                        "max_green_s": 10, "yellow_s": 3, "all_red_s": 0}],
            "plan": {"cycle_s": 13, "greens_s": {"p1": 10}},
            "sensors": [{"device_id": "c-1", "kind": "counter", "approach": "a", "lane": "a1"}],
        }],
    })
    assert site.approach_protection() == {("x1", "a"): False}
    assert site.sensor_locations()["c-1"].kind == "counter"
    assert site.timezone == "Asia/Makassar"
