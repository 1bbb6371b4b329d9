"""FIWARE Smart Data Models, ``TrafficFlowObserved`` (NGSI-LD): in from the platforms cities
already run, and out for them.

In: an entity (normalised ``{"type": "Property", "value": …}`` or key-values) becomes one
:class:`~simpang.records.SensorReading`:

================================  =========================================================
TrafficFlowObserved               SensorReading
================================  =========================================================
``refDevice`` (urn:…:Device:ID)   ``device_id`` = ID (required: Simpang must know the device)
``dateObserved`` ``A/B``           ``ts`` = B, ``interval_s`` = B − A (or ``dateObservedFrom``
                                  / ``dateObservedTo``)
``intensity``                     ``counts`` {class of ``vehicleType``: intensity}, or
                                  ``count`` when no vehicle type is given
``occupancy`` (0–1)               ``occupancy_pct`` (× 100)
``averageVehicleSpeed`` (km/h)    ``speed_kmh``
================================  =========================================================

``kind`` comes from the site file (the device's own kind). FIWARE's vehicle types map to
Simpang's classes (``lorry``, ``trailer`` → truck; ``van``, ``car`` → car; ``motorcycle``,
``moped``, ``scooter`` → motorcycle; ``bus``, ``minibus`` → bus; ``bicycle`` → bicycle;
anything else → unclassified).

Out: :func:`traffic_flow_observed` turns an :class:`~simpang.records.ApproachMetrics` row into
an entity (``simpang export fiware``).

>>> entity = {"id": "urn:ngsi-ld:TrafficFlowObserved:1", "type": "TrafficFlowObserved",
...           "refDevice": "urn:ngsi-ld:Device:loop-1", "intensity": 12,
...           "dateObserved": "2026-11-24T07:00:00+08:00/2026-11-24T07:01:00+08:00"}
>>> reading_of(entity, kinds={"loop-1": "loop"})
{'device_id': 'loop-1', 'kind': 'loop', 'ts': '2026-11-24T07:01:00+08:00', 'interval_s': 60.0, \
'count': 12}
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from simpang.records import ApproachMetrics
from simpang.site import Intersection
from simpang.vehicles import VehicleClass

ENTITY_TYPE = "TrafficFlowObserved"
CONTEXT = [
    "https://raw.githubusercontent.com/smart-data-models/dataModel.Transportation/master/"
    "context.jsonld",
    "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld",
]
FIWARE_CLASSES = {
    "car": VehicleClass.CAR, "van": VehicleClass.CAR, "taxi": VehicleClass.CAR,
    "motorcycle": VehicleClass.MOTORCYCLE, "moped": VehicleClass.MOTORCYCLE,
    "scooter": VehicleClass.MOTORCYCLE, "bus": VehicleClass.BUS,
    "minibus": VehicleClass.BUS, "lorry": VehicleClass.TRUCK, "trailer": VehicleClass.TRUCK,
    "truck": VehicleClass.TRUCK, "bicycle": VehicleClass.BICYCLE,
}


class MappingError(ValueError):
    """An entity that cannot become a reading; ``path`` is the JSON path of the problem."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


def _value(entity: dict[str, Any], name: str) -> Any:
    """A property's value, from the normalised or the key-values form."""
    found = entity.get(name)
    if isinstance(found, dict):
        if found.get("type") == "Relationship":
            return found.get("object")
        if "value" in found:
            inner = found["value"]
            # DateTime values may come typed: {"@type": "DateTime", "@value": "..."}.
            return inner.get("@value") if isinstance(inner, dict) else inner
    return found


def _time(path: str, text: Any) -> datetime:
    if not isinstance(text, str):
        raise MappingError(path, "expected a date-time string")
    try:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise MappingError(path, f"not an ISO 8601 date-time: {text!r}") from exc
    if stamp.tzinfo is None:
        raise MappingError(path, "needs a time zone")
    return stamp


def reading_of(entity: Any, *, kinds: dict[str, str], at: str = "") -> dict[str, Any]:
    """The SensorReading (as JSON) an entity stands for; ``kinds``: device id → kind."""
    if not isinstance(entity, dict):
        raise MappingError(at or "(top level)", "expected an NGSI-LD entity (JSON object)")
    if entity.get("type") != ENTITY_TYPE:
        raise MappingError(f"{at}.type".lstrip("."),
                           f"expected {ENTITY_TYPE!r}, got {entity.get('type')!r}")
    device_ref = _value(entity, "refDevice")
    if not isinstance(device_ref, str) or not device_ref:
        raise MappingError(f"{at}.refDevice".lstrip("."),
                           "required: the device (urn:ngsi-ld:Device:<id>) that observed it")
    device_id = device_ref.rsplit(":", 1)[-1]
    if device_id not in kinds:
        raise MappingError(f"{at}.refDevice".lstrip("."),
                           f"device {device_id!r} is not in the site file")
    observed = _value(entity, "dateObserved")
    if isinstance(observed, str) and "/" in observed:
        start_text, end_text = observed.split("/", 1)
        start = _time(f"{at}.dateObserved".lstrip("."), start_text)
        end = _time(f"{at}.dateObserved".lstrip("."), end_text)
    else:
        start = _time(f"{at}.dateObservedFrom".lstrip("."), _value(entity, "dateObservedFrom"))
        end = _time(f"{at}.dateObservedTo".lstrip("."), _value(entity, "dateObservedTo"))
    interval_s = (end - start).total_seconds()
    if interval_s <= 0:
        raise MappingError(f"{at}.dateObserved".lstrip("."), "the interval ends before it "
                                                                "starts")
    reading: dict[str, Any] = {"device_id": device_id, "kind": kinds[device_id],
                               "ts": end.isoformat(), "interval_s": interval_s}
    intensity = _value(entity, "intensity")
    if intensity is not None:
        vehicle_type = _value(entity, "vehicleType")
        if vehicle_type is None:
            reading["count"] = intensity
        else:
            vehicle_class = FIWARE_CLASSES.get(str(vehicle_type), VehicleClass.UNCLASSIFIED)
            reading["counts"] = {vehicle_class.value: intensity}
    occupancy = _value(entity, "occupancy")
    if occupancy is not None:
        if not isinstance(occupancy, int | float) or isinstance(occupancy, bool):
            raise MappingError(f"{at}.occupancy".lstrip("."), "expected a number (0 to 1)")
        reading["occupancy_pct"] = round(float(occupancy) * 100, 4)
    speed = _value(entity, "averageVehicleSpeed")
    if speed is not None:
        reading["speed_kmh"] = speed
    return reading


def traffic_flow_observed(metrics: ApproachMetrics, intersection: Intersection | None,
                          ) -> dict[str, Any]:
    """An approach (or lane) window of Simpang's as a normalised NGSI-LD entity."""
    place = f"{metrics.site}:{metrics.intersection}:{metrics.approach}" + (
        f":{metrics.lane}" if metrics.lane else "")
    entity: dict[str, Any] = {
        "id": f"urn:ngsi-ld:{ENTITY_TYPE}:simpang:{place}:{metrics.window}:{metrics.source}",
        "type": ENTITY_TYPE,
        "dateObserved": {"type": "Property", "value": f"{metrics.window_start.isoformat()}/"
                                                      f"{metrics.window_end.isoformat()}"},
        "dateObservedFrom": {"type": "Property", "value": {
            "@type": "DateTime", "@value": metrics.window_start.isoformat()}},
        "dateObservedTo": {"type": "Property", "value": {
            "@type": "DateTime", "@value": metrics.window_end.isoformat()}},
        "intensity": {"type": "Property", "value": sum(metrics.counts.values())},
        "name": {"type": "Property", "value": f"{metrics.intersection} {metrics.approach}"
                                              + (f" {metrics.lane}" if metrics.lane else "")},
        "dataProvider": {"type": "Property", "value": "simpang"},
        "@context": CONTEXT,
    }
    if metrics.occupancy_pct is not None:
        entity["occupancy"] = {"type": "Property", "value": round(metrics.occupancy_pct / 100,
                                                                  4)}
    if metrics.mean_speed_kmh is not None:
        entity["averageVehicleSpeed"] = {"type": "Property", "value": metrics.mean_speed_kmh}
    if intersection is not None:
        entity["location"] = {"type": "GeoProperty", "value": {
            "type": "Point", "coordinates": [intersection.lon, intersection.lat]}}
        approach = next((a for a in intersection.approaches if a.id == metrics.approach), None)
        if approach is not None and metrics.lane is not None:
            lanes = [lane.id for lane in approach.lanes]
            if metrics.lane in lanes:
                entity["laneId"] = {"type": "Property", "value": lanes.index(metrics.lane) + 1}
    return entity


async def export(settings: Any, site: Any, *, level: str, window: str | None, limit: int | None,
                 follow: bool, broker_url: str | None, token: str | None,
                 emit: Any, idle_s: float = 1.5) -> int:
    """Read ``approach-metrics`` from the start and send each row as a TrafficFlowObserved
    entity: to ``emit`` (a line printer), or upserted in batches of up to 100 into the NGSI-LD
    context broker at ``broker_url``. Returns how many entities went out."""
    import asyncio
    import json as json_module
    import time

    import aiohttp
    from aiokafka import AIOKafkaConsumer

    from simpang.records import METRICS_LIST
    from streams.kafka import aiokafka_kwargs

    intersections = {i.id: i for i in site.intersections}
    consumer = AIOKafkaConsumer(settings.topics.name("approach_metrics"),
                                **aiokafka_kwargs(settings.kafka), group_id=None,
                                auto_offset_reset="earliest",
                                fetch_max_wait_ms=settings.kafka.fetch_max_wait_ms)
    session = aiohttp.ClientSession() if broker_url else None
    headers = {"Content-Type": "application/ld+json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    sent = 0
    pending: list[dict[str, Any]] = []

    async def flush() -> None:
        nonlocal sent
        if not pending:
            return
        if session is not None:
            async with session.post(f"{broker_url}/ngsi-ld/v1/entityOperations/upsert",
                                    data=json_module.dumps(pending), headers=headers) as answer:
                if answer.status >= 300:
                    raise RuntimeError(f"context broker answered {answer.status}: "
                                       f"{(await answer.text())[:500]}")
        else:
            for item in pending:
                emit(json_module.dumps(item, ensure_ascii=False))
        sent += len(pending)
        pending.clear()

    await consumer.start()
    try:
        quiet_since = time.monotonic()
        while follow or time.monotonic() - quiet_since < idle_s:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                quiet_since = time.monotonic()
                for record in records:
                    for row in METRICS_LIST.validate_json(record.value):
                        if (row.lane is None) != (level == "approach"):
                            continue
                        if window is not None and row.window != window:
                            continue
                        pending.append(traffic_flow_observed(row,
                                                             intersections.get(row.intersection)))
                        if limit is not None and sent + len(pending) >= limit:
                            await flush()
                            return sent
                        if len(pending) >= 100:
                            await flush()
            if not batches:
                await flush()
            await asyncio.sleep(0)
        await flush()
        return sent
    finally:
        await consumer.stop()
        if session is not None:
            await session.close()
