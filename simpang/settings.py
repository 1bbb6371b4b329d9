"""One settings object for the whole application.

Sources, highest priority first: keyword arguments, environment variables ``SIMPANG_*``
(nested with ``__``, e.g. ``SIMPANG_KAFKA__BROKERS``), the YAML file named by
``SIMPANG_SETTINGS_FILE``, then the defaults here. Secrets are ``SecretStr`` and never
appear in logs or in :meth:`Settings.redacted`.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from simpang.windows import WindowSpec

DEMO_SITE_FILE = Path(__file__).resolve().parent.parent / "simulator" / "scenarios" / (
    "kaltim_demo_site.yaml"
)


class KafkaSettings(BaseModel):
    brokers: str = Field("127.0.0.1:9092", description="Bootstrap brokers, host:port,host:port.")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    rebalance_timeout_s: float = Field(
        6.0, gt=0, description="Short, so a group join does not wait Faust's default 60 s."
    )
    session_timeout_s: float = Field(6.0, gt=0)
    heartbeat_interval_s: float = Field(1.0, gt=0)
    fetch_max_wait_ms: int = Field(
        100, gt=0, le=30_000,
        description="Consumer long-poll wait. Kafka answers early when data arrives; Tansu "
        "waits it out, so it bounds each hop's latency there (Faust's fixed value is 1500).",
    )
    recovery_stall_s: float = Field(
        5.0, gt=0,
        description="A table recovery that has received no changelog record for half this "
        "long seeks its changelogs again; for this long, the worker exits (code 75) for its "
        "supervisor to start it again.",
    )

    def broker_list(self) -> list[str]:
        return [b.strip() for b in self.brokers.split(",") if b.strip()]


class InfluxSettings(BaseModel):
    url: str | None = Field(None, description="InfluxDB base URL; unset → line-protocol file.")
    token: SecretStr | None = None
    org: str = "simpang"
    bucket: str = "simpang"
    batch_max_points: int = Field(5000, gt=0)
    batch_max_wait_s: float = Field(0.2, gt=0)
    timeout_s: float = Field(10.0, gt=0)
    retry_initial_s: float = Field(0.5, gt=0)
    retry_max_s: float = Field(30.0, gt=0)
    line_protocol_file: Path | None = Field(
        None, description="Where points go when no url is set (load later with `influx write`)."
    )


class TopicSettings(BaseModel):
    prefix: str = Field("", description="Prepended to every topic, to share one cluster.")
    sensor_readings: str = "sensor-readings"
    camera_frames: str = "camera-frames"
    vehicle_crossings: str = "vehicle-crossings"
    camera_health: str = "camera-health"
    detector_health: str = "detector-health"
    normalised_readings: str = "normalised-readings"
    approach_metrics: str = "approach-metrics"
    dead_letters: str = "dead-letters"
    pipeline_health: str = "pipeline-health"
    timing_recommendations: str = "timing-recommendations"
    signal_plans: str = "signal-plans"
    partitions: int = Field(4, gt=0)
    replication_factor: int = Field(1, gt=0)

    def name(self, topic: str) -> str:
        return f"{self.prefix}{getattr(self, topic)}"


DEFAULT_MODEL_FILE = Path(__file__).resolve().parent.parent / "models" / "simpang-vehicles.onnx"


class DetectorSettings(BaseModel):
    enabled: bool = Field(True, description=(
        "Run the counting agent on camera-frames (when the site has counting lines)."))
    interval_s: float = Field(10.0, gt=0, le=3600, description=(
        "Camera line counts become one reading per line every this many seconds."))
    frozen_after_s: float = Field(10.0, gt=0, description=(
        "A camera whose picture has not changed this long is reported frozen."))
    model_path: Path = Field(DEFAULT_MODEL_FILE, description=(
        "ONNX detector: Simpang's own, or a YOLOv8/YOLO11/YOLO26/YOLOv5/YOLOX/YOLOv7 export."))
    layout: str | None = Field(None, description="Override the detected output layout.")
    confidence: float = Field(0.25, gt=0, lt=1)
    iou: float = Field(0.5, gt=0, lt=1, description="NMS IoU threshold.")
    batch_size: int = Field(8, gt=0, le=64, description="Frames per inference call.")
    threads: int | None = Field(None, gt=0, description="onnxruntime intra-op threads.")


class WindowSettings(BaseModel):
    windows: str = Field(
        "60,300/60",
        description='Comma-separated window specs: "SIZE" tumbling, "SIZE/STEP" hopping, seconds.',
    )
    grace_s: float = Field(5.0, ge=0, description="How long a window waits for late readings.")
    tick_interval_s: float = Field(0.5, gt=0, description="Watermark tick period per partition.")
    resume_settle_s: float = Field(10.0, ge=0, description=(
        "After a worker held its watermark ticks (readings backlog, broker unreachable), how "
        "long data alone moves event time before idle time counts again: devices re-sending "
        "what they buffered get this long."))
    max_future_skew_s: float = Field(
        120.0, ge=0, description="Readings stamped further in the future are rejected."
    )

    def specs(self) -> list[WindowSpec]:
        return [WindowSpec.parse(text) for text in self.windows.split(",") if text.strip()]

    @field_validator("windows")
    @classmethod
    def _parseable(cls, value: str) -> str:
        specs = [WindowSpec.parse(text) for text in value.split(",") if text.strip()]
        if not specs:
            raise ValueError("at least one window is needed")
        return value


class _FlatInfluxEnv(PydanticBaseSettingsSource):
    """``SIMPANG_INFLUX_URL``/``_TOKEN``/``_ORG``/``_BUCKET``: the spelling users are told about,
    beside the nested ``SIMPANG_INFLUX__URL`` (which wins when both are set)."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        influx = {
            name: os.environ[f"SIMPANG_INFLUX_{name.upper()}"]
            for name in ("url", "token", "org", "bucket")
            if os.environ.get(f"SIMPANG_INFLUX_{name.upper()}")
        }
        return {"influx": influx} if influx else {}


class TimingSettings(BaseModel):
    enabled: bool = Field(True, description="Run the timing agent.")
    window: str = Field("300s-every-60s", description=(
        "Which approach-metrics window the plans are computed from (one of the windows)."))
    every_cycles: int = Field(3, gt=0, description="A recommendation every this many cycles.")
    max_age_s: float = Field(300.0, gt=0, description=(
        "Metrics older than this are stale: the running plan stays, with that reason."))
    check_interval_s: float = Field(30.0, gt=0, description=(
        "How often the agent looks for intersections whose metrics stopped coming."))
    assume_adopted: bool = Field(True, description=(
        "Take each recommended plan as the one running from then on (no controller "
        "reports its plan yet)."))
    mode: Literal["plan", "adaptive"] = Field("plan", description=(
        "plan: fixed-time plans from the measured flows; adaptive: each cycle's plan from "
        "flows forecast to that cycle (Holt's smoothing), with each phase's longest green for "
        "a controller that ends greens on gaps and queues (simpang.adaptive)."))
    headroom: float = Field(1.5, ge=1.0, le=3.0, description=(
        "Adaptive mode: a green may run to this many times its share of the cycle's plan."))


class IngestSettings(BaseModel):
    """Field devices pushing over HTTP (``POST /v1/readings`` on the worker's web server)."""

    devices_file: Path | None = Field(None, description=(
        "Device tokens (hashed) and their scopes; unset → every request is refused (401)."))
    max_body_bytes: int = Field(1024 * 1024, gt=0, le=16 * 1024 * 1024)
    produce_timeout_s: float = Field(10.0, gt=0, description=(
        "How long a request waits for the broker to take its readings (then 503)."))


class MqttSettings(BaseModel):
    """``simpang mqtt-bridge``: the MQTT broker field devices publish to."""

    host: str = "127.0.0.1"
    port: int = Field(1883, gt=0, lt=65536)
    username: str | None = None
    password: SecretStr | None = None
    client_id: str = Field("simpang-bridge", description=(
        "Fixed, with a persistent session: the broker keeps QoS 1 messages while the bridge "
        "is away."))
    topic_prefix: str = Field("simpang", description=(
        "Devices publish to PREFIX/SITE/DEVICE/readings."))
    max_batch_messages: int = Field(500, gt=0, description=(
        "Messages taken together before one wait for the broker's acknowledgement."))


class GrafanaSettings(BaseModel):
    """Where ``simpang dashboards push`` writes, and how Grafana reaches InfluxDB."""

    url: str = Field("http://localhost:3000", description="Grafana's base URL.")
    token: SecretStr | None = Field(None, description=(
        "Service-account token (or put user:password in the URL)."))
    influx_url: str | None = Field(None, description=(
        "InfluxDB URL as Grafana reaches it; unset → the workers' influx.url."))


class DiagnosticsSettings(BaseModel):
    """When a field detector counts as dead or stuck (:mod:`simpang.detector_health`)."""

    dead_after_s: float = Field(300.0, gt=0, description=(
        "A detector with no reading for this many wall-clock seconds is dead."))
    stuck_on_occupancy_pct: float = Field(95.0, gt=0, le=100, description=(
        "Occupancy at or above this, without a break, is a stuck-on candidate."))
    stuck_on_after_s: float = Field(300.0, gt=0, description=(
        "Measured seconds of pinned occupancy before a detector is stuck on."))
    stuck_off_after_s: float = Field(1800.0, gt=0, description=(
        "Measured seconds of zero vehicles (while others count) before stuck off."))


class BrokerSettings(BaseModel):
    """The embedded Tansu broker (``simpang broker``, ``simpang demo``) and where it keeps
    topics: memory, or an S3 bucket (durable: a broker restart keeps every message)."""

    durable: bool = Field(False, description=(
        "Keep topics in S3 (s3_endpoint) instead of memory."))
    s3_endpoint: str | None = Field(None, description=(
        "S3 or MinIO URL; unset with durable → a local S3 (moto) started beside the broker, "
        "whose objects last as long as it runs."))
    s3_bucket: str = "tansu"
    s3_access_key_id: str | None = Field(None, description=(
        "Unset → the broker's own AWS_* environment (or an instance role)."))
    s3_secret_access_key: SecretStr | None = None
    s3_region: str = "us-east-1"
    listen_host: str = Field("127.0.0.1", description="Address ``simpang broker`` listens on.")
    advertised_host: str | None = Field(None, description=(
        "Host clients are told to connect to; unset → listen_host."))
    port: int = Field(9092, gt=0, lt=65536, description="Port of ``simpang broker``.")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SIMPANG_", env_nested_delimiter="__", extra="ignore"
    )

    app_id: str = "simpang"
    worker_id: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    site_file: Path = DEMO_SITE_FILE
    data_dir: Path = Path("/tmp/simpang")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = Field("text", description=(
        "Worker log lines: Faust's text, or one JSON object per line (ts, level, logger, "
        "message, worker, and intersection/camera/device where a line is about one)."))
    web_port: int | None = Field(None, description=(
        "Worker web server port (HTTP ingest, health, metrics, OpenAPI); unset → disabled."))
    web_bind: str = Field("127.0.0.1", description="Address the web server listens on.")
    health_interval_s: float = Field(10.0, gt=0)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    influx: InfluxSettings = Field(default_factory=InfluxSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
    windows: WindowSettings = Field(default_factory=WindowSettings)
    detector: DetectorSettings = Field(default_factory=DetectorSettings)
    timing: TimingSettings = Field(default_factory=TimingSettings)
    diagnostics: DiagnosticsSettings = Field(default_factory=DiagnosticsSettings)
    grafana: GrafanaSettings = Field(default_factory=GrafanaSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    broker: BrokerSettings = Field(default_factory=BrokerSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [
            init_settings, env_settings, _FlatInfluxEnv(settings_cls)
        ]
        settings_file = os.environ.get("SIMPANG_SETTINGS_FILE")
        if settings_file:
            if not Path(settings_file).is_file():
                raise FileNotFoundError(
                    f"SIMPANG_SETTINGS_FILE={settings_file}: no such file"
                )
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=settings_file))
        return tuple(sources)

    def redacted(self) -> dict[str, Any]:
        """Settings as plain data with every secret replaced by ``**********``."""
        return self.model_dump(mode="json")
