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
    PlanReport,
    RejectReason,
    SensorReading,
)
from simpang.vehicles import VehicleClass
from streams.fiware import MappingError, reading_of
from streams.ingest import (
    MAX_READINGS_PER_MESSAGE,
    ReadingValidator,
    Rejection,
    screen,
    validate_plan_report,
)

SOURCE = "http"


@dataclass
class HttpOutcome:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    batches: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    fresh: list[tuple[str, int]] = field(default_factory=list)
    plans: dict[str, bytes] = field(default_factory=dict)
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

    def admit(self, body: bytes, *, authorization: str | None, request_id: str,
              received_at: datetime) -> DeviceToken | HttpOutcome:
        """The token's grant, or the refusal: no or unknown token (401), body too large (413)."""
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
        return grant

    def over_rate(self, grant: DeviceToken, cost: int, body: bytes, *, request_id: str,
                  received_at: datetime) -> HttpOutcome | None:
        """The 429 refusal when ``cost`` readings exceed the token's bucket, else None."""
        wait_s = self.limiter.take(grant.name, cost, rate=grant.max_readings_per_s,
                                   burst=grant.burst_readings, now_s=self.clock())
        if wait_s <= 0:
            return None
        return self.refuse(429, RejectReason.RATE_LIMITED,
                           f"{grant.name} may send {grant.max_readings_per_s:g} readings/s "
                           f"(bursts of {grant.burst_readings}); wait {wait_s:.2f} s",
                           body, request_id=request_id, received_at=received_at,
                           device=grant.name, retry_after_s=round(wait_s, 3),
                           headers={"Retry-After": str(math.ceil(wait_s))})

    def handle(self, body: bytes, *, authorization: str | None, request_id: str,
               received_at: datetime) -> HttpOutcome:
        grant = self.admit(body, authorization=authorization, request_id=request_id,
                           received_at=received_at)
        if isinstance(grant, HttpOutcome):
            return grant
        result = self.validator.validate(body, source=SOURCE, message_id=request_id,
                                         received_at=received_at)
        refused = self.over_rate(grant, result.readings_in, body, request_id=request_id,
                                 received_at=received_at)
        if refused is not None:
            return refused

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


    def handle_plan(self, body: bytes, *, authorization: str | None, request_id: str,
                    received_at: datetime) -> HttpOutcome:
        """``POST /v1/plans``: a signal controller reports the plan it runs."""
        common = {"request_id": request_id, "received_at": received_at}
        grant = self.admit(body, authorization=authorization, **common)
        if isinstance(grant, HttpOutcome):
            return grant
        refused = self.over_rate(grant, 1, body, **common)
        if refused is not None:
            return refused
        checked = validate_plan_report(
            body, self.validator.site, source=f"{SOURCE}:plans", message_id=request_id,
            received_at=received_at,
            max_future_skew_s=self.validator.max_future_skew.total_seconds())
        if isinstance(checked, DeadLetter):
            return HttpOutcome(400, {"error": checked.reason,
                                     "reason_code": checked.reason_code.value},
                               dead_letters=[checked], readings_in=1)
        if not grant.may_write(checked.device_id, checked.intersection):
            return self.refuse(403, RejectReason.FORBIDDEN,
                               f"token {grant.name!r} may not report for {checked.device_id!r} "
                               f"at {checked.intersection!r}", body, device=checked.device_id,
                               **common)
        return HttpOutcome(202, {"accepted": 1}, plans={checked.intersection: body},
                           readings_in=1, accepted=1)


    def handle_ngsi(self, body: bytes, *, authorization: str | None, request_id: str,
                    received_at: datetime, batch: bool) -> HttpOutcome:
        """FIWARE ``TrafficFlowObserved`` entities (NGSI-LD create, or batch upsert when
        ``batch``): mapped to readings (:mod:`streams.fiware`), then as ``/v1/readings``.
        Answers as NGSI-LD does: 201 (created), 207 (some failed) or ProblemDetails."""
        try:
            document = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            document = None
        entities = document if batch else [document]
        if not isinstance(entities, list) or (batch is False and not isinstance(document,
                                                                              dict)):
            inner = self.handle(body, authorization=authorization, request_id=request_id,
                                received_at=received_at)
            return _problem(inner) if inner.status != 202 else inner
        kinds = {device: where.kind for device, where in self.validator.locations.items()}
        mapped: list[tuple[int, dict[str, Any]]] = []
        failed: list[tuple[int, MappingError]] = []
        for index, entity in enumerate(entities):
            try:
                mapped.append((index, reading_of(entity, kinds=kinds,
                                                 at=f"[{index}]" if batch else "")))
            except MappingError as exc:
                failed.append((index, exc))
        inner = self.handle(json.dumps([reading for _, reading in mapped]).encode(),
                            authorization=authorization, request_id=request_id,
                            received_at=received_at)
        if inner.status in (401, 413, 429):
            return _problem(inner)
        errors: dict[int, str] = {index: str(exc) for index, exc in failed}
        for index, exc in failed:
            entity = entities[index]
            inner.dead_letters.append(DeadLetter.of(
                id=f"{request_id}:{index}", source=f"{SOURCE}:ngsi-ld",
                reason_code=RejectReason.INVALID, reason=str(exc), raw=json.dumps(entity),
                ts=received_at))
        for rejected in inner.body.get("rejected", []):
            index = mapped[rejected["index"] or 0][0]
            errors[index] = "; ".join(f"{e['path']}: {e['message']}".lstrip(": ")
                                      for e in rejected["errors"])
        ids = [str(e.get("id")) if isinstance(e, dict) else f"[{i}]"
               for i, e in enumerate(entities)]
        inner.readings_in = len(entities)
        if not batch:
            if errors:
                inner.status, inner.body = 400, _problem_body("BadRequestData", errors[0])
            else:
                inner.status, inner.body = 201, {"id": ids[0]}
                inner.headers["Location"] = f"/ngsi-ld/v1/entities/{ids[0]}"
            return inner
        inner.status = 207 if errors else 201
        inner.body = ({"success": [ids[i] for i in range(len(ids)) if i not in errors],
                       "errors": [{"entityId": ids[i],
                                   "error": _problem_body("BadRequestData", why)}
                                  for i, why in sorted(errors.items())]}
                      if errors else {"success": ids, "errors": []})
        return inner


def _problem_body(kind: str, detail: str) -> dict[str, Any]:
    return {"type": f"https://uri.etsi.org/ngsi-ld/errors/{kind}", "title": kind,
            "detail": detail}


def _problem(outcome: HttpOutcome) -> HttpOutcome:
    """An ingest refusal as NGSI-LD ProblemDetails (same status, same dead letters)."""
    kinds = {400: "BadRequestData", 401: "Unauthorized", 403: "Forbidden",
             413: "RequestEntityTooLarge", 429: "TooManyRequests"}
    detail = outcome.body.get("error") or json.dumps(outcome.body.get("rejected", []))
    outcome.body = _problem_body(kinds.get(outcome.status, "InternalError"), str(detail))
    return outcome


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
    refusal = {"type": "object", "properties": {
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
            "/v1/plans": {"post": {
                "summary": "A signal controller reports the plan it runs",
                "security": [{"bearer": []}],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "$ref": "#/components/schemas/PlanReport"}}}},
                "responses": {
                    "202": answer("Taken as the intersection's running plan.", "Refusal"),
                    "400": answer("Not a plan the intersection can run, or malformed.",
                                  "Refusal"),
                    "401": answer("Missing or unknown bearer token.", "Refusal"),
                    "403": answer("The token may not report for this controller.", "Refusal"),
                    "413": answer("Body too large.", "Refusal"),
                    "429": answer("Over the token's rate; see Retry-After.", "Refusal"),
                    "503": answer("Not stored in time; send again.", "Refusal"),
                }}},
            "/ngsi-ld/v1/entities": {"post": {
                "summary": "Create a FIWARE TrafficFlowObserved entity (NGSI-LD)",
                "security": [{"bearer": []}],
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/Entity"}}}},
                "responses": {
                    "201": answer("Mapped to a reading and accepted.", "Created"),
                    **{code: answer(why, "ProblemDetails") for code, why in (
                        ("400", "Not a TrafficFlowObserved Simpang can use."),
                        ("401", "Missing or unknown bearer token."),
                        ("403", "A device outside the token's scope."),
                        ("413", "Body too large."), ("429", "Over the token's rate."),
                        ("503", "Not stored in time; send again."))},
                }}},
            "/ngsi-ld/v1/entityOperations/upsert": {"post": {
                "summary": "Upsert a batch of TrafficFlowObserved entities (NGSI-LD)",
                "security": [{"bearer": []}],
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"type": "array",
                               "items": {"$ref": "#/components/schemas/Entity"}}}}},
                "responses": {
                    "201": answer("All mapped and accepted.", "BatchResult"),
                    "207": answer("Some entities failed; the others were accepted.",
                                  "BatchResult"),
                    **{code: answer(why, "ProblemDetails") for code, why in (
                        ("400", "Not a batch of entities."),
                        ("401", "Missing or unknown bearer token."),
                        ("413", "Body too large."), ("429", "Over the token's rate."),
                        ("503", "Not stored in time; send again."))},
                }}},
            "/v1/health": {"get": {"summary": "Is this worker taking readings",
                                   "responses": {"200": {"description": "Healthy",
                                                         "content": {"application/json": {
                                                             "schema": {"type": "object"}}}}}}},
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {**definitions, "SensorReading": reading, "FieldError": error,
                        "PlanReport": PlanReport.model_json_schema(),
                        "Entity": {"type": "object", "required": ["id", "type"],
                                   "properties": {"id": {"type": "string"},
                                                  "type": {"type": "string"}}},
                        "Created": {"type": "object", "properties": {
                            "id": {"type": "string"}}},
                        "ProblemDetails": {"type": "object", "required": ["type", "title"],
                                           "properties": {"type": {"type": "string"},
                                                          "title": {"type": "string"},
                                                          "detail": {"type": "string"}}},
                        "BatchResult": {"type": "object", "required": ["success", "errors"],
                                        "properties": {
                                            "success": {"type": "array",
                                                        "items": {"type": "string"}},
                                            "errors": {"type": "array", "items": {
                                                "type": "object", "properties": {
                                                    "entityId": {"type": "string"},
                                                    "error": {"$ref": "#/components/"
                                                              "schemas/ProblemDetails"}}}}}},
                        "Rejected": rejected, "Result": result, "Refusal": refusal},
        },
    }


def add_views(app: Any, http: HttpIngest, *, sensor_readings: Any, signal_plans: Any,
              dead_letter: Callable[[DeadLetter], Any], counters: Any, worker: str,
              produce_timeout_s: float) -> None:
    """Mount ``/v1/readings``, ``/v1/plans``, ``/v1/health`` and ``/openapi.json`` on the
    Faust web server."""
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

    Decide = Callable[[bytes, str | None, str, datetime], HttpOutcome]

    async def serve(view: View, request: Request, decide: Decide) -> Response:
        """Read the body (refusing oversize ones early), decide, store, answer."""
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
                outcome = decide(body, authorization, request_id, received_at)
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
                return reply(view, outcome)
        for intersection, raw in outcome.plans.items():
            try:
                delivery = await signal_plans.send(key=intersection.encode(), value=raw)
                await asyncio.wait_for(delivery, produce_timeout_s)
            except (TimeoutError, OSError):
                return reply(view, HttpOutcome(503, {"error": "not stored in time; send "
                                                              "again"}, {"Retry-After": "1"}))
        counters.http_readings_accepted += outcome.accepted
        counters.http_duplicates += outcome.duplicates
        for letter in outcome.dead_letters:
            await dead_letter(letter)
        return reply(view, outcome)

    @app.page("/v1/readings")
    class Readings(View):  # type: ignore[misc]
        async def post(self, request: Request) -> Response:
            return await serve(self, request, lambda body, auth, rid, at: http.handle(
                body, authorization=auth, request_id=rid, received_at=at))

    @app.page("/ngsi-ld/v1/entities")
    class NgsiEntities(View):  # type: ignore[misc]
        async def post(self, request: Request) -> Response:
            return await serve(self, request, lambda body, auth, rid, at: http.handle_ngsi(
                body, authorization=auth, request_id=rid, received_at=at, batch=False))

    @app.page("/ngsi-ld/v1/entityOperations/upsert")
    class NgsiUpsert(View):  # type: ignore[misc]
        async def post(self, request: Request) -> Response:
            return await serve(self, request, lambda body, auth, rid, at: http.handle_ngsi(
                body, authorization=auth, request_id=rid, received_at=at, batch=True))

    @app.page("/v1/plans")
    class Plans(View):  # type: ignore[misc]
        async def post(self, request: Request) -> Response:
            return await serve(self, request, lambda body, auth, rid, at: http.handle_plan(
                body, authorization=auth, request_id=rid, received_at=at))

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
