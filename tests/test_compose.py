"""Docker cannot run on the test machines, so the compose file and Dockerfile are checked as a
contract: Debian's docker-compose validates the file (with .env.example, and refuses it without
secrets); what it passes to the worker must be settings the worker understands; Grafana gets
the provisioning and dashboards at the paths the provisioning files name, and every variable
they use; InfluxDB gets the DBRP mapping script the InfluxQL datasource depends on."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from dashboards.provisioning import DASHBOARDS_MOUNT
from simpang.settings import Settings

REPO = Path(__file__).resolve().parent.parent
ENV_EXAMPLE = REPO / ".env.example"


def env_example() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines()
             if line.strip() and not line.startswith("#"))
    return {key: value for key, value in pairs}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return loaded


def resolve(value: str) -> str:
    """``${NAME:-default}`` and ``${NAME:?message}`` as compose fills them from .env.example."""
    values = env_example()

    def fill(match: re.Match[str]) -> str:
        name, kind, rest = match.group(1), match.group(2), match.group(3)
        if name in values:
            return values[name]
        if kind == ":?":
            raise AssertionError(f"{name} is required but not in .env.example")
        return rest

    return re.sub(r"\$\{([A-Z_]+)(:-|:\?)?([^}]*)\}", fill, value)


def docker_compose(*args: str, env_file: Path | None) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    assert binary, "Debian's docker-compose is installed by ./dev test"
    options = ["--env-file", str(env_file)] if env_file else []
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith(("SIMPANG_", "GRAFANA_",
                                                                          "INFLUXDB_"))}
    return subprocess.run([binary, "--project-directory", str(REPO), "-f",
                           str(REPO / "docker-compose.yml"), *options, *args],
                          capture_output=True, text=True, timeout=60, env=clean_env, cwd=REPO)


def test_docker_compose_validates_the_file_with_every_profile(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(ENV_EXAMPLE.read_text())
    result = docker_compose("--profile", "simulator", "--profile", "mqtt", "--profile", "tansu",
                            "config", env_file=env_file)
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)
    assert set(resolved["services"]) == {"kafka", "influxdb", "grafana", "worker", "scenario",
                                         "simulator", "mosquitto", "mqtt-bridge", "minio",
                                         "minio-bucket", "tansu"}
    token = env_example()["SIMPANG_INFLUX_TOKEN"]
    assert resolved["services"]["worker"]["environment"]["SIMPANG_INFLUX_TOKEN"] == token
    assert resolved["services"]["grafana"]["environment"]["SIMPANG_INFLUX_TOKEN"] == token
    # A plain `up` starts the services that belong to no profile.
    default = {name for name, service in resolved["services"].items()
               if not service.get("profiles")}
    assert default == {"kafka", "influxdb", "grafana", "worker"}


def test_docker_compose_refuses_to_start_without_secrets(tmp_path: Path) -> None:
    empty = tmp_path / ".env"
    empty.write_text("")
    result = docker_compose("config", env_file=empty)
    assert result.returncode != 0
    assert "set INFLUXDB_ADMIN_PASSWORD in .env" in result.stderr


def test_env_example_holds_no_real_secret() -> None:
    values = env_example()
    for name in ("INFLUXDB_ADMIN_PASSWORD", "SIMPANG_INFLUX_TOKEN", "GRAFANA_ADMIN_PASSWORD",
                 "MQTT_BRIDGE_PASSWORD", "MINIO_ROOT_PASSWORD"):
        assert values[name].startswith("change-me"), name
    assert not (REPO / ".env").exists() or ".env" in (REPO / ".gitignore").read_text()


def test_services_dependencies_and_health(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["worker"]["depends_on"] == {
        "kafka": {"condition": "service_healthy"},
        "influxdb": {"condition": "service_healthy"},
    }
    assert services["influxdb"]["image"].startswith("influxdb:2.")
    for name in ("kafka", "influxdb", "grafana", "mosquitto"):
        assert "healthcheck" in services[name], name
    assert services["simulator"]["depends_on"]["scenario"] == {
        "condition": "service_completed_successfully"}
    assert "ports" not in services["worker"], "a fixed host port would stop --scale worker=N"


@pytest.mark.usefixtures("clean_env")
def test_the_bridge_environment_is_valid_settings(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    bridge = compose["services"]["mqtt-bridge"]
    for name, value in bridge["environment"].items():
        monkeypatch.setenv(name, resolve(str(value)))
    settings = Settings()
    assert settings.mqtt.host == "mosquitto" and settings.mqtt.port == 1883
    assert settings.mqtt.username == "simpang-bridge" and settings.mqtt.password is not None
    acl = (REPO / "deploy" / "mosquitto" / "acl").read_text()
    assert f"user {settings.mqtt.username}" in acl
    assert f"topic read {settings.mqtt.topic_prefix}/#" in acl
    mounts = compose["services"]["mosquitto"]["volumes"]
    assert "./deploy/mosquitto/acl:/mosquitto/config/acl:ro" in mounts
    assert "acl_file /mosquitto/config/acl" in (REPO / "deploy" / "mosquitto" /
                                                  "mosquitto.conf").read_text()


@pytest.mark.usefixtures("clean_env")
def test_the_durable_broker_serves_on_minio(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    services = compose["services"]
    tansu = services["tansu"]
    for name, value in tansu["environment"].items():
        monkeypatch.setenv(name, resolve(str(value)))
    settings = Settings()
    assert tansu["command"] == ["broker", "--durable"]
    assert settings.broker.s3_endpoint == "http://minio:9000"
    assert settings.broker.s3_secret_access_key is not None
    assert settings.broker.s3_secret_access_key.get_secret_value() == resolve(
        services["minio"]["environment"]["MINIO_ROOT_PASSWORD"])
    assert f"local/{settings.broker.s3_bucket}" in " ".join(services["minio-bucket"]["command"])
    assert f"{settings.broker.advertised_host}:{settings.broker.port}" == "tansu:9092"
    assert settings.broker.listen_host == "0.0.0.0"


@pytest.mark.usefixtures("clean_env")
def test_worker_environment_is_valid_settings(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    services = compose["services"]
    env = {k: resolve(str(v)) for k, v in services["worker"]["environment"].items()}
    for name, value in env.items():
        assert name.startswith("SIMPANG_"), name
        monkeypatch.setenv(name, value)
    settings = Settings()
    kafka = services["kafka"]["environment"]
    assert f"PLAINTEXT://{settings.kafka.brokers}" in kafka["KAFKA_ADVERTISED_LISTENERS"]
    assert settings.influx.url == "http://influxdb:8086"
    influx = {k: resolve(str(v)) for k, v in services["influxdb"]["environment"].items()}
    assert settings.influx.org == influx["DOCKER_INFLUXDB_INIT_ORG"]
    assert settings.influx.bucket == influx["DOCKER_INFLUXDB_INIT_BUCKET"]
    assert settings.influx.token is not None
    assert settings.influx.token.get_secret_value() == influx["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"]
    # The site file it names is in the image (the Dockerfile copies simulator/ to /app).
    assert str(settings.site_file).startswith("/app/")
    assert (REPO / str(settings.site_file).removeprefix("/app/")).exists()


def test_grafana_gets_the_provisioning_and_every_variable_it_uses(
    compose: dict[str, Any],
) -> None:
    grafana = compose["services"]["grafana"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"]}
    assert mounts["/etc/grafana/provisioning"] == "./dashboards/provisioning"
    assert mounts[DASHBOARDS_MOUNT] == "./dashboards/json"
    used = set()
    for path in (REPO / "dashboards" / "provisioning").rglob("*.yaml"):
        text = path.read_text()
        if "alerting" not in path.parts:  # rule queries keep $timeFilter; Grafana leaves them
            used |= set(re.findall(r"\$\{(\w+)\}", text))
    assert used == {"SIMPANG_INFLUX_URL", "SIMPANG_INFLUX_BUCKET", "SIMPANG_INFLUX_TOKEN"}
    assert used <= set(grafana["environment"])
    assert resolve(grafana["environment"]["SIMPANG_INFLUX_BUCKET"]) == resolve(
        compose["services"]["influxdb"]["environment"]["DOCKER_INFLUXDB_INIT_BUCKET"])


def test_the_dbrp_script_maps_the_bucket_once(compose: dict[str, Any], tmp_path: Path) -> None:
    """InfluxDB 2.x cannot run here: the script runs against a stand-in ``influx`` command that
    records its arguments and answers the two listings as the real CLI prints them."""
    mount = [v for v in compose["services"]["influxdb"]["volumes"] if "initdb" in v]
    assert mount == ["./deploy/influxdb/create-dbrp.sh:"
                     "/docker-entrypoint-initdb.d/create-dbrp.sh:ro"]
    script = REPO / "deploy" / "influxdb" / "create-dbrp.sh"
    assert script.stat().st_mode & stat.S_IXUSR
    log = tmp_path / "calls"
    influx = tmp_path / "influx"
    influx.write_text(
        "#!/bin/bash\n"
        f'echo "$*" >> {log}\n'
        'case "$1 $2 $3" in\n'
        '  "bucket list --name") printf "0a1b2c3d\\ttraffic\\tinfinite\\n" ;;\n'
        f'  "v1 dbrp list") [ -f {tmp_path}/mapped ] && printf "x\\ttraffic\\tautogen\\n" ;;\n'
        f'  "v1 dbrp create") touch {tmp_path}/mapped ;;\n'
        "esac\nexit 0\n")
    influx.chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "DOCKER_INFLUXDB_INIT_BUCKET": "traffic"}
    for _ in range(2):
        result = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
    calls = log.read_text().splitlines()
    creates = [c for c in calls if c.startswith("v1 dbrp create")]
    assert creates == ["v1 dbrp create --db traffic --rp autogen --bucket-id 0a1b2c3d "
                       "--default"]


def test_dockerfile_copies_every_package() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\S+) \1$", dockerfile, flags=re.MULTILINE))
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    include = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.rstrip("*") for pattern in include}
    assert packages <= copied, packages - copied
    assert re.search(r'^ENTRYPOINT \["simpang"\]$', dockerfile, flags=re.MULTILINE)
    assert "simpang" in pyproject["project"]["scripts"]
