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


_LARGE = np.array([c in (VehicleClass.CAR, VehicleClass.BUS, VehicleClass.TRUCK)
                   for c in DETECTED_CLASSES])


def deduplicate(detections: Detections, same_iou: float = 0.6, inside: float = 0.8
                ) -> Detections:
    """One box per vehicle, before tracking.

    Drops a box overlapping a more confident one by ``same_iou`` or more whatever their
    classes (class-aware NMS keeps a bus also found as a truck), and a car, bus or truck box
    lying ``inside`` or more within a car, bus or truck box at least 1.5 times its area (a
    detector often finds a bus's front or a truck's cab besides the whole vehicle).
    Motorcycles and bicycles are never dropped as parts: they really do ride in front of
    buses.

    >>> import numpy as np
    >>> d = Detections(np.array([[0, 0, 100, 60], [5, 10, 45, 55], [50, 30, 60, 58],
    ...                          [2, 1, 100, 62]]),
    ...                np.array([0.9, 0.6, 0.8, 0.5]), np.array([2, 1, 0, 3]))
    >>> deduplicate(d).class_id.tolist()
    [2, 0]
    """
    if len(detections) < 2:
        return detections
    boxes = detections.xyxy.astype(np.float64)
    area = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
    top_left = np.maximum(boxes[:, None, :2], boxes[None, :, :2])
    bottom_right = np.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    overlap = np.prod(np.clip(bottom_right - top_left, 0, None), axis=2)
    iou = overlap / np.maximum(area[:, None] + area[None, :] - overlap, 1e-9)
    confidence = detections.confidence
    more_confident = (confidence[None, :] > confidence[:, None]) | (
        (confidence[None, :] == confidence[:, None])
        & (np.arange(len(boxes))[None, :] < np.arange(len(boxes))[:, None]))
    large = _LARGE[detections.class_id]
    # [i, j]: box i is box j again, or a part of it.
    duplicate = (iou >= same_iou) & more_confident
    part = ((overlap >= inside * area[:, None]) & (area[None, :] >= 1.5 * area[:, None])
            & large[:, None] & large[None, :])
    return detections[~(duplicate | part).any(axis=1)]
