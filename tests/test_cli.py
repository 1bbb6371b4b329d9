"""The `simpang` command line, through typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from simpang.cli import app
from simpang.settings import DEMO_SITE_FILE

runner = CliRunner()
TOKEN = "cli-influx-token-7f3a9e"


pytestmark = pytest.mark.usefixtures("clean_env")


def flat(text: str) -> str:
    """Output with Rich's line wrapping undone (wrapped lines break at spaces)."""
    return " ".join(text.split())


def broken_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A copy of the demo site with a zero cycle, under a short relative path."""
    data = yaml.safe_load(DEMO_SITE_FILE.read_text(encoding="utf-8"))
    data["intersections"][0]["plan"]["cycle_s"] = 0
    data["intersections"][2]["sensors"][0]["lane"] = "n7"
    monkeypatch.chdir(tmp_path)
    Path("broken.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
    return "broken.yaml"


def test_help_lists_the_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command, summary in [
        ("worker", "Run one stream-processing worker"),
        ("demo", "Embedded broker + worker + a SUMO scenario's detectors"),
        ("site", "Site files."),
        ("schema", "Print the InfluxDB measurement schema"),
        ("settings", "Print the effective settings as JSON, secrets redacted."),
    ]:
        assert f"│ {command} " in result.output, command
        assert summary in flat(result.output), summary


def test_no_arguments_shows_help() -> None:
    result = runner.invoke(app, [])
    assert result.exit_code == 2
    assert "Usage:" in result.output
    assert "worker" in result.output


def test_site_help_lists_validate() -> None:
    result = runner.invoke(app, ["site", "--help"])
    assert result.exit_code == 0
    assert "validate" in result.output
    assert "Check a site file" in flat(result.output)


def test_site_validate_demo_site() -> None:
    result = runner.invoke(app, ["site", "validate", str(DEMO_SITE_FILE)])
    assert result.exit_code == 0, result.output
    out = flat(result.output)
    assert "East Kalimantan demonstration site (kaltim-demo)" in out
    for intersection_id in ("smd-lembuswana", "smd-air-hitam", "bpn-muara-rapak",
                            "bpn-gunung-malang"):
        assert f"{intersection_id}:" in out
    rows = [line for line in result.output.splitlines() if line.startswith("│ ")]
    # Each intersection's id cell starts a row: approaches, lanes, phases, cycle s, sensors.
    cells = {
        row.split("│")[1].strip().split(":")[0]: [c.strip() for c in row.split("│")[2:7]]
        for row in rows
        if row.split("│")[2].strip()
    }
    assert cells == {
        "smd-lembuswana": ["4", "8", "4", "130", "8"],
        "smd-air-hitam": ["4", "8", "4", "120", "8"],
        "bpn-muara-rapak": ["3", "5", "3", "95", "5"],
        "bpn-gunung-malang": ["4", "8", "4", "110", "8"],
    }


def test_site_validate_broken_file_exits_1_with_file_path_and_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = broken_site(tmp_path, monkeypatch)
    result = runner.invoke(app, ["site", "validate", path])
    assert result.exit_code == 1
    out = flat(result.output)
    assert "broken.yaml: intersections[0].plan.cycle_s: Input should be greater than 0" in out
    assert "broken.yaml: intersections[2]: sensor 'bpn-muara-rapak-n1-radar' names unknown " \
        "lane 'north'/'n7'" in out
    assert "kaltim-demo" not in out  # no table for a broken site


def test_site_validate_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["site", "validate", "nope.yaml"])
    assert result.exit_code == 1
    assert flat(result.output) == "nope.yaml: (file): No such file or directory"


def test_site_validate_invalid_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("bad.yaml").write_text("id: x\nname: [unclosed\n", encoding="utf-8")
    result = runner.invoke(app, ["site", "validate", "bad.yaml"])
    assert result.exit_code == 1
    assert flat(result.output).startswith("bad.yaml: line 3, column 1: not valid YAML: ")


def test_site_validate_error_keeps_brackets_in_the_file_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("site[v2].yaml").write_text("- not a mapping\n", encoding="utf-8")
    result = runner.invoke(app, ["site", "validate", "site[v2].yaml"])
    assert result.exit_code == 1
    assert flat(result.output).startswith("site[v2].yaml: (top level): ")


def test_site_validate_error_with_closing_tag_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["site", "validate", "[/old]site.yaml"])
    assert result.exit_code == 1
    assert "No such file or directory" in result.output


def test_schema_lists_measurements() -> None:
    result = runner.invoke(app, ["schema"])
    assert result.exit_code == 0
    out = flat(result.output)
    assert ("approach_metrics: tags site, intersection, approach, level, lane, window, source"
            in out)
    assert "camera_health: tags camera, intersection, worker" in out
    assert "dead_letters: tags source, reason_code" in out
    assert "pipeline_health: tags worker" in out
    assert "consumer_lag: tags worker, topic, partition" in out
    for field, unit in [("flow_pcu_per_hour", "pcu/h"), ("count_motorcycle", "veh"),
                        ("uptime_s", "s"), ("metric_points_written", "points"),
                        ("lag_messages", "messages")]:
        assert any(
            line.split("│")[1:4] and line.split("│")[1].strip() == field
            and line.split("│")[3].strip() == unit
            for line in result.output.splitlines()
            if line.count("│") >= 4
        ), field
    # Measurements come in schema order.
    assert out.index("approach_metrics:") < out.index("dead_letters:") < out.index(
        "pipeline_health:"
    )


def test_settings_prints_json_without_the_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIMPANG_INFLUX_TOKEN", TOKEN)
    monkeypatch.setenv("SIMPANG_INFLUX_URL", "http://influx.example:8086")
    monkeypatch.setenv("SIMPANG_KAFKA__SASL_PASSWORD", "kafka-secret-123")
    result = runner.invoke(app, ["settings"])
    assert result.exit_code == 0, result.output
    assert TOKEN not in result.output
    assert "kafka-secret-123" not in result.output
    printed = json.loads(result.stdout)
    assert printed["influx"]["token"] == "**********"
    assert printed["influx"]["url"] == "http://influx.example:8086"
    assert printed["kafka"]["sasl_password"] == "**********"
    assert printed["kafka"]["brokers"] == "127.0.0.1:9092"
    assert printed["site_file"] == str(DEMO_SITE_FILE)


def test_settings_without_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIMPANG_APP_ID", "cli-test")
    result = runner.invoke(app, ["settings"])
    assert result.exit_code == 0
    printed = json.loads(result.stdout)
    assert printed["app_id"] == "cli-test"
    assert printed["influx"]["token"] is None
    assert printed["windows"]["windows"] == "60,300/60"
