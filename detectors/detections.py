"""Detections of one frame: boxes, confidences and Simpang vehicle classes, as numpy arrays.

>>> import numpy as np
>>> d = Detections(np.array([[10, 20, 50, 60], [0, 0, 5, 5]], np.float32),
...                np.array([0.9, 0.3], np.float32), np.array([1, 0]))
>>> len(d), d.vehicle_classes()
(2, [<VehicleClass.CAR: 'car'>, <VehicleClass.MOTORCYCLE: 'motorcycle'>])
>>> len(d[d.confidence > 0.5])
1
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from simpang.vehicles import VehicleClass

# What a camera detector tells apart; ``class_id`` indexes this tuple.
DETECTED_CLASSES: tuple[VehicleClass, ...] = (
    VehicleClass.MOTORCYCLE,
    VehicleClass.CAR,
    VehicleClass.BUS,
    VehicleClass.TRUCK,
    VehicleClass.BICYCLE,
)


@dataclass(frozen=True)
class Detections:
    """``xyxy`` in pixels of the frame (x1, y1, x2, y2), ``class_id`` into
    :data:`DETECTED_CLASSES`."""

    xyxy: NDArray[np.float32]
    confidence: NDArray[np.float32]
    class_id: NDArray[np.int64]

    def __post_init__(self) -> None:
        object.__setattr__(self, "xyxy", np.asarray(self.xyxy, np.float32).reshape(-1, 4))
        object.__setattr__(self, "confidence", np.asarray(self.confidence, np.float32))
        object.__setattr__(self, "class_id", np.asarray(self.class_id, np.int64))
        if not len(self.xyxy) == len(self.confidence) == len(self.class_id):
            raise ValueError("xyxy, confidence and class_id must have the same length")

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.confidence)

    def __getitem__(self, index: NDArray[np.bool_] | NDArray[np.int64] | slice) -> Detections:
        return Detections(self.xyxy[index], self.confidence[index], self.class_id[index])

    def vehicle_classes(self) -> list[VehicleClass]:
        return [DETECTED_CLASSES[i] for i in self.class_id]


def bottom_centres(xyxy: NDArray[np.float32]) -> NDArray[np.float32]:
    """Where each box meets the road: the middle of its bottom edge, ``[N, 2]``."""
    return np.stack([(xyxy[:, 0] + xyxy[:, 2]) / 2, xyxy[:, 3]], axis=1)
