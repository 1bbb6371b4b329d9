"""The timing agent's logic, without Faust: ``approach-metrics`` rows in, timing
recommendations out, through :func:`simpang.recommend.recommend` (the closed-loop
evaluator's own path).

Per intersection, a recommendation is due every ``every_cycles`` cycles of the running plan,
measured on the metrics' event time (window ends), so a replay of the same metrics makes the
same recommendations. When an intersection's metrics stop coming, :meth:`on_clock` (wall
time) makes a recommendation anyway: the running plan, saying the metrics are stale.

>>> from simpang.site_file import load_site
>>> from simpang.settings import DEMO_SITE_FILE, TimingSettings
>>> service = TimingService(load_site(DEMO_SITE_FILE), TimingSettings())
>>> sorted(service.running)[:2]
['bpn-gunung-malang', 'bpn-muara-rapak']
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from simpang.adaptive import DemandForecast, adaptive_recommendation
from simpang.corridor import recommend_corridor
from simpang.recommend import LaneDemand, plan_of, recommend
from simpang.records import ApproachMetrics, PlanReport, TimingRecommendation
from simpang.settings import TimingSettings
from simpang.site import Plan, Site
from simpang.windows import WindowSpec


class TimingService:
    def __init__(self, site: Site, settings: TimingSettings) -> None:
        self.site = site
        self.settings = settings
        self.intersections = {i.id: i for i in site.intersections}
        self.demand = {i.id: LaneDemand(i, settings.window) for i in site.intersections}
        self.forecast = {i.id: DemandForecast() for i in site.intersections}
        self._window_s = float(WindowSpec.from_label(settings.window).size_s)
        self.running: dict[str, Plan] = {i.id: i.plan for i in site.intersections}
        self._last_made: dict[str, datetime] = {}
        self._last_data: dict[str, datetime] = {}
        self._reported: dict[str, datetime] = {}

    def _due(self, intersection_id: str, now: datetime) -> bool:
        last = self._last_made.get(intersection_id)
        every = timedelta(seconds=self.settings.every_cycles
                          * self.running[intersection_id].cycle_s)
        return last is None or now - last >= every

    def _make(self, intersection_id: str, now: datetime) -> list[TimingRecommendation]:
        """The recommendation due for ``intersection_id``; in plan mode, for every member of
        its corridor at once (they share a cycle and their offsets make the green band)."""
        intersection = self.intersections[intersection_id]
        corridor = self.site.corridor_of(intersection_id)
        if self.settings.mode == "adaptive":
            made = [adaptive_recommendation(
                self.site.id, intersection, self.demand[intersection_id],
                self.forecast[intersection_id], running=self.running[intersection_id],
                now=now, timezone=self.site.timezone,
                newest_window_end=self._last_data.get(intersection_id, now),
                window_s=self._window_s, max_age_s=self.settings.max_age_s,
                headroom=self.settings.headroom)]
        elif corridor is not None:
            made = recommend_corridor(self.site, corridor, self.demand, self.running, now=now,
                                      max_age_s=self.settings.max_age_s)
        else:
            made = [recommend(self.site.id, intersection, self.demand[intersection_id],
                              running=self.running[intersection_id], now=now,
                              max_age_s=self.settings.max_age_s)]
        for recommendation in made:
            self._last_made[recommendation.intersection] = now
            # Once its controller reports what it runs, that is the running plan, not a
            # guess. An adaptive controller runs its own greens within the plan's bounds.
            if (recommendation.status == "recommended" and self.settings.assume_adopted
                    and self.settings.mode == "plan"
                    and recommendation.intersection not in self._reported):
                self.running[recommendation.intersection] = plan_of(recommendation)
        return made

    def on_plan(self, report: PlanReport) -> bool:
        """Take a controller's report of the plan it runs (validated against the site);
        False when it is older than one already taken."""
        last = self._reported.get(report.intersection)
        if report.intersection not in self.intersections or (last and report.ts < last):
            return False
        self._reported[report.intersection] = report.ts
        self.running[report.intersection] = Plan(
            cycle_s=report.cycle_s, greens_s=report.greens_s, offset_s=report.offset_s)
        return True

    def on_metrics(self, rows: Iterable[ApproachMetrics]) -> list[TimingRecommendation]:
        """Take one ``approach-metrics`` message; the recommendations now due."""
        by_intersection: dict[str, list[ApproachMetrics]] = {}
        for row in rows:
            if row.intersection in self.intersections and row.window == self.settings.window:
                by_intersection.setdefault(row.intersection, []).append(row)
        out = []
        for intersection_id, mine in by_intersection.items():
            self.demand[intersection_id].update(mine)
            self.forecast[intersection_id].observe(self.demand[intersection_id],
                                                   self.site.timezone)
            newest = max(row.window_end for row in mine)
            self._last_data[intersection_id] = max(
                newest, self._last_data.get(intersection_id, newest))
            if self._due(intersection_id, newest):
                out += self._make(intersection_id, newest)
        return out

    def on_clock(self, now: datetime) -> list[TimingRecommendation]:
        """Recommendations for intersections whose metrics are overdue at wall time ``now``
        (each says why it keeps the running plan)."""
        out = []
        for intersection_id in self.intersections:
            last = self._last_data.get(intersection_id)
            if intersection_id not in self._last_made and last is None:
                continue  # never heard of: nothing to say yet
            overdue = last is None or (now - last).total_seconds() > self.settings.max_age_s
            if overdue and self._due(intersection_id, now):
                out += self._make(intersection_id, now)
        return out

    def forget(self) -> None:
        """Drop what was heard: after a rebalance another worker may own an intersection."""
        self._last_data.clear()
        self._last_made.clear()
        self._reported.clear()

