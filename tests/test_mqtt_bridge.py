"""``simpang mqtt-bridge`` with a real Mosquitto and Tansu: what devices publish reaches
sensor-readings once or dead-letters with its reason, through a broker restart; and the
decision for one message on its own."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simpang.records import RejectReason
from simpang.settings import DEMO_SITE_FILE
from simpang.site_file import load_site
from simulator.bundled import build_scenario
from streams.embedded import MosquittoServer, popen_child, stop_process
from streams.ingest import ReadingValidator
from streams.mqtt_bridge import MqttDecision
from tests.conftest import REPO, Pipeline

SITE = "kaltim-demo"
N1, N2 = "smd-lembuswana-n1-loop", "smd-lembuswana-n2-loop"
RECEIVED = datetime(2026, 11, 24, 0, 0, tzinfo=UTC)


def reading(device: str, seq: int | None, minutes_ago: int = 5, **extra: Any) -> dict[str, Any]:
    ts = (datetime.now(UTC) - timedelta(minutes=minutes_ago)).replace(second=0, microsecond=0)
    body: dict[str, Any] = {"device_id": device, "kind": "loop", "ts": ts.isoformat(),
                            "interval_s": 60, "counts": {"car": 4}, "occupancy_pct": 9.0}
    if seq is not None:
        body["seq"] = seq
    return {**body, **extra}


@pytest.fixture
def decision() -> MqttDecision:
    validator = ReadingValidator(load_site(DEMO_SITE_FILE), max_future_skew_s=120)
    return MqttDecision(validator, topic_prefix="simpang")


def test_a_device_may_publish_only_its_own_readings(decision: MqttDecision) -> None:
    assert decision.subscription == f"simpang/{SITE}/+/readings"
    topic = f"simpang/{SITE}/{N1}/readings"
    old = "2026-11-24T07:58:00+08:00"
    body = json.dumps([reading(N1, 1, ts=old), reading(N2, 1, ts=old)]).encode()
    screened, count = decision.handle(topic, body, message_id="m1", received_at=RECEIVED)
    assert count == 2 and screened.accepted == 1
    [rejection] = screened.rejections
    assert rejection.reason_code is RejectReason.FORBIDDEN and rejection.index == 1
    assert str(rejection.errors[0]).startswith("[1].device_id: published under")
    assert screened.dead_letters[0].source == f"mqtt:{topic}"
    again, _ = decision.handle(topic, body, message_id="m2", received_at=RECEIVED)
    assert again.accepted == 0 and again.duplicates == 1


@pytest.mark.parametrize("topic", [f"simpang/other-site/{N1}/readings",
                                   f"simpang/{SITE}/{N1}/state", f"x/{SITE}/{N1}/readings",
                                   f"simpang/{SITE}//readings"])
def test_messages_on_other_topics_are_refused(decision: MqttDecision, topic: str) -> None:
    screened, count = decision.handle(topic, b"{}", message_id="m", received_at=RECEIVED)
    assert count == 1 and screened.accepted == 0
    assert screened.dead_letters[0].reason_code is RejectReason.FORBIDDEN


@pytest.fixture
def mosquitto() -> Iterator[MosquittoServer]:
    with MosquittoServer() as server:
        yield server


async def publish(port: int, messages: list[tuple[str, bytes]]) -> None:
    async with aiomqtt.Client("127.0.0.1", port, identifier=f"dev-{uuid.uuid4().hex[:6]}") as c:
        for topic, payload in messages:
            await c.publish(topic, payload, qos=1)


@pytest.mark.integration
def test_bridge_forwards_once_dead_letters_the_rest_and_survives_a_broker_restart(
    pipeline_factory: Callable[..., Pipeline], mosquitto: MosquittoServer, tmp_path: Path,
) -> None:
    pipeline = pipeline_factory(start=False)  # its topics and env; no worker needed
    env = {**pipeline.env, "SIMPANG_MQTT__PORT": str(mosquitto.port),
           "SIMPANG_MQTT__CLIENT_ID": f"bridge-{pipeline.name}", "SIMPANG_LOG_LEVEL": "info"}
    log_path = tmp_path / "bridge.log"
    bridge = popen_child([sys.executable, "-m", "simpang", "mqtt-bridge"], env=env,
                         stdout=log_path.open("ab"), cwd=REPO)

    def wait_log(text: str, count: int = 1, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while log_path.read_text(errors="replace").count(text) < count:
            assert bridge.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.2)

    try:
        wait_log("subscribed to")
        topic = {device: f"simpang/{SITE}/{device}/readings" for device in (N1, N2)}
        first = [(topic[N1], json.dumps(reading(N1, seq)).encode()) for seq in range(1, 41)]
        first += [(topic[N2], json.dumps([reading(N2, seq), reading(N2, seq + 100)]).encode())
                  for seq in range(1, 21)]
        first += [(topic[N1], json.dumps(reading(N1, 5)).encode()),  # a re-send
                  (topic[N1], b"{broken"),
                  (topic[N1], json.dumps(reading(N2, 999)).encode()),  # not its own topic
                  (topic[N2], json.dumps(reading(N2, 1000, interval_s=-1)).encode())]
        asyncio.run(publish(mosquitto.port, first))

        def stored_readings(at_least: int) -> list[dict[str, Any]]:
            deadline = time.monotonic() + 30
            while True:
                messages = pipeline.read_topic("sensor-readings", count=10_000, timeout_s=2)
                stored = [item for message in messages for item in message]
                if len(stored) >= at_least or time.monotonic() > deadline:
                    return stored

        # The test broker keeps no messages across a restart (persistence off): let the
        # bridge take the first ones before the broker goes away.
        assert len(stored_readings(80)) == 80
        mosquitto.stop()
        wait_log("reconnecting")
        mosquitto.start()
        wait_log("subscribed to", count=2)
        second = [(topic[N1], json.dumps(reading(N1, seq)).encode()) for seq in range(41, 61)]
        asyncio.run(publish(mosquitto.port, second))

        expected_accepted = 40 + 20 * 2 + 20
        stored = stored_readings(expected_accepted)
        keys = [(r["device_id"], r["seq"]) for r in stored]
        assert len(stored) == len(set(keys)) == expected_accepted, len(stored)
        letters = pipeline.read_topic("dead-letters", count=100, timeout_s=5)
        assert sorted(d["reason_code"] for d in letters) == ["forbidden", "invalid",
                                                             "malformed"]
        assert all(d["source"].startswith(f"mqtt:simpang/{SITE}/") and d["raw"]
                   for d in letters)

        # `simpang dead-letters tail` shows them, newest last, filtered by source and reason.
        shown = subprocess.run(
            [sys.executable, "-m", "simpang", "dead-letters", "tail", "--json", "-n", "10",
             "--source", "mqtt:"], env=env, capture_output=True, text=True, timeout=60,
            cwd=REPO)
        assert shown.returncode == 0, shown.stderr
        tailed = [json.loads(line) for line in shown.stdout.splitlines()]
        assert sorted(d["id"] for d in tailed) == sorted(d["id"] for d in letters)
        only = subprocess.run(
            [sys.executable, "-m", "simpang", "dead-letters", "tail", "--reason", "malformed"],
            env=env, capture_output=True, text=True, timeout=60, cwd=REPO)
        assert " malformed " in only.stdout and "forbidden" not in only.stdout

        bridge.send_signal(signal.SIGTERM)
        assert bridge.wait(timeout=20) == 0
        summary = log_path.read_text()
        assert "mqtt-bridge stopped" in summary and "duplicates=1" in summary
    finally:
        if bridge.poll() is None:
            stop_process(bridge, timeout_s=10)


@pytest.mark.integration
def test_the_simulators_devices_can_publish_over_mqtt(
    pipeline_factory: Callable[..., Pipeline], mosquitto: MosquittoServer, tmp_path: Path,
    scenario_cache: Path,
) -> None:
    site_file = build_scenario("t_junction", scenario_cache).site_file
    pipeline = pipeline_factory(start=False)
    env = {**pipeline.env, "SIMPANG_MQTT__PORT": str(mosquitto.port),
           "SIMPANG_MQTT__CLIENT_ID": f"bridge-{pipeline.name}", "SIMPANG_LOG_LEVEL": "info",
           "SIMPANG_SITE_FILE": str(site_file)}
    log_path = tmp_path / "bridge.log"
    bridge = popen_child([sys.executable, "-m", "simpang", "mqtt-bridge"], env=env,
                         stdout=log_path.open("ab"), cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        while "subscribed to" not in log_path.read_text(errors="replace"):
            assert bridge.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)
        ran = subprocess.run(
            [sys.executable, "-m", "simpang", "simulate", "run", "--scenario", "t_junction",
             "--duration", "180", "--begin", "07:00", "--interval", "30", "--via", "mqtt"],
            env={**env, "SIMPANG_DATA_DIR": str(tmp_path / "sim")}, capture_output=True,
            text=True, timeout=300, cwd=REPO)
        assert ran.returncode == 0, ran.stderr[-3000:]
        summary = json.loads(ran.stdout.splitlines()[-1])
        assert summary["via"] == "mqtt" and summary["mqtt_published"] == summary["readings"] > 0
        deadline = time.monotonic() + 30
        stored: list[Any] = []
        while len(stored) < summary["readings"] and time.monotonic() < deadline:
            messages = pipeline.read_topic("sensor-readings", count=10_000, timeout_s=2)
            stored = [item for message in messages for item in message]
        assert len(stored) == summary["readings"]
        assert pipeline.read_topic("dead-letters", count=1, timeout_s=2) == []
    finally:
        stop_process(bridge, timeout_s=10)


@pytest.mark.integration
def test_the_deployed_acl_lets_a_device_publish_only_under_its_own_topic(tmp_path: Path) -> None:
    """Mosquitto with deploy/mosquitto/acl and a password file made by mosquitto_passwd."""
    passwords = tmp_path / "passwords"
    for index, (user, password) in enumerate([("simpang-bridge", "b-pw"), (N1, "n1-pw"),
                                              (N2, "n2-pw")]):
        subprocess.run(["mosquitto_passwd", "-b", *(["-c"] if index == 0 else []),
                        str(passwords), user, password], check=True, capture_output=True)
    passwords.chmod(0o600)
    acl = REPO / "deploy" / "mosquitto" / "acl"
    topic = {device: f"simpang/{SITE}/{device}/readings" for device in (N1, N2)}

    async def scenario(port: int) -> list[str]:
        received: list[str] = []
        async with aiomqtt.Client("127.0.0.1", port, username="simpang-bridge",
                                  password="b-pw") as bridge:
            await bridge.subscribe(f"simpang/{SITE}/+/readings", qos=1)
            async with aiomqtt.Client("127.0.0.1", port, username=N1,
                                      password="n1-pw") as device:
                await device.publish(topic[N1], b"own", qos=1)
                await device.publish(topic[N2], b"another's", qos=1)
                await device.publish(topic[N1], b"own again", qos=1)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(3):
                    async for message in bridge.messages:
                        received.append(f"{message.topic}={message.payload!r}")
                        if len(received) == 2:
                            break
        with pytest.raises(aiomqtt.MqttError):
            async with aiomqtt.Client("127.0.0.1", port):
                pass  # anonymous: refused
        return received

    with MosquittoServer(password_file=passwords, acl_file=acl) as server:
        received = asyncio.run(scenario(server.port))
    assert received == [f"{topic[N1]}=b'own'", f"{topic[N1]}=b'own again'"]


@settings(max_examples=300, deadline=None)
@given(device=st.sampled_from([N1, N2, "", "x/y", "nope"]),
       suffix=st.sampled_from(["readings", "state", "readings/x"]),
       payload=st.one_of(st.binary(max_size=60), st.builds(
           lambda items: json.dumps(items).encode(),
           st.lists(st.fixed_dictionaries(
               {"device_id": st.sampled_from([N1, N2, "nope"]),
                "kind": st.sampled_from(["loop", "radar"]),
                "ts": st.sampled_from(["2026-11-24T07:58:00+08:00", "bad"]),
                "interval_s": st.integers(-1, 120)},
               optional={"seq": st.integers(-1, 3), "count": st.integers(-1, 9)}),
               max_size=4))))
def test_no_message_crashes_the_bridge_and_every_reading_is_accounted_for(
    device: str, suffix: str, payload: bytes,
) -> None:
    decision = MqttDecision(ReadingValidator(load_site(DEMO_SITE_FILE), max_future_skew_s=120),
                            topic_prefix="simpang")
    screened, count = decision.handle(f"simpang/{SITE}/{device}/{suffix}", payload,
                                      message_id="f", received_at=RECEIVED)
    forwarded = sum(len(items) for items in screened.batches.values())
    assert forwarded == screened.accepted
    assert screened.accepted + screened.duplicates + len(screened.rejections) == count
    assert len(screened.dead_letters) == len(screened.rejections)
