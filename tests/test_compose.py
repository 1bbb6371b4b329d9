"""Docker cannot run on the test machines, so the compose file and Dockerfile are checked as a
contract: what they pass to the worker must be settings it understands and consistent with the
servers beside it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from simpang.settings import Settings

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return loaded


def resolve_defaults(value: str) -> str:
    """``${NAME:-default}`` → ``default`` (what compose substitutes with NAME unset)."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def test_services_and_dependencies(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"kafka", "influxdb", "worker"} <= set(services)
    assert services["worker"]["depends_on"] == {
        "kafka": {"condition": "service_healthy"},
        "influxdb": {"condition": "service_healthy"},
    }
    assert services["influxdb"]["image"].startswith("influxdb:2.")
    assert "healthcheck" in services["kafka"] and "healthcheck" in services["influxdb"]


@pytest.mark.usefixtures("clean_env")
def test_worker_environment_is_valid_settings(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    services = compose["services"]
    env = {k: resolve_defaults(str(v)) for k, v in services["worker"]["environment"].items()}
    for name, value in env.items():
        assert name.startswith("SIMPANG_"), name
        monkeypatch.setenv(name, value)
    settings = Settings()
    kafka = services["kafka"]["environment"]
    assert f"PLAINTEXT://{settings.kafka.brokers}" in kafka["KAFKA_ADVERTISED_LISTENERS"]
    assert settings.influx.url == "http://influxdb:8086"
    influx = {k: resolve_defaults(str(v)) for k, v in services["influxdb"]["environment"].items()}
    assert settings.influx.org == influx["DOCKER_INFLUXDB_INIT_ORG"]
    assert settings.influx.bucket == influx["DOCKER_INFLUXDB_INIT_BUCKET"]
    assert settings.influx.token is not None
    assert settings.influx.token.get_secret_value() == influx["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"]
    # The site file it names is in the image (the Dockerfile copies simulator/ to /app).
    assert str(settings.site_file).startswith("/app/")
    assert (REPO / str(settings.site_file).removeprefix("/app/")).exists()


def test_dockerfile_copies_every_package() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\S+) \1$", dockerfile, flags=re.MULTILINE))
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    include = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.rstrip("*") for pattern in include}
    assert packages <= copied, packages - copied
    assert re.search(r'^ENTRYPOINT \["simpang"\]$', dockerfile, flags=re.MULTILINE)
    assert "simpang" in pyproject["project"]["scripts"]
