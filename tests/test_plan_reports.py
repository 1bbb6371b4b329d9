"""Signal controllers reporting the plan they run: validation against the site, the timing
service taking it as the running plan, and POST /v1/plans."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from simpang.devices import DevicesFile, TokenRegistry, issue_token
from simpang.records import ApproachMetrics, DeadLetter, PlanReport, RejectReason
from simpang.settings import DEMO_SITE_FILE, TimingSettings
from simpang.site import Site
from simpang.site_file import load_site
from streams.http_ingest import HttpIngest
from streams.ingest import ReadingValidator, validate_plan_report
from streams.timing import TimingService

RECEIVED = datetime(2026, 11, 24, 0, 0, tzinfo=UTC)
X = "smd-lembuswana"


@pytest.fixture(scope="module")
def site() -> Site:
    return load_site(DEMO_SITE_FILE)


def report(**overrides: Any) -> dict[str, Any]:
    # 130 s = greens 110 + four intergreens of 5 s.
    base: dict[str, Any] = {
        "device_id": "tsc-lembuswana", "intersection": X,
        "ts": "2026-11-24T07:30:00+08:00", "cycle_s": 120,
        "greens_s": {"p-north": 30, "p-east": 20, "p-south": 30, "p-west": 20},
        "offset_s": 12, "program": "peak-am"}
    base.update(overrides)
    return base


def check(site: Site, body: Any) -> PlanReport | DeadLetter:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return validate_plan_report(raw, site, source="test", message_id="m1",
                                received_at=RECEIVED, max_future_skew_s=120)


def test_a_plan_the_intersection_can_run_is_taken(site: Site) -> None:
    checked = check(site, report())
    assert isinstance(checked, PlanReport)
    assert checked.cycle_s == 120 and checked.greens_s["p-east"] == 20


@pytest.mark.parametrize(("body", "code", "says"), [
    (b"{nope", RejectReason.MALFORMED, "Invalid JSON"),
    (report(cycle_s="long"), RejectReason.INVALID, "cycle_s: "),
    (report(intersection="nowhere"), RejectReason.LOCATION_MISMATCH, "not in site"),
    (report(greens_s={"p-north": 60, "p-south": 50}), RejectReason.INVALID,
     "must name every phase"),
    (report(cycle_s=150), RejectReason.INVALID, "differs from greens"),
    (report(greens_s={"p-north": 3, "p-east": 37, "p-south": 30, "p-west": 30}),
     RejectReason.INVALID, "outside"),
    (report(ts="2026-11-24T09:00:00+08:00"), RejectReason.FUTURE_TIMESTAMP, "future"),
])
def test_plans_it_cannot_run_are_dead_letters_with_the_reason(
    site: Site, body: Any, code: RejectReason, says: str,
) -> None:
    checked = check(site, body)
    assert isinstance(checked, DeadLetter), checked
    assert checked.reason_code is code and says in checked.reason, checked.reason


def metrics(site: Site, end: datetime, flow: float) -> list[ApproachMetrics]:
    intersection = next(i for i in site.intersections if i.id == X)
    return [ApproachMetrics(
        site=site.id, intersection=X, approach=approach.id, lane=lane.id,
        window="300s-every-60s", window_start=end - timedelta(seconds=300), window_end=end,
        flow_veh_per_hour=flow, flow_pcu_per_hour=flow, counts={}, readings=5,
        occupancy_pct=10.0, mean_speed_kmh=30.0,
        source="field") for approach in intersection.approaches for lane in approach.lanes]


def test_the_reported_plan_is_the_running_plan_from_then_on(site: Site) -> None:
    service = TimingService(site, TimingSettings(every_cycles=1))
    checked = check(site, report())
    assert isinstance(checked, PlanReport) and service.on_plan(checked)
    assert service.running[X].cycle_s == 120 and service.running[X].offset_s == 12
    start = datetime(2026, 11, 24, 0, 0, tzinfo=UTC)
    made = [r for r in service.on_metrics(metrics(site, start, 600)) if r.intersection == X]
    assert made and made[0].running_cycle_s == 120
    assert made[0].running_greens_s == report()["greens_s"]
    # A controller reports: its recommendation is not assumed adopted.
    assert made[0].status == "recommended" and made[0].cycle_s != 120
    assert service.running[X].cycle_s == 120
    older = check(site, report(ts="2026-11-24T07:00:00+08:00", offset_s=0))
    assert isinstance(older, PlanReport) and not service.on_plan(older)
    assert service.running[X].offset_s == 12


def test_post_plans_checks_the_token_the_scope_and_the_plan(site: Site) -> None:
    controller, first = issue_token("tsc", devices=["tsc-*"], intersections=[X])
    loops, second = issue_token("loops", devices=["smd-*"])
    http = HttpIngest(ReadingValidator(site, max_future_skew_s=120),
                      TokenRegistry(DevicesFile(tokens=[first, second])),
                      max_body_bytes=4096)

    def post(body: Any, token: str | None) -> Any:
        return http.handle_plan(json.dumps(body).encode(),
                                authorization=None if token is None else f"Bearer {token}",
                                request_id="http:p1", received_at=RECEIVED)

    good = post(report(), controller)
    assert good.status == 202 and list(good.plans) == [X] and not good.dead_letters
    assert json.loads(good.plans[X])["cycle_s"] == 120
    assert post(report(), None).status == 401
    forbidden = post(report(), loops)
    assert forbidden.status == 403 and forbidden.dead_letters[0].reason_code is (
        RejectReason.FORBIDDEN)
    bad = post(report(cycle_s=150), controller)
    assert bad.status == 400 and "differs from greens" in bad.body["error"]
    assert bad.dead_letters[0].reason_code is RejectReason.INVALID and not bad.plans
