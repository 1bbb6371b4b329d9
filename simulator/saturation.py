"""A saturation-flow survey in simulation, as a traffic engineer does one in the field.

PKJI prefers a measured saturation flow to its formula, and SUMO's vehicles are not
Indonesia's: on the bundled networks SUMO discharges about 1,000–1,100 PCU per lane-hour of
green where PKJI's formula gives about 1,700. Plans computed with the formula would then
give too little green. The survey watches queues discharge under the running plan: on each
lane, from 4 s after its green begins (past the start-up loss) while vehicles still stand
queued on it, the PCU that cross the stop line per second of green; lanes never seen
saturated keep the formula. The survey runs the scenario's demand × 1.5 (SUMO's ``--scale``),
as a field survey is done in the peak: at the scenario's own demand a quiet approach queues
for only a minute an hour, and a minute of discharge is too noisy a measure.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from simpang.site import Site
from simulator.sumo_run import SumoRun

START_UP_LOSS_S = 4.0
MIN_QUEUED = 2
MIN_SATURATED_S = 60.0
ENOUGH_SATURATED_S = 300.0
SURVEY_DEMAND_SCALE = 1.5


@dataclass(frozen=True)
class LaneSaturation:
    intersection: str
    approach: str
    lane: str
    pcu: float
    saturated_green_s: float

    @property
    def saturation_flow_pcu_per_hour(self) -> float:
        return 3600.0 * self.pcu / self.saturated_green_s


def survey(site: Site, sumocfg: Path, work_dir: Path, *, day: datetime, seed: int,
           begin_s: float | None = None, end_s: float | None = None,
           demand_scale: float = SURVEY_DEMAND_SCALE) -> list[LaneSaturation]:
    """Measured saturated discharge of every simulated lane under the site's plans, with the
    scenario's demand scaled up so that every lane queues often enough to be measured. The
    survey stops once every lane has :data:`ENOUGH_SATURATED_S` of saturated green (a long
    span at 1.5 × demand can jam a network, and a jammed SUMO crawls)."""
    run = SumoRun(site, sumocfg, work_dir, seed=seed, begin_s=begin_s, end_s=end_s, day=day,
                  queue_detectors=False, demand_scale=demand_scale)
    lanes = [(i, a, lane.id, lane.sumo_lane) for i in site.intersections if i.sumo_tls
             for a in i.approaches for lane in a.lanes if lane.sumo_lane is not None]
    pcu = {lane: 0.0 for *_, lane in lanes}
    seconds = {lane: 0.0 for *_, lane in lanes}
    with run:
        traci = run.traci
        links = {i.id: traci.trafficlight.getControlledLinks(i.sumo_tls)
                 for i in site.intersections if i.sumo_tls}
        on_lane: dict[str, set[str]] = {lane: set() for *_, lane in lanes}
        green_since: dict[str, float] = {}
        step_s = run.step_length_s
        while not run.finished():
            t_s = run.step()
            if t_s % 60 == 0 and min(seconds.values(), default=0.0) >= ENOUGH_SATURATED_S:
                break
            green: set[str] = set()
            for intersection in site.intersections:
                if intersection.sumo_tls is None:
                    continue
                state = traci.trafficlight.getRedYellowGreenState(intersection.sumo_tls)
                green |= {group[0][0] for index, group in enumerate(links[intersection.id])
                          if group and state[index] in "Gg"}
            for _, approach, _, lane in lanes:
                now = set(traci.lane.getLastStepVehicleIDs(lane))
                if lane in green:
                    since = green_since.setdefault(lane, t_s)
                    if (t_s - since > START_UP_LOSS_S
                            and traci.lane.getLastStepHaltingNumber(lane) >= MIN_QUEUED):
                        seconds[lane] += step_s
                        pcu[lane] += sum(
                            site.pcu_factors.for_class(run.vehicle_class(v),
                                                       protected=approach.protected)
                            for v in on_lane[lane] - now)
                else:
                    green_since.pop(lane, None)
                on_lane[lane] = now
    return [LaneSaturation(i.id, approach.id, lane_id, pcu[lane], seconds[lane])
            for i, approach, lane_id, lane in lanes]


def with_surveyed_flows(site: Site, surveyed: list[LaneSaturation]) -> Site:
    """``site`` with each lane's measured saturation flow where the survey saw enough of it
    (lanes that already have a measured value keep theirs)."""
    measured = {(s.intersection, s.approach, s.lane): s.saturation_flow_pcu_per_hour
                for s in surveyed if s.saturated_green_s >= MIN_SATURATED_S and s.pcu > 0}
    data = site.model_dump()
    for intersection in data["intersections"]:
        for approach in intersection["approaches"]:
            for lane in approach["lanes"]:
                value = measured.get((intersection["id"], approach["id"], lane["id"]))
                if value is not None and lane.get("saturation_flow_pcu_per_hour") is None:
                    lane["saturation_flow_pcu_per_hour"] = round(min(value, 3000.0), 1)
    return Site.model_validate(data)
