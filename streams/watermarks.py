"""When a worker may let event time run on while devices are quiet.

A watermark tick advances a partition's watermark by the wall-clock time since its last data
(:mod:`simpang.windows`). That is right only while the data path is whole: if readings wait
upstream — a backlog after a restart or a takeover, a broker that is down, devices re-sending
what they buffered meanwhile — the idle time is not idle, and the windows those readings
belong to would close without them.

:class:`TickGate` decides per timer round: *hold* (send nothing) while a readings partition
of this worker is behind or its last fetch is stale; then, for ``settle_s`` after the path is
whole again, *restart* (ticks that restart the idle clock at their arrival, so the time held
never counts as idle); then *advance* (normal ticks).

>>> gate = TickGate(settle_s=10, stale_after_s=2, max_backlog_age_s=1)
>>> def polled_at(t: float) -> dict[int, PartitionView]:
...     return {0: PartitionView(highwater=5, polled_s=t, ingested_offset=4, ingested_s=99.0)}
>>> gate.decide(polled_at(99.9), now_s=100.0)
'restart'
>>> gate.decide(polled_at(109.9), now_s=110.0)
'advance'
>>> gate.decide(polled_at(105.0), now_s=111.0)  # no fetch answered for 6 s
'hold'
>>> gate.decide(polled_at(111.9), now_s=112.0), gate.decide(polled_at(121.9), now_s=122.0)
('restart', 'advance')
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

Decision = Literal["hold", "restart", "advance"]


@dataclass(frozen=True)
class PartitionView:
    """What a worker knows of one readings partition it consumes."""

    highwater: int | None  # next offset the broker will write; None before the first fetch
    polled_s: float | None  # Unix time of the last fetch response for it
    ingested_offset: int  # last offset the ingest agent handled (-1: none)
    ingested_s: float  # that message's timestamp (Unix s)


def partitions_behind(views: Mapping[int, PartitionView], *, now_s: float,
                      stale_after_s: float, max_backlog_age_s: float) -> list[int]:
    """Partitions whose readings may not all have reached the windows.

    Behind: never fetched, last fetch older than ``stale_after_s`` (the broker or the
    connection is down), or messages waiting behind one older than ``max_backlog_age_s``.
    A partition whose last handled message is recent is fine even with more waiting: what
    follows is newer still.

    >>> views = {0: PartitionView(10, 100.0, 9, 99.0), 1: PartitionView(5, 100.0, 2, 99.9),
    ...          2: PartitionView(5, 100.0, 2, 90.0), 3: PartitionView(None, None, -1, 0.0),
    ...          4: PartitionView(0, 100.0, -1, 0.0)}
    >>> partitions_behind(views, now_s=100.2, stale_after_s=2, max_backlog_age_s=1)
    [2, 3]
    """
    def is_behind(view: PartitionView) -> bool:
        if view.highwater is None or view.polled_s is None:
            return True
        waiting = view.ingested_offset + 1 < view.highwater
        return (now_s - view.polled_s > stale_after_s
                or (waiting and now_s - view.ingested_s > max_backlog_age_s))

    return [partition for partition, view in sorted(views.items()) if is_behind(view)]


class TickGate:
    """Hold, restart or advance; see the module docstring."""

    def __init__(self, *, settle_s: float, stale_after_s: float,
                 max_backlog_age_s: float) -> None:
        self.settle_s = settle_s
        self.stale_after_s = stale_after_s
        self.max_backlog_age_s = max_backlog_age_s
        self.whole_since_s: float | None = None
        self.behind: list[int] = []

    def decide(self, views: Mapping[int, PartitionView], *, now_s: float) -> Decision:
        self.behind = partitions_behind(views, now_s=now_s, stale_after_s=self.stale_after_s,
                                        max_backlog_age_s=self.max_backlog_age_s)
        if self.behind:
            self.whole_since_s = None
            return "hold"
        if self.whole_since_s is None:
            self.whole_since_s = now_s
        return "advance" if now_s - self.whole_since_s >= self.settle_s else "restart"

    def reset(self) -> None:
        """Partitions moved (a rebalance): start over as after a hold."""
        self.whole_since_s = None
