"""Faults on real servers (Tansu, InfluxDB 1.6, worker processes): outages, crashes,
restarts, scale-in and bad input, each counted from what was sent against what is in InfluxDB
(``tests/fault_rig.py`` says how). ``bench/faults.py`` runs the same scenarios for figures."""

from __future__ import annotations

import pytest

from tests import fault_rig
from tests.fault_rig import EXPECTED_REASONS, Rig

pytestmark = pytest.mark.integration

TAKEOVER_LIMIT_S = 30.0
SIGTERM_LIMIT_S = 10.0


@pytest.mark.timeout(240)
def test_influxdb_stopped_for_a_minute_loses_nothing() -> None:
    with Rig() as rig:
        outcome = fault_rig.influx_outage(rig, outage_s=60)
        errors = rig.db.rows("SELECT max(sink_write_errors) AS e FROM pipeline_health")
    assert outcome.sent > 0
    assert (outcome.lost, outcome.duplicated) == (0, 0), outcome.report()
    assert errors and errors[0]["e"] >= 1, "the outage was seen by the sink"


@pytest.mark.timeout(180)
def test_worker_killed_and_restarted_recovers_its_windows() -> None:
    with Rig() as rig:
        outcome = fault_rig.worker_kill(rig, before_s=5, down_s=5, after_s=5)
    assert outcome.sent > 0
    assert (outcome.lost, outcome.duplicated) == (0, 0), outcome.report()
    assert outcome.notes["late_dead_letters"] == 0


@pytest.mark.timeout(180)
def test_the_surviving_worker_takes_over_within_the_limit() -> None:
    with Rig() as rig:
        outcome = fault_rig.takeover(rig, before_s=5)
    assert outcome.notes["owners_before_kill"] == ["w1", "w2"]
    assert outcome.timings_s["takeover_s"] <= TAKEOVER_LIMIT_S, outcome.report()
    assert (outcome.lost, outcome.duplicated) == (0, 0), outcome.report()


@pytest.mark.timeout(240)
def test_a_durable_broker_restart_loses_nothing() -> None:
    with Rig(durable=True) as rig:
        outcome = fault_rig.broker_restart(rig, before_s=5, down_s=5, after_s=5)
    assert outcome.sent > 0
    assert (outcome.lost, outcome.duplicated) == (0, 0), outcome.report()


@pytest.mark.timeout(180)
def test_sigterm_exits_promptly_and_the_next_worker_loses_nothing() -> None:
    with Rig() as rig:
        outcome = fault_rig.sigterm(rig, before_s=5)
    assert outcome.notes["exit_code"] == 0
    assert outcome.notes["drained"], "the worker drained before it stopped"
    assert outcome.timings_s["sigterm_exit_s"] <= SIGTERM_LIMIT_S, outcome.report()
    assert (outcome.lost, outcome.duplicated) == (0, 0), outcome.report()


@pytest.mark.timeout(180)
def test_bad_input_is_dead_lettered_and_disturbs_nothing_else() -> None:
    with Rig() as rig:
        outcome = fault_rig.bad_input(rig, before_s=3, after_s=5)
    assert outcome.notes["dead_letters_by_reason"] == EXPECTED_REASONS
    assert (outcome.lost, outcome.duplicated) == (0, 0), outcome.report()
