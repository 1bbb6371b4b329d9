"""Vehicle classes and passenger-car-unit (PCU) factors.

Indonesia's road capacity guideline PKJI 2023 (Pedoman Kapasitas Jalan Indonesia), chapter on
signalised intersections (Simpang APILL), gives equivalence factors to a light vehicle
("ekivalen kendaraan ringan", ekr) per vehicle type: KR (light vehicle) 1.0, KB (heavy
vehicle: buses and trucks) 1.3, SM (motorcycle) 0.2 on a protected approach ("terlindung")
and 0.4 on an opposed approach ("terlawan"). These are the values of its table of ekr for
signalised intersections, unchanged from MKJI 1997 table C-3:1. Non-motorised vehicles
(KTB: bicycles, becak) are side friction in PKJI, not flow, hence factor 0.

>>> factors = PcuFactors()
>>> factors.for_class(VehicleClass.MOTORCYCLE, protected=True)
0.2
>>> factors.pcu({VehicleClass.CAR: 10, VehicleClass.MOTORCYCLE: 50})
20.0
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class VehicleClass(StrEnum):
    """Classes Simpang counts. ``unclassified`` is a count from a device that cannot classify."""

    MOTORCYCLE = "motorcycle"
    CAR = "car"
    BUS = "bus"
    TRUCK = "truck"
    BICYCLE = "bicycle"
    UNCLASSIFIED = "unclassified"


class PcuFactors(BaseModel):
    """PCU factor per vehicle class; defaults from PKJI 2023 (see module docstring).

    ``unclassified`` defaults to 1.0 (each detection counted as a light vehicle), which
    overstates PCU flow where motorcycles dominate; a site with a known mix should set it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    motorcycle_protected: float = Field(0.2, ge=0)
    motorcycle_opposed: float = Field(0.4, ge=0)
    car: float = Field(1.0, ge=0)
    bus: float = Field(1.3, ge=0)
    truck: float = Field(1.3, ge=0)
    bicycle: float = Field(0.0, ge=0)
    unclassified: float = Field(1.0, ge=0)

    def for_class(self, vehicle_class: VehicleClass, *, protected: bool = True) -> float:
        if vehicle_class is VehicleClass.MOTORCYCLE:
            return self.motorcycle_protected if protected else self.motorcycle_opposed
        return float(getattr(self, vehicle_class.value))

    def pcu(self, counts: Mapping[VehicleClass, int], *, protected: bool = True) -> float:
        """Passenger-car units of a set of class counts."""
        return float(
            sum(self.for_class(cls, protected=protected) * n for cls, n in counts.items())
        )
