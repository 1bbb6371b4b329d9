"""``POST /v1/readings``: field devices push readings over HTTP to any worker.

The decision for one request is pure (:meth:`HttpIngest.handle`): authenticate the bearer
token, check the size, validate every reading (the same :class:`ReadingValidator` as the
Kafka path), apply the token's rate limit, check each reading's device against the token's
scope, drop re-sends (device + ``seq`` seen before). The view then produces the accepted
readings, as they came, to ``sensor-readings`` (one message per intersection) and answers only
once the broker has them; every rejection goes to ``dead-letters`` with its reason.

Status codes: 202 all accepted (re-sends included: accepting them again is a no-op); 400 one
or more readings invalid (the body lists each with the JSON path of every problem; the others
were accepted); 403 readings for devices outside the token's scope (and none invalid);
401 missing or unknown token; 413 body too large; 429 over the token's rate (``Retry-After``);
503 the broker did not take the readings in time (nothing accepted; send again).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from simpang.devices import DeviceToken, RateLimiter, SeqDeduplicator, TokenRegistry
from simpang.records import (
    RAW_PAYLOAD_CAP_BYTES,
    DeadLetter,
    NormalisedReading,
    RejectReason,
    SensorReading,
)
from simpang.vehicles import VehicleClass
from streams.ingest import MAX_READINGS_PER_MESSAGE, ReadingValidator, Rejection, screen

SOURCE = "http"


@dataclass
class HttpOutcome:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    batches: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    fresh: list[tuple[str, int]] = field(default_factory=list)
    readings_in: int = 0
    accepted: int = 0
    duplicates: int = 0

    def unavailable(self, dedup: SeqDeduplicator) -> HttpOutcome:
        """The broker did not take the readings: nothing is accepted, re-sends are welcome."""
        for device_id, seq in self.fresh:
            dedup.forget(device_id, seq)
        return HttpOutcome(503, {"error": "the readings could not be stored in time; send "
                                          "them again", "accepted": 0},
                           {"Retry-After": "1"}, readings_in=self.readings_in)


def _rejection_json(rejection: Rejection) -> dict[str, Any]:
    return {"index": rejection.index, "device_id": rejection.device_id,
            "reason_code": rejection.reason_code.value,
            "errors": [{"path": e.path, "message": e.message} for e in rejection.errors]}


class HttpIngest:
    def __init__(self, validator: ReadingValidator, registry: TokenRegistry, *,
                 max_body_bytes: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.validator = validator
        self.registry = registry
        self.max_body_bytes = max_body_bytes
        self.clock = clock
        self.limiter = RateLimiter()
        self.dedup = SeqDeduplicator()

    def authenticate(self, authorization: str | None) -> DeviceToken | None:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return self.registry.authenticate(token.strip())

    def refuse(self, status: int, code: RejectReason, message: str, body: bytes, *,
               request_id: str, received_at: datetime, device: str | None = None,
               headers: dict[str, str] | None = None, **extra: Any) -> HttpOutcome:
        """A whole request refused: the answer, and the request as a dead letter."""
        letter = DeadLetter.of(id=request_id, source=SOURCE, reason_code=code, reason=message,
                               raw=body, device_id=device, ts=received_at)
        return HttpOutcome(status, {"error": message, "reason_code": code.value, **extra},
                           headers or {}, dead_letters=[letter], readings_in=1)

    def handle(self, body: bytes, *, authorization: str | None, request_id: str,
               received_at: datetime) -> HttpOutcome:
        grant = self.authenticate(authorization)
        if grant is None:
            return self.refuse(401, RejectReason.UNAUTHORISED,
                               "missing or unknown bearer token", body, request_id=request_id,
                               received_at=received_at,
                               headers={"WWW-Authenticate": 'Bearer realm="simpang"'})
        if len(body) > self.max_body_bytes:
            return self.refuse(413, RejectReason.TOO_LARGE,
                               f"body of {len(body)} bytes exceeds {self.max_body_bytes}",
                               body[:1024], request_id=request_id, received_at=received_at,
                               device=grant.name, max_bytes=self.max_body_bytes)
        result = self.validator.validate(body, source=SOURCE, message_id=request_id,
                                         received_at=received_at)
        wait_s = self.limiter.take(grant.name, result.readings_in,
                                   rate=grant.max_readings_per_s, burst=grant.burst_readings,
                                   now_s=self.clock())
        if wait_s > 0:
            return self.refuse(429, RejectReason.RATE_LIMITED,
                               f"{grant.name} may send {grant.max_readings_per_s:g} readings/s "
                               f"(bursts of {grant.burst_readings}); wait {wait_s:.2f} s",
                               body, request_id=request_id, received_at=received_at,
                               device=grant.name, retry_after_s=round(wait_s, 3),
                               headers={"Retry-After": str(math.ceil(wait_s))})
        def forbidden(reading: NormalisedReading) -> str | None:
            if grant.may_write(reading.device_id, reading.intersection):
                return None
            return (f"token {grant.name!r} may not write device {reading.device_id!r} "
                    f"at {reading.intersection!r}")

        screened = screen(result, forbidden=forbidden, dedup=self.dedup,
                          message_id=request_id, source=SOURCE, received_at=received_at)
        rejections = screened.rejections
        out = HttpOutcome(202, {}, batches=screened.batches,
                          dead_letters=screened.dead_letters, fresh=screened.fresh,
                          readings_in=result.readings_in, accepted=screened.accepted,
                          duplicates=screened.duplicates)
        codes = {r.reason_code for r in rejections}
        if not rejections:
            out.status = 202
        elif codes == {RejectReason.FORBIDDEN}:
            out.status = 403
        else:
            out.status = 400
        out.body = {"accepted": out.accepted, "duplicates": out.duplicates,
                    "rejected": [_rejection_json(r) for r in rejections]}
        if rejections:
            out.body["error"] = (f"{len(rejections)} of {result.readings_in} readings refused; "
                                 f"the others were accepted")
        return out


def openapi_document(max_body_bytes: int) -> dict[str, Any]:
    """The HTTP ingest API as OpenAPI 3.1 (served at ``/openapi.json``)."""
    reading = SensorReading.model_json_schema(ref_template="#/components/schemas/{model}")
    definitions = reading.pop("$defs", {})
    # Inline the class names where they name an object's keys: test generators (and some
    # clients) do not follow a reference inside propertyNames.
    counts = next(option for option in reading["properties"]["counts"]["anyOf"]
                  if option.get("type") == "object")
    counts["propertyNames"] = {"enum": [c.value for c in VehicleClass]}
    error = {"type": "object", "required": ["path", "message"], "properties": {
        "path": {"type": "string", "description": "JSON path, e.g. [2].ts; empty: the body"},
        "message": {"type": "string"}}}
    rejected = {"type": "object", "required": ["index", "reason_code", "errors"],
                "properties": {
                    "index": {"type": ["integer", "null"]},
                    "device_id": {"type": ["string", "null"]},
                    "reason_code": {"type": "string",
                                    "enum": [r.value for r in RejectReason]},
                    "errors": {"type": "array", "items": {"$ref": "#/components/schemas/"
                                                                  "FieldError"}}}}
    result = {"type": "object", "required": ["accepted", "duplicates", "rejected"],
              "properties": {
                  "accepted": {"type": "integer", "minimum": 0},
                  "duplicates": {"type": "integer", "minimum": 0},
                  "rejected": {"type": "array",
                               "items": {"$ref": "#/components/schemas/Rejected"}},
                  "error": {"type": "string"}}}
    refusal = {"type": "object", "required": ["error"], "properties": {
        "error": {"type": "string"}, "reason_code": {"type": "string"},
        "retry_after_s": {"type": "number"}, "max_bytes": {"type": "integer"},
        "accepted": {"type": "integer"}}}

    def answer(description: str, schema: str) -> dict[str, Any]:
        return {"description": description, "content": {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{schema}"}}}}

    return {
        "openapi": "3.1.0",
        "info": {"title": "Simpang field-device ingest", "version": "1",
                 "description": __doc__},
        "paths": {
            "/v1/readings": {"post": {
                "summary": "Send one reading or a batch",
                "security": [{"bearer": []}],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "oneOf": [{"$ref": "#/components/schemas/SensorReading"},
                              {"type": "array", "maxItems": MAX_READINGS_PER_MESSAGE,
                               "items": {"$ref": "#/components/schemas/SensorReading"}}]}}},
                    "description": f"At most {max_body_bytes} bytes."},
                "responses": {
                    "202": answer("Every reading accepted (re-sends included).", "Result"),
                    "400": answer("Some or all readings invalid; the rest accepted.", "Result"),
                    "401": answer("Missing or unknown bearer token.", "Refusal"),
                    "403": answer("Readings for devices outside the token's scope.", "Result"),
                    "413": answer("Body too large.", "Refusal"),
                    "429": answer("Over the token's rate; see Retry-After.", "Refusal"),
                    "503": answer("Not stored in time; send again.", "Refusal"),
                }}},
            "/v1/health": {"get": {"summary": "Is this worker taking readings",
                                   "responses": {"200": {"description": "Healthy",
                                                         "content": {"application/json": {
                                                             "schema": {"type": "object"}}}}}}},
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {**definitions, "SensorReading": reading, "FieldError": error,
                        "Rejected": rejected, "Result": result, "Refusal": refusal},
        },
    }


def add_views(app: Any, http: HttpIngest, *, sensor_readings: Any,
              dead_letter: Callable[[DeadLetter], Any], counters: Any, worker: str,
              produce_timeout_s: float) -> None:
    """Mount ``/v1/readings``, ``/v1/health`` and ``/openapi.json`` on the Faust web server."""
    import asyncio
    import uuid
    from datetime import UTC

    from aiohttp import web
    from faust.web import Request, Response, View

    document = openapi_document(http.max_body_bytes)
    started = time.monotonic()

    def reply(view: View, outcome: HttpOutcome) -> Response:
        response: Response = view.json(outcome.body, status=outcome.status,
                                       headers=outcome.headers)
        return response

    @app.page("/v1/readings")
    class Readings(View):  # type: ignore[misc]
        async def post(self, request: Request) -> Response:
            received_at = datetime.now(UTC)
            request_id = f"http:{uuid.uuid4().hex}"
            authorization = request.headers.get("Authorization")
            declared = request.content_length
            if declared is not None and declared > http.max_body_bytes and (
                    http.authenticate(authorization) is not None):
                # Keep the head for the dead letter; the rest is never read.
                body = await request.content.read(RAW_PAYLOAD_CAP_BYTES)
                outcome = http.refuse(413, RejectReason.TOO_LARGE,
                                      f"body of {declared} bytes exceeds {http.max_body_bytes}",
                                      body, request_id=request_id, received_at=received_at,
                                      max_bytes=http.max_body_bytes)
            else:
                try:
                    body = await request.read()
                except web.HTTPRequestEntityTooLarge:
                    body = b""
                    outcome = http.refuse(413, RejectReason.TOO_LARGE,
                                          f"body exceeds {http.max_body_bytes} bytes", body,
                                          request_id=request_id, received_at=received_at,
                                          max_bytes=http.max_body_bytes)
                else:
                    outcome = http.handle(body, authorization=authorization,
                                          request_id=request_id, received_at=received_at)
            counters.http_requests += 1
            counters.http_readings_in += outcome.readings_in
            if outcome.batches:
                try:
                    futures = [await sensor_readings.send(
                        key=intersection.encode(),
                        value=json.dumps(items, separators=(",", ":")).encode())
                        for intersection, items in outcome.batches.items()]
                    await asyncio.wait_for(asyncio.gather(*futures), produce_timeout_s)
                except (TimeoutError, OSError) as exc:
                    outcome = outcome.unavailable(http.dedup)
                    outcome.body["detail"] = str(exc) or type(exc).__name__
                    return reply(self, outcome)
            counters.http_readings_accepted += outcome.accepted
            counters.http_duplicates += outcome.duplicates
            for letter in outcome.dead_letters:
                await dead_letter(letter)
            return reply(self, outcome)

    @app.page("/v1/health")
    class Health(View):  # type: ignore[misc]
        async def get(self, request: Request) -> Response:
            response: Response = self.json({
                "status": "ok", "worker": worker, "devices": len(http.registry),
                "uptime_s": round(time.monotonic() - started, 1)})
            return response

    @app.page("/openapi.json")
    class OpenAPI(View):  # type: ignore[misc]
        async def get(self, request: Request) -> Response:
            response: Response = self.json(document)
            return response
