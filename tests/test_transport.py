"""The Faust recovery guard of ``streams.transport`` on Faust's real recovery service (no
broker: the stall measure reads only the recovery's own bookkeeping). The guard at work after
a real takeover is in ``tests/test_faults.py``."""

from __future__ import annotations

import time

import faust
from faust.types import TP

from streams.transport import GuardedRecovery, GuardedTableManager

CHANGELOG = TP("app-windows-changelog", 0)


def recovery() -> GuardedRecovery:
    app = faust.App("stall-test", broker="kafka://127.0.0.1:9", TableManager=GuardedTableManager,
                    autodiscover=False)
    guarded = app.tables.recovery
    assert isinstance(guarded, GuardedRecovery)
    return guarded


def test_a_recovery_with_records_to_read_and_none_arriving_is_stalled() -> None:
    guarded = recovery()
    guarded.active_highwaters[CHANGELOG] = 100
    guarded.active_offsets[CHANGELOG] = -1
    guarded._set_recovery_started()
    guarded._recovery_started_at = time.monotonic() - 12
    assert 11.5 < guarded.stalled_for_s() < 13


def test_stalled_counts_from_the_last_record_and_a_finished_recovery_is_not_stalled() -> None:
    guarded = recovery()
    guarded.active_highwaters[CHANGELOG] = 100
    guarded.active_offsets[CHANGELOG] = -1
    guarded._set_recovery_started()
    guarded._recovery_started_at = time.monotonic() - 12
    guarded._active_events_received_at[CHANGELOG] = time.monotonic()
    assert guarded.stalled_for_s() < 1
    guarded._active_events_received_at[CHANGELOG] = time.monotonic() - 8  # none since
    assert 7.5 < guarded.stalled_for_s() < 9
    guarded._active_events_received_at.clear()
    guarded.active_offsets[CHANGELOG] = 100  # read up to the high-water mark
    assert guarded.stalled_for_s() == 0.0
    guarded.active_offsets[CHANGELOG] = -1
    guarded._set_recovery_ended()
    assert guarded.stalled_for_s() == 0.0
