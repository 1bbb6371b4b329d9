"""The output layouts of common detector exports, how to recognise them, and vectorised
decoding into boxes (input pixels), scores and model class indices.

=================  ========================  ==========================================
layout             output                    exports
=================  ========================  ==========================================
``yolov8``         ``[B, 4+nc, N]``          Ultralytics YOLOv8/YOLO11 (cx, cy, w, h, one
                                             score per class, no objectness); Simpang's
                                             own model
``end2end``        ``[B, K, 6]``             Ultralytics ``nms=True``, YOLO26 (x1, y1, x2,
                                             y2, score, class; zero-padded)
``yolov5``         ``[B, N, 5+nc]``          YOLOv5 (cx, cy, w, h, objectness, classes);
                                             N = 3 anchors × grid cells
``yolox``          ``[B, N, 5+nc]``          YOLOX raw grid outputs (offsets, log sizes,
                                             sigmoided objectness and classes); N = cells
``yolox-decoded``  ``[B, N, 5+nc]``          YOLOX exported with ``--decode_in_inference``
``yolov7-end2end`` ``[K, 7]``                YOLOv7 ``--end2end`` for onnxruntime (batch,
                                             x1, y1, x2, y2, class, score)
=================  ========================  ==========================================
"""

from __future__ import annotations

import ast
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

import cv2
import numpy as np
from numpy.typing import NDArray

from detectors.letterbox import Preprocessing
from simpang.vehicles import VehicleClass

STRIDES = (8, 16, 32)
# Rows of an end-to-end output: an export keeps at most a few hundred.
MAX_END_TO_END_ROWS = 1000

COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich",
    "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote",
    "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book",
    "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)
# Model class names (lower case) that are Simpang vehicle classes; any other class is ignored.
VEHICLE_NAMES: Mapping[str, VehicleClass] = {
    "motorcycle": VehicleClass.MOTORCYCLE, "motorbike": VehicleClass.MOTORCYCLE,
    "car": VehicleClass.CAR, "bus": VehicleClass.BUS, "truck": VehicleClass.TRUCK,
    "bicycle": VehicleClass.BICYCLE,
}


class LayoutError(ValueError):
    """A model whose outputs Simpang cannot read; the message says what was found."""


class OutputLayout(StrEnum):
    YOLOV8 = "yolov8"
    END_TO_END = "end2end"
    YOLOV5 = "yolov5"
    YOLOX = "yolox"
    YOLOX_DECODED = "yolox-decoded"
    YOLOV7_END_TO_END = "yolov7-end2end"

    @property
    def preprocessing(self) -> Preprocessing:
        if self in (OutputLayout.YOLOX, OutputLayout.YOLOX_DECODED):
            return Preprocessing(rgb=False, scale=1.0, centred=False)
        return Preprocessing()

    @property
    def needs_nms(self) -> bool:
        return self not in (OutputLayout.END_TO_END, OutputLayout.YOLOV7_END_TO_END)


Dim = int | str | None


@dataclass(frozen=True)
class ModelFacts:
    """What a model file says about itself: output shapes (symbolic dims as str/None), the
    input's height and width, its metadata and the operator types in its graph."""

    output_shapes: Sequence[Sequence[Dim]]
    input_hw: tuple[int, int]
    metadata: Mapping[str, str]
    op_types: frozenset[str]


def grid_cells(input_hw: tuple[int, int]) -> int:
    """Cells of an anchor-free head over strides 8, 16, 32 (8400 at 640×640)."""
    return sum((input_hw[0] // s) * (input_hw[1] // s) for s in STRIDES)


def detect_layout(facts: ModelFacts) -> OutputLayout:
    """The layout of a model's outputs, from their shapes, its metadata and its graph.

    >>> facts = ModelFacts([[1, 84, 8400]], (640, 640), {}, frozenset())
    >>> detect_layout(facts)
    <OutputLayout.YOLOV8: 'yolov8'>
    >>> detect_layout(ModelFacts([[1, 25200, 85]], (640, 640), {}, frozenset()))
    <OutputLayout.YOLOV5: 'yolov5'>
    """
    declared = facts.metadata.get("simpang_layout")
    if declared:
        return OutputLayout(declared)
    shapes = [list(s) for s in facts.output_shapes]
    described = f"outputs {shapes}"
    if len(shapes) != 1:
        raise LayoutError(f"{described}: expected one output tensor; pass layout= to say "
                          f"which of {', '.join(OutputLayout)} it is")
    shape = shapes[0]
    if len(shape) == 2 and shape[1] == 7:
        return OutputLayout.YOLOV7_END_TO_END
    if len(shape) != 3:
        raise LayoutError(f"{described}: not a known detector layout "
                          f"({', '.join(OutputLayout)})")
    rows, columns = shape[1], shape[2]
    end_to_end = str(facts.metadata.get("end2end", "")).lower() == "true"
    if columns == 6 and (end_to_end or (isinstance(rows, int) and rows <= MAX_END_TO_END_ROWS)):
        return OutputLayout.END_TO_END
    if isinstance(rows, int) and (not isinstance(columns, int) or rows < columns):
        return OutputLayout.YOLOV8
    cells = grid_cells(facts.input_hw)
    if rows == 3 * cells:
        return OutputLayout.YOLOV5
    if rows == cells:
        return OutputLayout.YOLOX_DECODED if "Exp" in facts.op_types else OutputLayout.YOLOX
    raise LayoutError(
        f"{described} for input {facts.input_hw}: [B, N, 5+nc] with N neither 3 × {cells} "
        f"(YOLOv5) nor {cells} (YOLOX); pass layout= to say which it is"
    )


def class_names(metadata: Mapping[str, str], classes_in_output: int | None) -> list[str]:
    """Model class names: Ultralytics' ``names`` metadata (a Python dict literal), else COCO's
    80 when the output has 80 classes.

    >>> class_names({"names": "{0: 'person', 1: 'bicycle'}"}, 2)
    ['person', 'bicycle']
    """
    raw = metadata.get("names")
    if raw:
        try:
            parsed = ast.literal_eval(raw)
        except (ValueError, SyntaxError) as exc:
            raise LayoutError(f"metadata 'names' is not a Python literal: {exc}") from None
        if isinstance(parsed, dict):
            return [str(parsed[k]) for k in sorted(parsed)]
        return [str(name) for name in parsed]
    if classes_in_output in (None, len(COCO_CLASSES)):
        return list(COCO_CLASSES)
    raise LayoutError(
        f"the model has {classes_in_output} classes and no 'names' metadata; pass "
        "class_names= (in the model's class order)"
    )


def vehicle_class_map(names: Sequence[str]) -> dict[int, VehicleClass]:
    """Model class index → Simpang vehicle class, for the classes that are vehicles."""
    mapping = {i: VEHICLE_NAMES[n.strip().lower()] for i, n in enumerate(names)
               if n.strip().lower() in VEHICLE_NAMES}
    if not mapping:
        raise LayoutError(f"none of the model's classes is a vehicle: {list(names)[:10]}…")
    return mapping


@dataclass(frozen=True)
class RawDetections:
    """One frame's decoded boxes in input pixels, before mapping back to the frame."""

    xyxy: NDArray[np.float32]
    score: NDArray[np.float32]
    model_class: NDArray[np.int64]


def _xywh_to_xyxy(boxes: NDArray[np.float32]) -> NDArray[np.float32]:
    half = boxes[..., 2:4] / 2
    return np.concatenate([boxes[..., 0:2] - half, boxes[..., 0:2] + half], axis=-1)


def _yolox_grid(input_hw: tuple[int, int]) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    grids, strides = [], []
    for stride in STRIDES:
        rows, cols = input_hw[0] // stride, input_hw[1] // stride
        ys, xs = np.mgrid[0:rows, 0:cols]
        grids.append(np.stack([xs.ravel(), ys.ravel()], axis=1))
        strides.append(np.full(rows * cols, stride))
    return (np.concatenate(grids).astype(np.float32),
            np.concatenate(strides).astype(np.float32)[:, None])


def _best_class(scores: NDArray[np.float32], columns: NDArray[np.int64]) -> tuple[
        NDArray[np.float32], NDArray[np.int64]]:
    """Per row, the best of the vehicle ``columns``: its score and model class."""
    vehicle_scores = scores[..., columns]
    best = vehicle_scores.argmax(axis=-1)
    return (np.take_along_axis(vehicle_scores, best[..., None], axis=-1)[..., 0],
            columns[best])


def decode(
    layout: OutputLayout,
    output: NDArray[np.float32],
    batch_size: int,
    *,
    input_hw: tuple[int, int],
    vehicle_columns: NDArray[np.int64],
    confidence: float,
    iou: float,
    max_candidates: int = 4000,
) -> list[RawDetections]:
    """Decode one model output into ``batch_size`` frames of vehicle detections."""
    if layout is OutputLayout.YOLOV7_END_TO_END:
        rows = output.reshape(-1, 7)
        frames = []
        for b in range(batch_size):
            mine = rows[(rows[:, 0] == b) & (rows[:, 6] >= confidence)
                        & np.isin(rows[:, 5].astype(np.int64), vehicle_columns)]
            frames.append(RawDetections(mine[:, 1:5].astype(np.float32),
                                        mine[:, 6].astype(np.float32),
                                        mine[:, 5].astype(np.int64)))
        return frames
    if layout is OutputLayout.END_TO_END:
        frames = []
        for b in range(batch_size):
            rows = output[b]
            mine = rows[(rows[:, 4] >= confidence)
                        & np.isin(rows[:, 5].astype(np.int64), vehicle_columns)]
            frames.append(RawDetections(mine[:, :4].astype(np.float32),
                                        mine[:, 4].astype(np.float32),
                                        mine[:, 5].astype(np.int64)))
        return frames
    if layout is OutputLayout.YOLOV8:
        predictions = output[:batch_size].transpose(0, 2, 1)
        boxes = predictions[..., :4]
        score, model_class = _best_class(predictions[..., 4:], vehicle_columns)
    else:
        predictions = output[:batch_size]
        boxes = predictions[..., :4]
        if layout is OutputLayout.YOLOX:
            grid, strides = _yolox_grid(input_hw)
            boxes = np.concatenate([(boxes[..., :2] + grid) * strides,
                                    np.exp(boxes[..., 2:4]) * strides], axis=-1)
        class_score, model_class = _best_class(predictions[..., 5:], vehicle_columns)
        score = predictions[..., 4] * class_score
    frames = []
    for b in range(batch_size):
        keep = np.flatnonzero(score[b] >= confidence)
        if len(keep) > max_candidates:
            keep = keep[np.argsort(-score[b, keep])[:max_candidates]]
        xywh = boxes[b, keep].astype(np.float32)
        picked = nms(xywh, score[b, keep], model_class[b, keep], iou)
        frames.append(RawDetections(_xywh_to_xyxy(xywh[picked]),
                                    score[b, keep][picked].astype(np.float32),
                                    model_class[b, keep][picked].astype(np.int64)))
    return frames


def nms(cxcywh: NDArray[np.float32], scores: NDArray[np.float32],
        classes: NDArray[np.int64], iou: float) -> NDArray[np.int64]:
    """Indices kept by class-aware non-maximum suppression (OpenCV's, in C++)."""
    if len(scores) == 0:
        return np.zeros(0, np.int64)
    top_left = cxcywh.copy()
    top_left[:, :2] -= cxcywh[:, 2:4] / 2
    # cv2's type stubs ask for sequences; it takes numpy arrays without copying to lists.
    kept = cv2.dnn.NMSBoxesBatched(
        top_left, scores.astype(np.float32), classes.astype(np.int32),  # type: ignore[arg-type]
        0.0, iou)
    return np.asarray(kept, np.int64).reshape(-1)
