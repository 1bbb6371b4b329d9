"""Validation and normalisation of raw sensor messages, shared by every ingest path.

A message is one reading (JSON object) or a batch (JSON array). Each reading is judged on
its own: good ones are resolved to their lane through the site file, bad ones become dead
letters whose reason names the JSON path of every problem.

>>> from simpang.site_file import load_site
>>> from simpang.settings import DEMO_SITE_FILE
>>> validator = ReadingValidator(load_site(DEMO_SITE_FILE), max_future_skew_s=60)
>>> result = validator.validate(b'[{"device_id": "nope", "kind": "loop"}]', source="doc",
...                             message_id="m1", received_at=datetime.now(UTC))
>>> [(d.reason_code.value, d.reason) for d in result.dead_letters]
[('invalid', '[0].ts: Field required; [0].interval_s: Field required')]
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from simpang.devices import SeqDeduplicator
from simpang.records import (
    DeadLetter,
    NormalisedReading,
    PlanReport,
    RejectReason,
    SensorReading,
)
from simpang.site import Intersection, Plan, Site
from simpang.site_file import format_location

MAX_MESSAGE_BYTES = 1024 * 1024
MAX_READINGS_PER_MESSAGE = 10_000


@dataclass(frozen=True)
class FieldError:
    """One problem with a reading, at its JSON path (``[2].ts``; empty: the whole message)."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


@dataclass(frozen=True)
class Rejection:
    """Why one reading (``index`` in its batch; None for a single object or the whole
    message) was refused."""

    index: int | None
    reason_code: RejectReason
    errors: tuple[FieldError, ...]
    device_id: str | None = None

    @property
    def reason(self) -> str:
        return "; ".join(str(error) for error in self.errors)


@dataclass(frozen=True)
class Accepted:
    """A reading that passed, with the JSON object it came as (to forward unchanged)."""

    index: int | None
    reading: NormalisedReading
    item: dict[str, Any]

    @property
    def seq(self) -> int | None:
        seq = self.item.get("seq")
        return seq if isinstance(seq, int) else None


@dataclass
class IngestResult:
    by_intersection: dict[str, list[NormalisedReading]] = field(default_factory=dict)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    readings_in: int = 0
    items: list[Accepted] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)

    @property
    def accepted(self) -> int:
        return sum(len(readings) for readings in self.by_intersection.values())


class ReadingValidator:
    def __init__(self, site: Site, *, max_future_skew_s: float) -> None:
        self.site = site
        self.locations = site.sensor_locations()
        self.max_future_skew = timedelta(seconds=max_future_skew_s)

    def validate(
        self, raw: bytes, *, source: str, message_id: str, received_at: datetime
    ) -> IngestResult:
        result = IngestResult()

        def reject(rejection: Rejection, payload: bytes | str) -> None:
            suffix = "" if rejection.index is None else f":{rejection.index}"
            result.rejections.append(rejection)
            result.dead_letters.append(
                DeadLetter.of(
                    id=f"{message_id}{suffix}", source=source,
                    reason_code=rejection.reason_code, reason=rejection.reason,
                    raw=payload, device_id=rejection.device_id, ts=received_at,
                )
            )

        def whole(code: RejectReason, message: str) -> Rejection:
            return Rejection(None, code, (FieldError("", message),))

        if len(raw) > MAX_MESSAGE_BYTES:
            result.readings_in = 1
            reject(whole(RejectReason.TOO_LARGE,
                         f"message of {len(raw)} bytes exceeds {MAX_MESSAGE_BYTES}"), raw)
            return result
        try:
            document = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            result.readings_in = 1
            reject(whole(RejectReason.MALFORMED, f"not valid JSON: {exc}"), raw)
            return result
        is_batch = isinstance(document, list)
        items: list[Any] = document if is_batch else [document]
        if not is_batch and not isinstance(document, dict):
            result.readings_in = 1
            reject(whole(RejectReason.MALFORMED,
                         "expected a reading (JSON object) or a batch (JSON array)"), raw)
            return result
        if len(items) > MAX_READINGS_PER_MESSAGE:
            result.readings_in = len(items)
            reject(whole(RejectReason.TOO_LARGE,
                         f"batch of {len(items)} readings exceeds {MAX_READINGS_PER_MESSAGE}"),
                   raw)
            return result
        result.readings_in = len(items)
        grouped: dict[str, list[NormalisedReading]] = defaultdict(list)
        for index, item in enumerate(items):
            position = index if is_batch else None
            outcome = self._one(item, () if position is None else (position,), received_at)
            if isinstance(outcome, NormalisedReading):
                grouped[outcome.intersection].append(outcome)
                result.items.append(Accepted(position, outcome, item))
            else:
                code, errors = outcome
                device = item.get("device_id") if isinstance(item, dict) else None
                reject(Rejection(position, code, errors,
                                 device if isinstance(device, str) else None), _dump(item))
        result.by_intersection = dict(grouped)
        return result

    def _one(
        self, item: Any, at: tuple[int, ...], received_at: datetime
    ) -> NormalisedReading | tuple[RejectReason, tuple[FieldError, ...]]:
        def problem(code: RejectReason, loc: tuple[int | str, ...], message: str
                    ) -> tuple[RejectReason, tuple[FieldError, ...]]:
            return code, (FieldError(format_location((*at, *loc)), message),)

        if not isinstance(item, dict):
            return problem(RejectReason.MALFORMED, (), "expected a JSON object")
        if item.get("v", 1) != 1:
            return problem(RejectReason.UNSUPPORTED_VERSION, ("v",),
                           f"version {item.get('v')!r} is not supported (expected 1)")
        try:
            reading = SensorReading.model_validate(item)
        except ValidationError as exc:
            return RejectReason.INVALID, tuple(
                FieldError(format_location((*at, *err["loc"])),
                           err["msg"].removeprefix("Value error, "))
                for err in exc.errors()
            )
        location = self.locations.get(reading.device_id)
        if location is None:
            return problem(RejectReason.UNKNOWN_DEVICE, ("device_id",),
                           f"{reading.device_id!r} is not in site {self.site.id!r}")
        claimed = {
            "intersection": reading.intersection, "approach": reading.approach, "lane": reading.lane
        }
        for name, value in claimed.items():
            expected = getattr(location, name)
            if value is not None and value != expected:
                return problem(RejectReason.LOCATION_MISMATCH, (name,),
                               f"{value!r} but device {reading.device_id!r} is at "
                               f"{name} {expected!r} in the site file")
        if reading.kind != location.kind:
            return problem(RejectReason.INVALID, ("kind",),
                           f"{reading.kind!r} but device {reading.device_id!r} is a "
                           f"{location.kind!r} in the site file")
        if reading.ts - received_at > self.max_future_skew:
            return problem(RejectReason.FUTURE_TIMESTAMP, ("ts",),
                           f"{reading.ts.isoformat()} is more than "
                           f"{self.max_future_skew.total_seconds():g} s ahead of the receiver's "
                           f"clock ({received_at.astimezone(UTC).isoformat()})")
        # Built from validated values: validating them again was over a quarter of the
        # validator's CPU under load (bench/ingest.py profile).
        return NormalisedReading.model_construct(
            intersection=location.intersection,
            approach=location.approach,
            lane=location.lane,
            device_id=reading.device_id,
            ts_ms=round(reading.ts.timestamp() * 1000),
            interval_s=reading.interval_s,
            counts=reading.class_counts(),
            occupancy_pct=reading.occupancy_pct,
            speed_kmh=reading.speed_kmh,
            seq=reading.seq,
        )


def _dump(item: Any) -> str:
    try:
        return json.dumps(item, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(item)


@dataclass
class Screened:
    """Readings from a device-facing path (HTTP, MQTT), after the sender's rights and
    re-sends: ``batches`` (intersection → the readings as they came) go on to
    sensor-readings; every refusal is in ``rejections`` and ``dead_letters``."""

    batches: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    rejections: list[Rejection] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    accepted: int = 0
    duplicates: int = 0
    fresh: list[tuple[str, int]] = field(default_factory=list)


def screen(result: IngestResult, *, forbidden: Callable[[NormalisedReading], str | None],
           dedup: SeqDeduplicator, message_id: str, source: str,
           received_at: datetime) -> Screened:
    """Refuse the readings ``forbidden`` objects to (it returns why), drop re-sends (device +
    ``seq`` accepted before), and group the rest by intersection."""
    out = Screened(rejections=list(result.rejections), dead_letters=list(result.dead_letters))
    batches: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for accepted in result.items:
        reading = accepted.reading
        why = forbidden(reading)
        if why is not None:
            at = "device_id" if accepted.index is None else f"[{accepted.index}].device_id"
            rejection = Rejection(accepted.index, RejectReason.FORBIDDEN,
                                  (FieldError(at, why),), reading.device_id)
            out.rejections.append(rejection)
            out.dead_letters.append(DeadLetter.of(
                id=f"{message_id}:{accepted.index or 0}", source=source,
                reason_code=rejection.reason_code, reason=rejection.reason,
                raw=_dump(accepted.item), device_id=reading.device_id, ts=received_at))
            continue
        seq = accepted.seq
        if seq is not None:
            if not dedup.first_time(reading.device_id, seq):
                out.duplicates += 1
                continue
            out.fresh.append((reading.device_id, seq))
        batches[reading.intersection].append(accepted.item)
        out.accepted += 1
    out.batches = dict(batches)
    out.rejections.sort(key=lambda r: -1 if r.index is None else r.index)
    return out


def validate_plan_report(raw: bytes, site: Site, *, source: str, message_id: str,
                         received_at: datetime, max_future_skew_s: float
                         ) -> PlanReport | DeadLetter:
    """A controller's plan report, or the dead letter saying what is wrong with it (its JSON
    paths; an unknown intersection; a plan the site's phases, intergreens and green limits
    cannot run)."""

    def refuse(code: RejectReason, reason: str, device_id: str | None = None) -> DeadLetter:
        return DeadLetter.of(id=message_id, source=source, reason_code=code, reason=reason,
                             raw=raw, device_id=device_id, ts=received_at)

    try:
        report = PlanReport.model_validate_json(raw)
    except ValidationError as exc:
        code = (RejectReason.MALFORMED if any(e["type"] == "json_invalid" for e in exc.errors())
                else RejectReason.INVALID)
        return refuse(code, "; ".join(
            str(FieldError(format_location(tuple(e["loc"])), e["msg"]))
            for e in exc.errors()))
    intersection = next((i for i in site.intersections if i.id == report.intersection), None)
    if intersection is None:
        return refuse(RejectReason.LOCATION_MISMATCH,
                      f"intersection: {report.intersection!r} is not in site {site.id!r}",
                      report.device_id)
    if report.ts - received_at > timedelta(seconds=max_future_skew_s):
        return refuse(RejectReason.FUTURE_TIMESTAMP,
                      f"ts: {report.ts.isoformat()} is more than {max_future_skew_s:g} s "
                      "in the future", report.device_id)
    plan = Plan(cycle_s=report.cycle_s, greens_s=report.greens_s, offset_s=report.offset_s)
    try:
        Intersection.model_validate({**intersection.model_dump(), "plan": plan.model_dump()})
    except ValidationError as exc:
        return refuse(RejectReason.INVALID, "; ".join(
            e["msg"].removeprefix("Value error, ") for e in exc.errors()), report.device_id)
    return report
