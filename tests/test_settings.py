"""Settings: defaults, environment (nested and the flat InfluxDB spelling), the YAML file,
precedence, window validation and redaction of secrets."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
from pydantic import ValidationError

from simpang.settings import DEMO_SITE_FILE, Settings
from simpang.windows import WindowSpec

TOKEN = "influx-token-Zq8#not-for-logs"
SASL_PASSWORD = "sasl-pa55word-Kx1!"
REDACTED = "**********"


pytestmark = pytest.mark.usefixtures("clean_env")


def write_yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "simpang.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults() -> None:
    settings = Settings()
    assert settings.app_id == "simpang"
    assert settings.site_file == DEMO_SITE_FILE
    assert settings.site_file.name == "kaltim_demo_site.yaml"
    assert settings.site_file.is_file()
    assert settings.data_dir == Path("/tmp/simpang")
    assert settings.log_level == "info"
    assert settings.web_port is None
    assert settings.health_interval_s == 10.0
    assert settings.worker_id == f"{socket.gethostname()}-{os.getpid()}"
    assert settings.kafka.brokers == "127.0.0.1:9092"
    assert settings.kafka.broker_list() == ["127.0.0.1:9092"]
    assert settings.kafka.security_protocol == "PLAINTEXT"
    assert settings.kafka.sasl_password is None
    assert settings.influx.url is None
    assert settings.influx.token is None
    assert (settings.influx.org, settings.influx.bucket) == ("simpang", "simpang")
    assert settings.influx.batch_max_points == 5000
    assert settings.topics.prefix == ""
    assert settings.topics.name("sensor_readings") == "sensor-readings"
    assert settings.topics.partitions == 4
    assert settings.windows.windows == "60,300/60"
    assert settings.windows.specs() == [WindowSpec(60, 60), WindowSpec(300, 60)]
    assert [s.label for s in settings.windows.specs()] == ["60s", "300s-every-60s"]
    assert settings.windows.grace_s == 5.0
    assert settings.windows.max_future_skew_s == 120.0


def test_nested_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIMPANG_KAFKA__BROKERS", "k1:9092, k2:9093,,")
    monkeypatch.setenv("SIMPANG_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("SIMPANG_TOPICS__PREFIX", "smd-")
    monkeypatch.setenv("SIMPANG_WINDOWS__GRACE_S", "2.5")
    monkeypatch.setenv("SIMPANG_WEB_PORT", "6066")
    settings = Settings()
    assert settings.kafka.brokers == "k1:9092, k2:9093,,"
    assert settings.kafka.broker_list() == ["k1:9092", "k2:9093"]
    assert settings.kafka.security_protocol == "SASL_SSL"
    assert settings.kafka.session_timeout_s == 6.0  # untouched sibling keeps its default
    assert settings.topics.name("dead_letters") == "smd-dead-letters"
    assert settings.windows.grace_s == 2.5
    assert settings.windows.windows == "60,300/60"
    assert settings.web_port == 6066


def test_invalid_env_value_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIMPANG_KAFKA__SECURITY_PROTOCOL", "TLS")
    with pytest.raises(ValidationError) as info:
        Settings()
    assert [e["loc"] for e in info.value.errors()] == [("kafka", "security_protocol")]


def test_flat_influx_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIMPANG_INFLUX_URL", "http://influx.flat:8086")
    monkeypatch.setenv("SIMPANG_INFLUX_TOKEN", TOKEN)
    monkeypatch.setenv("SIMPANG_INFLUX_ORG", "dishub-kaltim")
    monkeypatch.setenv("SIMPANG_INFLUX_BUCKET", "traffic")
    influx = Settings().influx
    assert influx.url == "http://influx.flat:8086"
    assert influx.token is not None
    assert influx.token.get_secret_value() == TOKEN
    assert influx.org == "dishub-kaltim"
    assert influx.bucket == "traffic"
    assert influx.timeout_s == 10.0


def test_empty_flat_influx_variable_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIMPANG_INFLUX_URL", "")
    monkeypatch.setenv("SIMPANG_INFLUX_BUCKET", "traffic")
    influx = Settings().influx
    assert influx.url is None
    assert influx.bucket == "traffic"


def test_nested_influx_env_wins_over_flat(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIMPANG_INFLUX_URL", "http://flat:8086")
    monkeypatch.setenv("SIMPANG_INFLUX__URL", "http://nested:8086")
    monkeypatch.setenv("SIMPANG_INFLUX_TOKEN", "flat-token")
    monkeypatch.setenv("SIMPANG_INFLUX__TOKEN", TOKEN)
    monkeypatch.setenv("SIMPANG_INFLUX_BUCKET", "flat-bucket")  # only flat: still used
    influx = Settings().influx
    assert influx.url == "http://nested:8086"
    assert influx.token is not None
    assert influx.token.get_secret_value() == TOKEN
    assert influx.bucket == "flat-bucket"
    assert influx.org == "simpang"


def test_keyword_arguments_win_over_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIMPANG_APP_ID", "from-env")
    monkeypatch.setenv("SIMPANG_INFLUX_URL", "http://flat:8086")
    settings = Settings(app_id="from-code", influx={"url": "http://code:8086"})
    assert settings.app_id == "from-code"
    assert settings.influx.url == "http://code:8086"


def test_yaml_settings_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_yaml(tmp_path, (
        "app_id: simpang-smd\n"
        "log_level: debug\n"
        "kafka:\n  brokers: file-broker:9092\n  sasl_username: simpang\n"
        "influx:\n  url: http://file:8086\n  org: file-org\n"
        "windows:\n  windows: '30,120/30'\n"
    ))
    monkeypatch.setenv("SIMPANG_SETTINGS_FILE", str(path))
    settings = Settings()
    assert settings.app_id == "simpang-smd"
    assert settings.log_level == "debug"
    assert settings.kafka.brokers == "file-broker:9092"
    assert settings.kafka.sasl_username == "simpang"
    assert settings.influx.url == "http://file:8086"
    assert settings.influx.org == "file-org"
    assert settings.influx.bucket == "simpang"
    assert settings.windows.specs() == [WindowSpec(30, 30), WindowSpec(120, 30)]


def test_env_wins_over_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_yaml(tmp_path, (
        "app_id: from-file\n"
        "kafka:\n  brokers: file-broker:9092\n  rebalance_timeout_s: 9\n"
        "influx:\n  url: http://file:8086\n  bucket: file-bucket\n  token: file-token\n"
    ))
    monkeypatch.setenv("SIMPANG_SETTINGS_FILE", str(path))
    monkeypatch.setenv("SIMPANG_APP_ID", "from-env")
    monkeypatch.setenv("SIMPANG_KAFKA__BROKERS", "env-broker:9092")
    monkeypatch.setenv("SIMPANG_INFLUX_URL", "http://flat-env:8086")
    settings = Settings()
    assert settings.app_id == "from-env"
    assert settings.kafka.brokers == "env-broker:9092"
    assert settings.kafka.rebalance_timeout_s == 9.0  # the file still fills the rest
    assert settings.influx.url == "http://flat-env:8086"
    assert settings.influx.bucket == "file-bucket"
    assert settings.influx.token is not None
    assert settings.influx.token.get_secret_value() == "file-token"


def test_missing_settings_file_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIMPANG_SETTINGS_FILE", str(tmp_path / "typo.yaml"))
    with pytest.raises((OSError, ValueError)):
        Settings()


@pytest.mark.parametrize(
    ("windows", "message"),
    [
        ("60/7", "window size_s must be a multiple of step_s"),
        ("30/60", "window needs 0 < step_s <= size_s"),
        ("0", "window needs 0 < step_s <= size_s"),
        ("60,abc", "invalid literal for int() with base 10: 'abc'"),
        (" , ", "at least one window is needed"),
    ],
)
def test_window_spec_validation(
    monkeypatch: pytest.MonkeyPatch, windows: str, message: str
) -> None:
    monkeypatch.setenv("SIMPANG_WINDOWS__WINDOWS", windows)
    with pytest.raises(ValidationError) as info:
        Settings()
    (error,) = info.value.errors()
    assert error["loc"] == ("windows", "windows")
    assert message in error["msg"]


def test_window_spec_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIMPANG_WINDOWS__WINDOWS", "15, 900/300 ,")
    assert Settings().windows.specs() == [WindowSpec(15, 15), WindowSpec(900, 300)]


def test_redacted_never_contains_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIMPANG_INFLUX_TOKEN", TOKEN)
    monkeypatch.setenv("SIMPANG_KAFKA__SASL_USERNAME", "simpang-user")
    monkeypatch.setenv("SIMPANG_KAFKA__SASL_PASSWORD", SASL_PASSWORD)
    settings = Settings()
    assert settings.influx.token is not None
    assert settings.influx.token.get_secret_value() == TOKEN
    assert settings.kafka.sasl_password is not None
    assert settings.kafka.sasl_password.get_secret_value() == SASL_PASSWORD

    redacted = settings.redacted()
    assert redacted["influx"]["token"] == REDACTED
    assert redacted["kafka"]["sasl_password"] == REDACTED
    assert redacted["kafka"]["sasl_username"] == "simpang-user"
    text = json.dumps(redacted)
    assert TOKEN not in text
    assert SASL_PASSWORD not in text
    assert TOKEN not in repr(settings)
    assert SASL_PASSWORD not in str(settings)


def test_redacted_secrets_from_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_yaml(tmp_path, (
        f"influx:\n  token: '{TOKEN}'\nkafka:\n  sasl_password: '{SASL_PASSWORD}'\n"
    ))
    monkeypatch.setenv("SIMPANG_SETTINGS_FILE", str(path))
    text = json.dumps(Settings().redacted())
    assert TOKEN not in text
    assert SASL_PASSWORD not in text
    assert text.count(REDACTED) == 2


def test_redacted_is_plain_json_data(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIMPANG_DATA_DIR", "/var/lib/simpang")
    redacted = Settings().redacted()
    assert redacted["data_dir"] == "/var/lib/simpang"
    assert redacted["site_file"] == str(DEMO_SITE_FILE)
    assert redacted["influx"]["token"] is None
    assert redacted["windows"]["windows"] == "60,300/60"
    assert json.loads(json.dumps(redacted)) == redacted
