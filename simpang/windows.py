"""Event-time tumbling and hopping windows over lane readings, built from additive panes.

Every window size and step is a multiple of one *pane* (their greatest common divisor), so
each reading updates exactly one pane per lane, and a window's aggregate is the sum of its
panes when it closes. State lives in any ``MutableMapping`` (a Faust table with a changelog in
the worker, a dict in tests), one key per (partition, intersection, pane) plus one per partition.

Readings are labelled by the *end* of their measurement interval, so a reading stamped
07:01:00 belongs to the window [07:00, 07:01).

Watermark: per partition, the largest reading timestamp seen, advanced by the wall-clock time
that has passed (Kafka message timestamps, so a replay gives the same result) since it last
moved; only watermark ticks add that idle time, data moves it by its own timestamps. A
window [start, end) fires once the watermark reaches ``end + grace``; a reading for a window
that has fired is *late* and is returned to the caller, never dropped silently.

Replays after a crash are applied once: every pane remembers the highest source offset it
has absorbed per source partition, and each partition remembers the last source message it
completed. Re-sends are counted once too: a reading with a ``seq`` whose (device, seq) the
pane has already absorbed is left out and counted in ``WindowOutput.resent``, whichever
worker, restart or path the copy came through (a re-send reaches the pane of the original,
having the same interval end). Fired rows are kept with the close that fired them until
the caller marks them delivered (:meth:`WindowedAggregator.unsent`,
:meth:`WindowedAggregator.mark_sent`), so a crash between a close and the send repeats the
send instead of losing the rows.

>>> agg = WindowedAggregator("demo", [WindowSpec(60, 60)], grace_s=5, pcu=PcuFactors())
>>> store: dict[str, Any] = {}
>>> r = NormalisedReading(intersection="x", approach="n", lane="n1", device_id="d",
...                       ts_ms=60_000, interval_s=60, counts={"car": 10})
>>> agg.on_batch(store, 0, ReadingsBatch(source_partition=0, source_offset=0,
...              readings=[r]), arrival_ms=60_000).metrics
[]
>>> out = agg.on_tick(store, 0, arrival_ms=65_000)
>>> [(m.lane, m.flow_veh_per_hour) for m in out.metrics]
[('n1', 600.0), (None, 600.0)]
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from simpang.records import ApproachMetrics, NormalisedReading, ReadingsBatch
from simpang.vehicles import PcuFactors, VehicleClass

Store = MutableMapping[str, Any]
LaneKey = tuple[str, str, str, str]
"""(intersection, approach, lane, source): camera counts aggregate beside field-device
counts, never into them (a lane with a loop and a camera would count its vehicles twice)."""


@dataclass(frozen=True)
class WindowSpec:
    """A tumbling (``step_s == size_s``) or hopping (``step_s < size_s``) window."""

    size_s: int
    step_s: int

    def __post_init__(self) -> None:
        if self.size_s <= 0 or self.step_s <= 0 or self.step_s > self.size_s:
            raise ValueError(f"window needs 0 < step_s <= size_s, got {self}")
        if self.size_s % self.step_s:
            raise ValueError(f"window size_s must be a multiple of step_s, got {self}")

    @property
    def label(self) -> str:
        """Tag value: ``60s`` for tumbling, ``300s-every-60s`` for hopping."""
        if self.step_s == self.size_s:
            return f"{self.size_s}s"
        return f"{self.size_s}s-every-{self.step_s}s"

    @classmethod
    def from_label(cls, label: str) -> WindowSpec:
        """The inverse of :attr:`label`.

        >>> WindowSpec.from_label("300s-every-60s"), WindowSpec.from_label("60s").label
        (WindowSpec(size_s=300, step_s=60), '60s')
        """
        size, _, step = label.partition("-every-")
        return cls(int(size.removesuffix("s")), int((step or size).removesuffix("s")))

    @classmethod
    def parse(cls, text: str) -> WindowSpec:
        """``"60"`` → tumbling 60 s; ``"300/60"`` → hopping 300 s every 60 s."""
        size, _, step = text.partition("/")
        return cls(int(size), int(step or size))


@dataclass
class LaneAccumulator:
    """Additive aggregate of readings: merge two and you get the aggregate of both."""

    counts: dict[str, int] = field(default_factory=dict)
    readings: int = 0
    occupancy_pct_s: float = 0.0
    occupancy_s: float = 0.0
    speed_kmh_weighted: float = 0.0
    speed_weight: float = 0.0

    def add(self, reading: NormalisedReading) -> None:
        for cls, n in reading.counts.items():
            self.counts[cls] = self.counts.get(cls, 0) + n
        self.readings += 1
        if reading.occupancy_pct is not None:
            self.occupancy_pct_s += reading.occupancy_pct * reading.interval_s
            self.occupancy_s += reading.interval_s
        if reading.speed_kmh is not None:
            vehicles = sum(reading.counts.values())
            weight = float(vehicles) if reading.counts else 1.0
            self.speed_kmh_weighted += reading.speed_kmh * weight
            self.speed_weight += weight

    def merge(self, other: LaneAccumulator) -> None:
        for cls, n in other.counts.items():
            self.counts[cls] = self.counts.get(cls, 0) + n
        self.readings += other.readings
        self.occupancy_pct_s += other.occupancy_pct_s
        self.occupancy_s += other.occupancy_s
        self.speed_kmh_weighted += other.speed_kmh_weighted
        self.speed_weight += other.speed_weight

    def to_json(self) -> dict[str, Any]:
        return {
            "c": self.counts,
            "r": self.readings,
            "ops": self.occupancy_pct_s,
            "os": self.occupancy_s,
            "sw": self.speed_kmh_weighted,
            "sn": self.speed_weight,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LaneAccumulator:
        return cls(
            counts=dict(data["c"]),
            readings=data["r"],
            occupancy_pct_s=data["ops"],
            occupancy_s=data["os"],
            speed_kmh_weighted=data["sw"],
            speed_weight=data["sn"],
        )


def add_seq(ranges: list[list[int]], seq: int) -> bool:
    """Add ``seq`` to sorted, disjoint inclusive ``ranges`` (merged where they touch); False
    if it was there already. A device's sequence numbers in one pane are mostly one run, so
    the pane keeps a range or two per device, not every number.

    >>> ranges: list[list[int]] = []
    >>> [add_seq(ranges, s) for s in (5, 6, 8, 6, 7)], ranges
    ([True, True, True, False, True], [[5, 8]])
    """
    at = bisect.bisect_right(ranges, seq, key=lambda r: r[0])  # the first starting after
    if at and ranges[at - 1][1] >= seq:
        return False
    joins_left = at > 0 and ranges[at - 1][1] == seq - 1
    joins_right = at < len(ranges) and ranges[at][0] == seq + 1
    if joins_left and joins_right:
        ranges[at - 1][1] = ranges.pop(at)[1]
    elif joins_left:
        ranges[at - 1][1] = seq
    elif joins_right:
        ranges[at][0] = seq
    else:
        ranges.insert(at, [seq, seq])
    return True


@dataclass
class WindowOutput:
    metrics: list[ApproachMetrics] = field(default_factory=list)
    late: list[tuple[NormalisedReading, str]] = field(default_factory=list)
    replayed: bool = False
    resent: int = 0  # readings left out as re-sends of a (device, seq) already counted


class WindowedAggregator:
    """Per-partition window state machine; see the module docstring."""

    def __init__(
        self,
        site_id: str,
        specs: list[WindowSpec],
        *,
        grace_s: float,
        pcu: PcuFactors,
        protection: Mapping[tuple[str, str], bool] | None = None,
        idle_advance: bool = True,
    ) -> None:
        if not specs:
            raise ValueError("at least one window is needed")
        self.site_id = site_id
        self.specs = list(specs)
        self.grace_ms = round(grace_s * 1000)
        self.pcu = pcu
        self.protection = dict(protection or {})
        self.idle_advance = idle_advance
        self.pane_ms = math.gcd(*(n for s in specs for n in (s.size_s, s.step_s))) * 1000
        self.max_size_ms = max(s.size_s for s in specs) * 1000

    def on_batch(
        self, store: Store, partition: int, batch: ReadingsBatch, *, arrival_ms: float
    ) -> WindowOutput:
        state = self._state(store, partition)
        source = (f"{batch.source_topic}:{batch.source_partition}" if batch.source_topic
                  else str(batch.source_partition))
        if batch.source_offset <= state["sources_done"].get(source, -1):
            return WindowOutput(replayed=True)
        out = WindowOutput()
        # One store key per intersection and pane (all its lanes): a Faust table writes a
        # changelog record per key set, so fewer, larger keys cost far less per reading.
        touched: dict[str, dict[str, LaneAccumulator]] = {}
        sources_of: dict[str, dict[str, int]] = {}
        seqs_of: dict[str, dict[str, list[list[int]]]] = {}
        for reading in batch.readings:
            pane_start = self._pane_start(reading.ts_ms)
            closed_upto = state["closed_upto_ms"]
            if closed_upto is not None and pane_start + self.pane_ms <= closed_upto:
                out.late.append((reading, self._late_reason(reading, state)))
                continue
            if closed_upto is None and (
                state.get("open_from_ms") is None or pane_start < state["open_from_ms"]
            ):
                # Nothing has fired yet: the first windows to fire start from the oldest data.
                state["open_from_ms"] = pane_start
            key = self._pane_key(partition, reading.intersection, pane_start)
            lanes = touched.get(key)
            if lanes is None:
                stored = store.get(key)
                if stored is not None and stored["src"].get(source, -1) >= batch.source_offset:
                    continue
                lanes = {
                    lane: LaneAccumulator.from_json(data)
                    for lane, data in (stored["lanes"] if stored else {}).items()
                }
                touched[key] = lanes
                sources_of[key] = dict(stored["src"]) if stored else {}
                seqs_of[key] = {device: [list(r) for r in ranges]
                                for device, ranges in (stored or {}).get("seq", {}).items()}
            if reading.seq is not None and not add_seq(
                seqs_of[key].setdefault(reading.device_id, []), reading.seq
            ):
                out.resent += 1
                continue
            lane_id = f"{reading.approach}|{reading.lane}"
            if reading.source != "field":
                lane_id += f"|{reading.source}"
            acc = lanes.get(lane_id)
            if acc is None:
                acc = lanes[lane_id] = LaneAccumulator()
            acc.add(reading)
            if state["event_wm_ms"] is None or reading.ts_ms > state["event_wm_ms"]:
                state["event_wm_ms"] = reading.ts_ms
                state["wm_arrival_ms"] = arrival_ms
        for key, lanes in touched.items():
            sources = sources_of[key]
            sources[source] = batch.source_offset
            record: dict[str, Any] = {
                "lanes": {lane: acc.to_json() for lane, acc in lanes.items()},
                "src": sources,
            }
            seqs = {device: ranges for device, ranges in seqs_of[key].items() if ranges}
            if seqs:
                record["seq"] = seqs
            store[key] = record
        state["sources_done"][source] = batch.source_offset
        # Data moves event time by its own stamps only. Idle time is the ticks' to add: they
        # are held while readings wait upstream, and after an outage or a takeover the first
        # data is often no newer than the watermark (another junction's reading of a second
        # already seen), which would count the whole outage as idle.
        out.metrics, expired = self._close(store, partition, state, state["event_wm_ms"])
        self._commit(store, partition, state, expired, out.metrics)
        return out

    def on_tick(self, store: Store, partition: int, *, arrival_ms: float,
                restart_idle: bool = False) -> WindowOutput:
        """Advance the watermark by the idle time; with ``restart_idle``, restart the idle
        clock at ``arrival_ms`` instead (the time since the last data is not to count)."""
        state = self._state(store, partition)
        if restart_idle:
            if state["event_wm_ms"] is not None and arrival_ms > state["wm_arrival_ms"]:
                state["wm_arrival_ms"] = arrival_ms
                store[self._state_key(partition)] = state
            return WindowOutput()
        metrics, expired = self._close(store, partition, state,
                                       self.watermark_ms(state, arrival_ms))
        if metrics or expired:
            self._commit(store, partition, state, expired, metrics)
        return WindowOutput(metrics=metrics)

    def unsent(self, store: Store, partition: int) -> list[ApproachMetrics]:
        """Rows of fired windows not yet confirmed delivered with :meth:`mark_sent`: the
        latest close's, and any a crash left between a close and its delivery."""
        stored = store.get(self._state_key(partition))
        if not stored or not stored.get("unsent"):
            return []
        return [ApproachMetrics.model_validate(row) for row in stored["unsent"]]

    def mark_sent(self, store: Store, partition: int) -> None:
        """The rows :meth:`unsent` returned are delivered; forget them."""
        key = self._state_key(partition)
        stored = store.get(key)
        if stored and stored.get("unsent"):
            store[key] = {**stored, "unsent": []}

    def _commit(self, store: Store, partition: int, state: dict[str, Any],
                expired: list[str], metrics: list[ApproachMetrics]) -> None:
        # A close and the rows it fired are one record (one changelog message): a crash can
        # lose neither without the other, and the rows stay until their delivery is marked.
        if metrics:
            state["unsent"] = [*state.get("unsent", []),
                               *(m.model_dump(mode="json") for m in metrics)]
        # State first, then the panes it no longer needs: a crash in between leaves panes
        # that the next close removes, never a fired window whose panes are gone.
        store[self._state_key(partition)] = state
        for key in expired:
            store.pop(key, None)

    def watermark_ms(self, state: Mapping[str, Any], arrival_ms: float) -> float | None:
        if state["event_wm_ms"] is None:
            return None
        idle_ms = max(0.0, arrival_ms - state["wm_arrival_ms"]) if self.idle_advance else 0.0
        return float(state["event_wm_ms"] + idle_ms)

    def _close(
        self, store: Store, partition: int, state: dict[str, Any], watermark: float | None
    ) -> tuple[list[ApproachMetrics], list[str]]:
        """Fire every window that ends by ``watermark − grace``; returns the metrics and the
        pane keys no open window needs any more."""
        previous = state["closed_upto_ms"]
        if previous is None:
            previous = state.get("open_from_ms")
        if watermark is None or previous is None:
            return [], []
        boundary = int(math.floor(watermark - self.grace_ms) // self.pane_ms * self.pane_ms)
        if boundary <= previous:
            return [], []
        prefix = f"pane|{partition}|"
        panes: dict[LaneKey, dict[int, LaneAccumulator]] = defaultdict(dict)
        pane_keys: dict[int, list[str]] = defaultdict(list)
        for key in [k for k in store if isinstance(k, str) and k.startswith(prefix)]:
            _, _, intersection, pane_start = key.split("|")
            pane_keys[int(pane_start)].append(key)
            for lane_id, data in store[key]["lanes"].items():
                approach, lane, *source = lane_id.split("|")
                panes[(intersection, approach, lane, source[0] if source else "field")][
                    int(pane_start)] = (
                    LaneAccumulator.from_json(data)
                )
        metrics: list[ApproachMetrics] = []
        for spec in self.specs:
            step_ms, size_ms = spec.step_s * 1000, spec.size_s * 1000
            end = (previous // step_ms + 1) * step_ms
            while end <= boundary:
                metrics.extend(self._window_metrics(spec, panes, end - size_ms, end))
                end += step_ms
        keep_from = min(
            (boundary // (s.step_s * 1000) + 1) * s.step_s * 1000 - s.size_s * 1000
            for s in self.specs
        )
        expired = [
            key
            for start, keys in pane_keys.items()
            if start < keep_from and start < boundary
            for key in keys
        ]
        state["closed_upto_ms"] = boundary
        state["open_from_ms"] = None
        return metrics, expired

    def _window_metrics(
        self,
        spec: WindowSpec,
        panes: Mapping[LaneKey, Mapping[int, LaneAccumulator]],
        start_ms: int,
        end_ms: int,
    ) -> list[ApproachMetrics]:
        lanes: dict[LaneKey, LaneAccumulator] = {}
        for lane_key, lane_panes in panes.items():
            acc = LaneAccumulator()
            for pane_start, pane in lane_panes.items():
                if start_ms <= pane_start < end_ms:
                    acc.merge(pane)
            if acc.readings:
                lanes[lane_key] = acc
        approaches: dict[tuple[str, str, str], LaneAccumulator] = defaultdict(LaneAccumulator)
        out = []
        for (intersection, approach, lane, source), acc in sorted(lanes.items()):
            approaches[(intersection, approach, source)].merge(acc)
            out.append(self._metric(spec, intersection, approach, lane, source, acc, start_ms,
                                    end_ms))
        for (intersection, approach, source), acc in sorted(approaches.items()):
            out.append(self._metric(spec, intersection, approach, None, source, acc, start_ms,
                                    end_ms))
        return out

    def _metric(
        self,
        spec: WindowSpec,
        intersection: str,
        approach: str,
        lane: str | None,
        source: str,
        acc: LaneAccumulator,
        start_ms: int,
        end_ms: int,
    ) -> ApproachMetrics:
        counts = {VehicleClass(cls): n for cls, n in acc.counts.items()}
        per_hour = 3600.0 / spec.size_s
        protected = self.protection.get((intersection, approach), True)
        return ApproachMetrics(
            site=self.site_id,
            intersection=intersection,
            approach=approach,
            lane=lane,
            source=source,
            window=spec.label,
            window_start=datetime.fromtimestamp(start_ms / 1000, UTC),
            window_end=datetime.fromtimestamp(end_ms / 1000, UTC),
            counts=counts,
            flow_veh_per_hour=sum(counts.values()) * per_hour,
            flow_pcu_per_hour=self.pcu.pcu(counts, protected=protected) * per_hour,
            occupancy_pct=acc.occupancy_pct_s / acc.occupancy_s if acc.occupancy_s else None,
            mean_speed_kmh=acc.speed_kmh_weighted / acc.speed_weight if acc.speed_weight else None,
            readings=acc.readings,
        )

    def _late_reason(self, reading: NormalisedReading, state: Mapping[str, Any]) -> str:
        closed = datetime.fromtimestamp(state["closed_upto_ms"] / 1000, UTC).isoformat()
        stamped = datetime.fromtimestamp(reading.ts_ms / 1000, UTC).isoformat()
        return (
            f"reading stamped {stamped} arrived after its window closed "
            f"(windows up to {closed} closed; grace {self.grace_ms / 1000:g} s)"
        )

    def _pane_start(self, ts_ms: float) -> int:
        # Labelled by interval end: a ts exactly on a boundary belongs to the pane before it.
        return int((math.ceil(ts_ms) - 1) // self.pane_ms * self.pane_ms)

    @staticmethod
    def _pane_key(partition: int, intersection: str, pane_start: int) -> str:
        return f"pane|{partition}|{intersection}|{pane_start}"

    @staticmethod
    def _state_key(partition: int) -> str:
        return f"state|{partition}"

    def _state(self, store: Store, partition: int) -> dict[str, Any]:
        stored = store.get(self._state_key(partition))
        if stored is None:
            return {
                "event_wm_ms": None,
                "wm_arrival_ms": 0.0,
                "closed_upto_ms": None,
                "open_from_ms": None,
                "sources_done": {},
            }
        return {**stored, "sources_done": dict(stored["sources_done"])}
