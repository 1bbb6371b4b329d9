"""When a worker may let event time run on while devices are quiet.

A watermark tick advances a partition's watermark by the wall-clock time since its last data
(:mod:`simpang.windows`). That is right only while the data path is whole: if readings wait
upstream — a backlog after a restart or a takeover, a broker that is down, devices re-sending
what they buffered meanwhile — the idle time is not idle, and the windows those readings
belong to would close without them.

:class:`TickGate` decides per timer round: *hold* (send nothing) while a readings partition
of this worker is behind; then, for ``settle_s`` after the path is whole again, *restart*
(ticks that restart the idle clock at their arrival, so the time held never counts as idle);
then *advance* (normal ticks). A partition is behind when it was never fetched, when its last
fetch is older than ``stale_after_s`` (the broker or the connection is down), or when the
ingest agent has not been caught up with it for ``max_backlog_age_s``. Every time is this
worker's clock: devices' clocks and message timestamps play no part.

>>> gate = TickGate(settle_s=10, stale_after_s=2, max_backlog_age_s=1)
>>> def at(polled_s: float, handled: int = 4) -> dict[int, PartitionView]:
...     return {0: PartitionView(highwater=5, polled_s=polled_s, handled_offset=handled)}
>>> gate.decide(at(99.9), now_s=100.0)
'restart'
>>> gate.decide(at(109.9), now_s=110.0)
'advance'
>>> gate.decide(at(105.0), now_s=111.0)  # no fetch answered for 6 s
'hold'
>>> gate.decide(at(111.9), now_s=112.0), gate.decide(at(121.9), now_s=122.0)
('restart', 'advance')
>>> gate.decide(at(122.4, handled=2), now_s=122.5)  # two waiting: fine for a while
'advance'
>>> gate.decide(at(123.4, handled=3), now_s=123.5)  # still not caught up after 1.5 s
'hold'
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
    polled_s: float | None  # this worker's Unix time of the last fetch response for it
    handled_offset: int  # last offset the ingest agent handled (-1: none)

    @property
    def caught_up(self) -> bool:
        return self.highwater is not None and self.handled_offset + 1 >= self.highwater


class TickGate:
    """Hold, restart or advance; see the module docstring."""

    def __init__(self, *, settle_s: float, stale_after_s: float,
                 max_backlog_age_s: float) -> None:
        self.settle_s = settle_s
        self.stale_after_s = stale_after_s
        self.max_backlog_age_s = max_backlog_age_s
        self.whole_since_s: float | None = None
        self.caught_up_s: dict[int, float] = {}
        self.behind: list[int] = []

    def decide(self, views: Mapping[int, PartitionView] | None, *, now_s: float) -> Decision:
        """``views`` None: the worker could not tell (a rebalance under way): hold."""
        self.behind = [] if views is not None else [-1]
        for partition, view in sorted((views or {}).items()):
            if view.caught_up:
                self.caught_up_s[partition] = now_s
            fresh = view.polled_s is not None and now_s - view.polled_s <= self.stale_after_s
            recent = now_s - self.caught_up_s.get(partition, float("-inf"))
            if not fresh or recent > self.max_backlog_age_s:
                self.behind.append(partition)
        if self.behind:
            self.whole_since_s = None
            return "hold"
        if self.whole_since_s is None:
            self.whole_since_s = now_s
        return "advance" if now_s - self.whole_since_s >= self.settle_s else "restart"

    def reset(self) -> None:
        """Partitions moved (a rebalance): start over as after a hold."""
        self.whole_since_s = None
        self.caught_up_s.clear()
