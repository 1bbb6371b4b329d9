"""Traffic demand for the bundled scenarios: an Indonesian urban mix, a daily profile with
morning and evening peaks, and origin–destination splits, written as SUMO routes.

Arrivals are Poisson (``period="exp(rate)"``), so a run is reproducible by SUMO's seed and
nothing else. Simulated time is seconds since local midnight of the scenario day.

>>> profile = daily_profile()
>>> max(range(24), key=lambda hour: profile[hour])
17
>>> round(profile[17], 2), round(profile[3], 2)
(1.0, 0.06)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from xml.sax.saxutils import quoteattr

from simpang.vehicles import VehicleClass
from simulator.emulator import CLASS_MIX, demand_factor


@dataclass(frozen=True)
class VehicleType:
    """A SUMO vehicle type for one Simpang class (sizes in metres, speeds in m/s)."""

    vehicle_class: VehicleClass
    sumo_vclass: str
    length_m: float
    width_m: float
    height_m: float
    min_gap_m: float
    accel_mps2: float
    decel_mps2: float
    max_speed_mps: float
    sigma: float = 0.5


VEHICLE_TYPES: dict[VehicleClass, VehicleType] = {
    VehicleClass.MOTORCYCLE: VehicleType(
        VehicleClass.MOTORCYCLE, "motorcycle", 2.0, 0.8, 1.5, 1.0, 2.8, 5.0, 16.7
    ),
    VehicleClass.CAR: VehicleType(
        VehicleClass.CAR, "passenger", 4.3, 1.75, 1.5, 2.0, 2.6, 4.5, 16.7
    ),
    VehicleClass.BUS: VehicleType(VehicleClass.BUS, "bus", 12.0, 2.5, 3.2, 2.5, 1.2, 4.0, 13.9),
    VehicleClass.TRUCK: VehicleType(
        VehicleClass.TRUCK, "truck", 9.0, 2.4, 3.0, 2.5, 1.3, 4.0, 13.9
    ),
    VehicleClass.BICYCLE: VehicleType(
        VehicleClass.BICYCLE, "bicycle", 1.8, 0.65, 1.6, 0.5, 1.2, 3.0, 5.0
    ),
}
CLASS_OF_SUMO_VCLASS = {t.sumo_vclass: c for c, t in VEHICLE_TYPES.items()}
"""SUMO vClass → Simpang class; types of other vClasses map through :func:`class_of_vclass`."""


def class_of_vclass(sumo_vclass: str) -> VehicleClass:
    """Simpang class of any SUMO vehicle class (networks Simpang did not write included).

    >>> class_of_vclass("moped"), class_of_vclass("delivery"), class_of_vclass("coach")
    (<VehicleClass.MOTORCYCLE: 'motorcycle'>, <VehicleClass.CAR: 'car'>, <VehicleClass.BUS: 'bus'>)
    """
    if sumo_vclass in CLASS_OF_SUMO_VCLASS:
        return CLASS_OF_SUMO_VCLASS[sumo_vclass]
    if sumo_vclass in ("moped", "scooter"):
        return VehicleClass.MOTORCYCLE
    if sumo_vclass in ("coach", "tram"):
        return VehicleClass.BUS
    if sumo_vclass in ("trailer", "semitrailer"):
        return VehicleClass.TRUCK
    return VehicleClass.CAR


def daily_profile() -> list[float]:
    """Demand of each local hour relative to the busiest hour (1.0)."""
    factors = [demand_factor(hour + 0.5) for hour in range(24)]
    peak = max(factors)
    return [f / peak for f in factors]


@dataclass(frozen=True)
class Demand:
    """``peak_veh_per_hour`` by entry edge; ``od_weight`` (entry → exit → weight) where given,
    else ``destination_weight`` over every reachable exit."""

    peak_veh_per_hour: Mapping[str, float]
    od_weight: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    destination_weight: Mapping[str, float] = field(default_factory=dict)
    mix: Mapping[VehicleClass, float] = field(default_factory=lambda: dict(CLASS_MIX))


def od_shares(
    demand: Demand, reachable: Mapping[str, list[str]]
) -> dict[tuple[str, str], float]:
    """Share of each entry's vehicles going to each exit.

    >>> shares = od_shares(Demand({"a": 100}, destination_weight={"x": 3, "y": 1}),
    ...                    {"a": ["x", "y"]})
    >>> shares
    {('a', 'x'): 0.75, ('a', 'y'): 0.25}
    """
    shares: dict[tuple[str, str], float] = {}
    for origin in demand.peak_veh_per_hour:
        weights = dict(demand.od_weight.get(origin, {})) or {
            exit_edge: demand.destination_weight.get(exit_edge, 1.0)
            for exit_edge in reachable.get(origin, [])
        }
        total = sum(weights.values())
        if total <= 0:
            raise ValueError(f"entry {origin!r} has no exit with positive weight")
        for exit_edge, weight in weights.items():
            if weight > 0:
                shares[(origin, exit_edge)] = weight / total
    return shares


def routes_xml(demand: Demand, reachable: Mapping[str, list[str]]) -> str:
    """A SUMO route file: the vehicle types, a type distribution of the mix, and one Poisson
    flow per entry, exit and hour of the day."""
    lines = ["<routes>"]
    total_mix = sum(demand.mix.values())
    lines.append('    <vTypeDistribution id="urban_mix">')
    for vehicle_class, share in demand.mix.items():
        t = VEHICLE_TYPES[vehicle_class]
        lines.append(
            f'        <vType id="{vehicle_class.value}" vClass="{t.sumo_vclass}" '
            f'length="{t.length_m}" width="{t.width_m}" height="{t.height_m}" '
            f'minGap="{t.min_gap_m}" accel="{t.accel_mps2}" decel="{t.decel_mps2}" '
            f'maxSpeed="{t.max_speed_mps}" sigma="{t.sigma}" '
            f'probability="{share / total_mix:.4f}"/>'
        )
    lines.append("    </vTypeDistribution>")
    shares = sorted(od_shares(demand, reachable).items())
    # SUMO reads routes incrementally and wants them sorted by begin time.
    for hour, relative in enumerate(daily_profile()):
        for (origin, exit_edge), share in shares:
            rate_per_s = demand.peak_veh_per_hour[origin] * share * relative / 3600
            if rate_per_s < 1e-5:
                continue
            flow_id = quoteattr(f"{origin}.{exit_edge}.{hour:02d}")
            lines.append(
                f'    <flow id={flow_id} type="urban_mix" begin="{hour * 3600}" '
                f'end="{(hour + 1) * 3600}" from={quoteattr(origin)} to={quoteattr(exit_edge)} '
                f'period="exp({rate_per_s:.6f})" departLane="best" departSpeed="max"/>'
            )
    lines.append("</routes>")
    return "\n".join(lines) + "\n"
