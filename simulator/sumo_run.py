"""One SUMO run of a site: detectors generated from the site's sensors, the site's plans (or a
controller's) on the signals, readings at every detector interval, vehicle states for the
virtual cameras, and the per-vehicle outcomes SUMO writes.

SUMO runs in-process through libsumo (one run per process at a time). Detector values are
SUMO's own interval aggregates (``getLastInterval…``), the same numbers SUMO writes to its
detector output files, which :class:`SumoRun` also asks for so they can be compared.

Detectors:

- ``loop`` → induction loop (E1) across the lane, ``distance_m`` before the stop line:
  vehicles by class (a length-classifying loop), occupancy and mean speed.
- ``radar`` → lane-area detector (E2) of ``zone_length_m`` ending ``distance_m`` before the
  stop line: occupancy and mean speed over the zone, no count (a presence zone cannot tell
  a standing vehicle seen twice from two vehicles).
- ``counter`` → like a loop, counts by class only.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

from simpang.site import Sensor, Site
from simpang.vehicles import VehicleClass
from simulator.demand import class_of_vclass
from simulator.faults import DeviceMessage
from simulator.signals import FixedTime, SignalController, Signals
from simulator.sumo_tools import (
    SumoConfig,
    SumoError,
    ensure_sumo_home,
    read_sumocfg,
    redirect_outputs,
)

DETECTOR_FILE = "detectors.add.xml"
DETECTOR_OUTPUT = "detectors.out.xml"
QUEUE_OUTPUT = "queues.out.xml"
TRIPINFO_OUTPUT = "tripinfo.out.xml"
QUEUE_DETECTOR_PREFIX = "simpang-queue."


@dataclass(frozen=True)
class VehicleState:
    """A vehicle at one simulated instant: front bumper middle, heading (degrees clockwise
    from north, SUMO's convention), class and size."""

    vehicle_id: str
    x_m: float
    y_m: float
    angle_deg: float
    vehicle_class: VehicleClass
    length_m: float
    width_m: float
    height_m: float


@dataclass
class _TypeInfo:
    vehicle_class: VehicleClass
    length_m: float
    width_m: float
    height_m: float


@dataclass
class SumoRun:
    """Context manager around one libsumo simulation of ``site``.

    ``begin_s``/``end_s`` are simulated seconds since local midnight of ``day`` (the
    scenario's own begin by default); readings are stamped ``day`` midnight in the site's
    time zone + simulated time.
    """

    site: Site
    sumocfg: Path
    work_dir: Path
    seed: int = 42
    begin_s: float | None = None
    end_s: float | None = None
    interval_s: float = 60.0
    day: datetime | None = None
    controller: SignalController = field(default_factory=FixedTime)
    track_vehicles: bool = False
    queue_detectors: bool = True
    extra_additional: list[Path] = field(default_factory=list)
    # Trip records also for vehicles still driving or never inserted at the end (evaluation:
    # a controller that blocks entries must not look better for it).
    write_unfinished: bool = False
    demand_scale: float = 1.0

    def __post_init__(self) -> None:
        # SUMO resolves output paths in an additional file against that file's folder.
        self.work_dir = Path(self.work_dir).resolve()
        self.config: SumoConfig = read_sumocfg(self.sumocfg)
        self.begin = self.begin_s if self.begin_s is not None else self.config.begin_s
        self._traci: Any = None
        self._types: dict[str, _TypeInfo] = {}
        self._vehicle_type: dict[str, str] = {}
        self._radars: list[str] = []
        self._last_reading_at: float | None = None
        self._occupancy_sum: dict[str, float] = {}
        self._occupancy_steps = 0
        self._loop_spans: dict[str, dict[str, tuple[float, float]]] = {}
        self.signals: Signals | None = None
        self._sensors = [
            (i.id, sensor) for i in self.site.intersections for sensor in i.sensors
        ]
        self._lanes = {
            (i.id, a.id, lane.id): lane.sumo_lane
            for i in self.site.intersections for a in i.approaches for lane in a.lanes
        }

    def __enter__(self) -> SumoRun:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def traci(self) -> Any:
        """The running libsumo module (after :meth:`start`)."""
        if self._traci is None:
            raise SumoError("the run has not started")
        return self._traci

    @property
    def time_s(self) -> float:
        return float(self._traci.simulation.getTime())

    @property
    def step_length_s(self) -> float:
        return float(self._traci.simulation.getDeltaT())

    def timestamp(self, t_s: float) -> datetime:
        """Wall-clock time of simulated second ``t_s``."""
        return self.day_start + timedelta(seconds=t_s)

    @property
    def day_start(self) -> datetime:
        if self.day is None:
            raise SumoError("day is not set")
        return self.day

    def start(self) -> None:
        import libsumo

        ensure_sumo_home()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        detector_file = self.work_dir / DETECTOR_FILE
        detector_file.write_text(self._detector_xml(), encoding="utf-8")
        outputs = self.work_dir / "scenario-outputs"
        additional = [
            str(redirect_outputs(p, outputs)) for p in self.config.additional_files
        ] + [str(detector_file)] + [str(Path(p).resolve()) for p in self.extra_additional]
        args = [
            "sumo", "-c", str(self.config.path),
            "--seed", str(self.seed),
            "--begin", f"{self.begin:g}",
            "--additional-files", ",".join(additional),
            "--tripinfo-output", str(self.work_dir / TRIPINFO_OUTPUT),
            "--no-step-log", "true", "--no-warnings", "true",
            "--duration-log.disable", "true",
        ]
        for option, value in self.config.output_options.items():
            if option != "tripinfo-output":
                args += [f"--{option}", str(outputs / Path(value).name)]
        if self.end_s is not None:
            args += ["--end", f"{self.end_s:g}"]
        if self.demand_scale != 1.0:
            args += ["--scale", f"{self.demand_scale:g}"]
        if self.write_unfinished:
            args += ["--tripinfo-output.write-unfinished", "true",
                     "--tripinfo-output.write-undeparted", "true"]
        try:
            libsumo.start(args)
        except Exception as exc:
            raise SumoError(f"SUMO could not load {self.config.path}: {exc}") from exc
        self._traci = libsumo
        self.signals = Signals(self.site, libsumo)
        self.signals.start(self.begin)
        self._last_reading_at = self.begin
        for _, sensor in self._sensors:
            if sensor.kind != "radar":
                self._loop_spans[sensor.device_id] = {}
            if sensor.kind == "radar":
                self._radars.append(sensor.device_id)
                self._occupancy_sum[sensor.device_id] = 0.0

    def close(self) -> None:
        if self._traci is not None:
            self._traci.close()
            self._traci = None

    def step(self) -> float:
        """Advance one simulation step; returns the new simulated time."""
        traci = self._traci
        traci.simulationStep()
        for vehicle_id in traci.simulation.getDepartedIDList():
            type_id = traci.vehicle.getTypeID(vehicle_id)
            self._vehicle_type[vehicle_id] = type_id
            if type_id not in self._types:
                self._types[type_id] = _TypeInfo(
                    class_of_vclass(traci.vehicletype.getVehicleClass(type_id)),
                    traci.vehicletype.getLength(type_id),
                    traci.vehicletype.getWidth(type_id),
                    traci.vehicletype.getHeight(type_id),
                )
            if self.track_vehicles:
                traci.vehicle.subscribe(vehicle_id, (0x42, 0x43))  # position, angle
        # Occupancy as SUMO's detector files give it: the share of the interval's time the
        # detector was occupied, vehicles standing on it at the interval's end included.
        # (libsumo's getLastIntervalOccupancy credits a vehicle to the interval it leaves in.)
        for device_id, spans in self._loop_spans.items():
            for vehicle_id, _, entry_s, leave_s, _ in traci.inductionloop.getVehicleData(
                    device_id):
                spans[vehicle_id] = (entry_s, leave_s)
        for device_id in self._radars:
            self._occupancy_sum[device_id] += traci.lanearea.getLastStepOccupancy(device_id)
        self._occupancy_steps += 1
        t_s = self.time_s
        assert self.signals is not None
        self.controller.step(t_s, self.signals)
        self.signals.on_step()
        return t_s

    def finished(self) -> bool:
        end = self.end_s if self.end_s is not None else self.config.end_s
        if end is not None and self.time_s >= end - 1e-9:
            return True
        return bool(self._traci.simulation.getMinExpectedNumber() <= 0) and end is None

    def vehicle_class(self, vehicle_id: str) -> VehicleClass:
        """Class of a vehicle that has departed in this run."""
        return self._types[self._vehicle_type[vehicle_id]].vehicle_class

    def vehicles(self) -> list[VehicleState]:
        """Every vehicle now (needs ``track_vehicles``)."""
        states = []
        for vehicle_id, values in self._traci.vehicle.getAllSubscriptionResults().items():
            info = self._types[self._vehicle_type[vehicle_id]]
            x, y = values[0x42]
            states.append(VehicleState(
                vehicle_id, float(x), float(y), float(values[0x43]), info.vehicle_class,
                info.length_m, info.width_m, info.height_m,
            ))
        return states

    def readings_due(self) -> list[dict[str, Any]]:
        """Every sensor's reading if a detector interval ended with the last step, else []."""
        t_s = self.time_s
        if round(t_s / self.interval_s, 6) % 1 != 0 or t_s == self._last_reading_at:
            return []
        self._last_reading_at = t_s
        ts = self.timestamp(t_s).astimezone(UTC).isoformat()
        readings = [self._reading(sensor, ts) for _, sensor in self._sensors]
        self._occupancy_sum = dict.fromkeys(self._occupancy_sum, 0.0)
        self._occupancy_steps = 0
        return readings

    def messages_due(self) -> list[DeviceMessage]:
        """:meth:`readings_due` as one JSON message per intersection, keyed by its id."""
        readings = self.readings_due()
        if not readings:
            return []
        location = {sensor.device_id: i for i, sensor in self._sensors}
        by_intersection: dict[str, list[dict[str, Any]]] = {}
        for reading in readings:
            by_intersection.setdefault(location[reading["device_id"]], []).append(reading)
        return [
            DeviceMessage(key, json.dumps(batch, separators=(",", ":")).encode(), len(batch))
            for key, batch in by_intersection.items()
        ]

    def _reading(self, sensor: Sensor, ts: str) -> dict[str, Any]:
        traci = self._traci
        device_id = sensor.device_id
        reading: dict[str, Any] = {
            "device_id": device_id,
            "kind": sensor.kind,
            "ts": ts,
            "interval_s": self.interval_s,
        }
        if sensor.kind == "radar":
            occupancy = self._occupancy_sum[device_id] / max(self._occupancy_steps, 1)
            speed_mps = traci.lanearea.getLastIntervalMeanSpeed(device_id)
        else:
            counts: dict[str, int] = {}
            for vehicle_id in traci.inductionloop.getLastIntervalVehicleIDs(device_id):
                vehicle_class = self._types[self._vehicle_type[vehicle_id]].vehicle_class
                counts[vehicle_class.value] = counts.get(vehicle_class.value, 0) + 1
            reading["counts"] = counts
            occupancy = self._loop_occupancy_pct(device_id)
            speed_mps = traci.inductionloop.getLastIntervalMeanSpeed(device_id)
        if sensor.kind != "counter":
            reading["occupancy_pct"] = round(min(max(occupancy, 0.0), 100.0), 2)
            if speed_mps >= 0:
                reading["speed_kmh"] = round(min(speed_mps * 3.6, 250.0), 2)
        return reading

    def _loop_occupancy_pct(self, device_id: str) -> float:
        """Per cent of the interval just ended that vehicles were over the loop; forgets the
        vehicles that have left."""
        end_s = self.time_s
        start_s = end_s - self.interval_s
        spans = self._loop_spans[device_id]
        occupied_s = 0.0
        for entry_s, leave_s in spans.values():
            until = end_s if leave_s < 0 else min(leave_s, end_s)
            occupied_s += max(until - max(entry_s, start_s), 0.0)
        self._loop_spans[device_id] = {
            vehicle_id: span for vehicle_id, span in spans.items() if span[1] < 0
        }
        return 100.0 * occupied_s / self.interval_s

    def _detector_xml(self) -> str:
        import sumolib

        net = sumolib.net.readNet(str(self.config.net_file))
        out = self.work_dir / DETECTOR_OUTPUT
        lines = ["<additional>"]
        for intersection_id, sensor in self._sensors:
            lane_id = self._lanes[(intersection_id, sensor.approach, sensor.lane)]
            if lane_id is None:
                raise SumoError(f"sensor {sensor.device_id!r}: its lane has no sumo_lane")
            length = net.getLane(lane_id).getLength()
            end_pos = max(length - sensor.distance_m, 0.1)
            common = (f'id={quoteattr(sensor.device_id)} lane={quoteattr(lane_id)} '
                      f'period="{self.interval_s:g}" file={quoteattr(str(out))}')
            if sensor.kind == "radar":
                start = max(end_pos - sensor.zone_length_m, 0.0)
                lines.append(f'    <laneAreaDetector {common} pos="{start:.2f}" '
                             f'endPos="{end_pos:.2f}"/>')
            else:
                lines.append(f'    <inductionLoop {common} pos="{end_pos:.2f}"/>')
        if self.queue_detectors:
            queue_out = self.work_dir / QUEUE_OUTPUT
            for (intersection_id, approach_id, lane), lane_id in self._lanes.items():
                if lane_id is None:
                    continue
                # "|" cannot occur in Simpang ids, so the id splits back unambiguously.
                detector_id = f"{QUEUE_DETECTOR_PREFIX}{intersection_id}|{approach_id}|{lane}"
                lines.append(
                    f'    <laneAreaDetector id={quoteattr(detector_id)} lane={quoteattr(lane_id)}'
                    f' pos="0" endPos="{net.getLane(lane_id).getLength():.2f}"'
                    f' period="{self.interval_s:g}" file={quoteattr(str(queue_out))}/>'
                )
        lines.append("</additional>")
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Outcomes:
    """What the signals did to traffic, from SUMO's own output files."""

    vehicles_arrived: int
    mean_travel_time_s: float
    mean_delay_s: float
    p95_delay_s: float
    mean_stops: float
    delay_by_class_s: dict[str, float]
    max_queue_m: dict[str, float]
    mean_max_queue_m: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        return {
            "vehicles_arrived": self.vehicles_arrived,
            "mean_travel_time_s": round(self.mean_travel_time_s, 2),
            "mean_delay_s": round(self.mean_delay_s, 2),
            "p95_delay_s": round(self.p95_delay_s, 2),
            "mean_stops": round(self.mean_stops, 3),
            "delay_by_class_s": {k: round(v, 2) for k, v in self.delay_by_class_s.items()},
            "max_queue_m": {k: round(v, 1) for k, v in self.max_queue_m.items()},
            "mean_max_queue_m": {k: round(v, 1) for k, v in self.mean_max_queue_m.items()},
        }


def queue_intervals(work_dir: Path) -> Iterator[tuple[str, float, float]]:
    """``(intersection.approach, interval begin s, longest jam m)`` of every lane's queue
    detector interval in a finished run's output (nothing when it wrote none)."""
    queue_file = work_dir / QUEUE_OUTPUT
    if not queue_file.exists():
        return
    for _, element in ET.iterparse(queue_file):
        detector = element.get("id", "")
        if element.tag == "interval" and detector.startswith(QUEUE_DETECTOR_PREFIX):
            intersection, approach, _ = detector.removeprefix(QUEUE_DETECTOR_PREFIX).split("|", 2)
            yield (f"{intersection}.{approach}", float(element.get("begin", 0)),
                   float(element.get("maxJamLengthInMeters", 0)))
        element.clear()


def read_outcomes(work_dir: Path, *, after_s: float = 0.0) -> Outcomes:
    """Outcomes of a finished :class:`SumoRun` (call after it closed: SUMO flushes on close).

    Vehicles that departed before ``after_s`` (a warm-up) are left out. Queues are per
    approach (``intersection.approach``), the longest jam SUMO saw on any of its lanes.
    """
    import numpy as np

    delays: list[float] = []
    travel: list[float] = []
    stops: list[int] = []
    by_class: dict[str, list[float]] = {}
    for _, element in ET.iterparse(work_dir / TRIPINFO_OUTPUT):
        if element.tag != "tripinfo":
            continue
        if float(element.get("depart", 0)) >= after_s:
            delay = float(element.get("timeLoss", 0))
            delays.append(delay)
            travel.append(float(element.get("duration", 0)))
            stops.append(int(element.get("waitingCount", 0)))
            by_class.setdefault(element.get("vType", "?"), []).append(delay)
        element.clear()
    queues: dict[str, list[float]] = {}
    for approach, begin_s, jam_m in queue_intervals(work_dir):
        if begin_s >= after_s:
            queues.setdefault(approach, []).append(jam_m)
    return Outcomes(
        vehicles_arrived=len(delays),
        mean_travel_time_s=float(np.mean(travel)) if travel else 0.0,
        mean_delay_s=float(np.mean(delays)) if delays else 0.0,
        p95_delay_s=float(np.percentile(delays, 95)) if delays else 0.0,
        mean_stops=float(np.mean(stops)) if stops else 0.0,
        delay_by_class_s={k: float(np.mean(v)) for k, v in sorted(by_class.items())},
        max_queue_m={k: max(v) for k, v in sorted(queues.items())},
        mean_max_queue_m={k: float(np.mean(v)) for k, v in sorted(queues.items())},
    )
