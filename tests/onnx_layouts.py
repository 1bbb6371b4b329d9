"""Real ONNX graphs with the output layouts of common detector exports, built with the
``onnx`` package, for the detector tests.

Each graph outputs a fixed set of objects whose scores are multiplied by the smallest value
of the input's first channel (over the whole letterboxed image, padding included). So a frame
that is bright in the channel the model expects first yields the objects with scores × 114/255
(the padding's grey), and a frame dark in that channel yields nothing: which frame produced
which detections, the colour order and the pixel scale are all visible in the output.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import TensorProto, helper, numpy_helper

from detectors.layouts import COCO_CLASSES, STRIDES, grid_cells
from detectors.letterbox import Letterbox

PAD_GREY = 114 / 255


@dataclass(frozen=True)
class Obj:
    """An object in frame pixels, with the score the model gives it on a bright frame."""

    xyxy: tuple[float, float, float, float]
    coco_class: str
    score: float


FRAME_HW = (360, 640)
OBJECTS = (
    Obj((100, 150, 180, 200), "car", 0.9),
    Obj((300, 200, 320, 240), "motorcycle", 0.85),
    Obj((10, 10, 200, 120), "bus", 0.7),
    Obj((400, 100, 420, 160), "person", 0.95),  # not a vehicle: ignored
    Obj((500, 100, 600, 200), "truck", 0.3),  # × 114/255 falls under the threshold
)
# A second, weaker box on the car, which non-maximum suppression must remove.
DUPLICATE = Obj((104, 152, 182, 202), "car", 0.8)
EXPECTED = [o for o in OBJECTS if o.coco_class != "person" and o.score * PAD_GREY >= 0.25]
# Layouts with objectness give every object this much, and the score is objectness × class.
OBJECTNESS = 0.95
# A confident class with no objectness, which must come to nothing.
GHOST = Obj((200, 250, 260, 300), "car", 0.99)


def fit(input_hw: tuple[int, int], centred: bool) -> Letterbox:
    scale = min(input_hw[0] / FRAME_HW[0], input_hw[1] / FRAME_HW[1])
    spare_x = input_hw[1] - round(FRAME_HW[1] * scale)
    spare_y = input_hw[0] - round(FRAME_HW[0] * scale)
    return Letterbox(scale, spare_x // 2 if centred else 0, spare_y // 2 if centred else 0)


def to_input(obj: Obj, letterbox: Letterbox) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = obj.xyxy
    s = letterbox.scale
    return (x1 * s + letterbox.pad_x, y1 * s + letterbox.pad_y,
            x2 * s + letterbox.pad_x, y2 * s + letterbox.pad_y)


def _save(path: Path, nodes: list[onnx.NodeProto], initialisers: list[onnx.TensorProto],
          input_shape: Sequence[int | str], output_shape: Sequence[int | str],
          metadata: dict[str, str]) -> Path:
    graph = helper.make_graph(
        nodes, "layout",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, list(input_shape))],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(output_shape))],
        initialisers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _brightness_nodes(pixel_scale: float) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Nodes computing ``brightness`` [B, 1, 1]: the minimum of channel 0, in [0, 1]."""
    initialisers = [
        numpy_helper.from_array(np.array([0], np.int64), "zero"),
        numpy_helper.from_array(np.array([1], np.int64), "one"),
        numpy_helper.from_array(np.array([-1, 1, 1], np.int64), "b11"),
        numpy_helper.from_array(np.array(pixel_scale, np.float32), "pixel_scale"),
    ]
    nodes = [
        helper.make_node("Slice", ["images", "zero", "one", "one"], ["channel0"]),
        helper.make_node("ReduceMin", ["channel0"], ["min4"], axes=[1, 2, 3], keepdims=1),
        helper.make_node("Reshape", ["min4", "b11"], ["min3"]),
        helper.make_node("Mul", ["min3", "pixel_scale"], ["brightness"]),
    ]
    return nodes, initialisers


def scored_output_model(path: Path, base: NDArray[np.float32], score_mask: NDArray[np.bool_], *,
                        input_shape: Sequence[int | str], pixel_scale: float = 1.0,
                        metadata: dict[str, str] | None = None, with_exp: bool = False,
                        output_shape: Sequence[int | str] | None = None) -> Path:
    """A graph whose output is ``base`` [1, R, C] with the ``score_mask`` entries × brightness,
    broadcast over the batch."""
    nodes, initialisers = _brightness_nodes(pixel_scale)
    initialisers += [
        numpy_helper.from_array(base.astype(np.float32), "base"),
        numpy_helper.from_array(score_mask.astype(np.float32), "score_mask"),
        numpy_helper.from_array((~score_mask).astype(np.float32), "other_mask"),
    ]
    nodes += [
        helper.make_node("Mul", ["score_mask", "brightness"], ["scaled_mask"]),
        helper.make_node("Add", ["scaled_mask", "other_mask"], ["scale"]),
    ]
    if with_exp:
        # Decoded YOLOX graphs turn log sizes into sizes with Exp; so does this one (of 0).
        initialisers.append(numpy_helper.from_array(np.zeros(1, np.float32), "nothing"))
        nodes += [helper.make_node("Exp", ["nothing"], ["unit"]),
                  helper.make_node("Mul", ["base", "unit"], ["base_e"])]
    nodes.append(helper.make_node("Mul", ["base_e" if with_exp else "base", "scale"],
                                  ["output0"]))
    batch = input_shape[0]
    shape = output_shape or [batch, base.shape[1], base.shape[2]]
    return _save(path, nodes, initialisers, input_shape, shape, metadata or {})


def coco(name: str) -> int:
    return COCO_CLASSES.index(name)


def ultralytics_names(names: Sequence[str]) -> str:
    return repr(dict(enumerate(names)))


def yolov8(path: Path, input_hw: tuple[int, int] = (320, 320), *, dynamic: bool = True,
           names: Sequence[str] = COCO_CLASSES, class_of: dict[str, str] | None = None) -> Path:
    """Ultralytics YOLOv8/YOLO11: [B, 4+nc, N], metadata names and imgsz."""
    letterbox = fit(input_hw, centred=True)
    anchors = grid_cells(input_hw)
    base = np.zeros((1, 4 + len(names), anchors), np.float32)
    for anchor, obj in zip((5, 17, 900, 1200, 2000, 33), (*OBJECTS, DUPLICATE), strict=True):
        x1, y1, x2, y2 = to_input(obj, letterbox)
        base[0, :4, anchor] = ((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1)
        name = (class_of or {}).get(obj.coco_class, obj.coco_class)
        if name in names:
            base[0, 4 + list(names).index(name), anchor] = obj.score
    mask = np.zeros_like(base, bool)
    mask[0, 4:, :] = True
    shape: list[int | str] = (["batch", 3, "height", "width"] if dynamic
                              else [1, 3, *input_hw])
    return scored_output_model(path, base, mask, input_shape=shape, metadata={
        "names": ultralytics_names(names), "imgsz": str(list(input_hw)), "stride": "32",
        "task": "detect"}, output_shape=["batch", 4 + len(names), "anchors"] if dynamic else None)


def yolov5(path: Path, input_hw: tuple[int, int] = (320, 320), *, decoded_yolox: bool = False
           ) -> Path:
    """YOLOv5 [B, 3·cells, 85] (or decoded YOLOX [B, cells, 85], BGR 0–255, with Exp)."""
    letterbox = fit(input_hw, centred=not decoded_yolox)
    rows = grid_cells(input_hw) * (1 if decoded_yolox else 3)
    base = np.zeros((1, rows, 85), np.float32)
    for row, obj in zip((5, 17, 900, 1200, 2000, 33, 44), (*OBJECTS, DUPLICATE, GHOST),
                        strict=True):
        x1, y1, x2, y2 = to_input(obj, letterbox)
        objectness = 0.02 if obj is GHOST else OBJECTNESS
        base[0, row, :5] = ((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1, objectness)
        base[0, row, 5 + coco(obj.coco_class)] = min(obj.score / objectness, 1.0)
    mask = np.zeros_like(base, bool)
    mask[0, :, 5:] = True
    return scored_output_model(path, base, mask, input_shape=[1, 3, *input_hw],
                               pixel_scale=1 / 255 if decoded_yolox else 1.0,
                               with_exp=decoded_yolox)


def yolox_raw(path: Path, input_hw: tuple[int, int] = (320, 320)) -> Path:
    """YOLOX raw grid outputs [B, cells, 85]: xy offsets in cells, log sizes in strides."""
    letterbox = fit(input_hw, centred=False)
    level_starts, start = {}, 0
    for stride in STRIDES:
        level_starts[stride] = start
        start += (input_hw[0] // stride) * (input_hw[1] // stride)
    base = np.zeros((1, start, 85), np.float32)
    for index, obj in enumerate((*OBJECTS, DUPLICATE, GHOST)):
        x1, y1, x2, y2 = to_input(obj, letterbox)
        cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
        stride = STRIDES[index % 3]
        gx, gy = int(cx // stride), int(cy // stride)
        row = level_starts[stride] + gy * (input_hw[1] // stride) + gx
        objectness = 0.02 if obj is GHOST else OBJECTNESS
        base[0, row, :5] = (cx / stride - gx, cy / stride - gy, np.log(w / stride),
                            np.log(h / stride), objectness)
        base[0, row, 5 + coco(obj.coco_class)] = min(obj.score / objectness, 1.0)
    mask = np.zeros_like(base, bool)
    mask[0, :, 5:] = True
    return scored_output_model(path, base, mask, input_shape=["batch", 3, *input_hw],
                               pixel_scale=1 / 255)


def end_to_end(path: Path, input_hw: tuple[int, int] = (320, 320), rows: int = 300) -> Path:
    """Ultralytics nms=True / YOLO26: [B, 300, 6] x1, y1, x2, y2, score, class; zero-padded."""
    letterbox = fit(input_hw, centred=True)
    base = np.zeros((1, rows, 6), np.float32)
    for row, obj in enumerate(sorted(OBJECTS, key=lambda o: -o.score)):
        base[0, row] = (*to_input(obj, letterbox), obj.score, coco(obj.coco_class))
    mask = np.zeros_like(base, bool)
    mask[0, :, 4] = True
    return scored_output_model(path, base, mask, input_shape=["batch", 3, *input_hw],
                               metadata={"names": ultralytics_names(COCO_CLASSES),
                                         "end2end": "True", "imgsz": str(list(input_hw))})


def yolov7_end_to_end(path: Path, input_hw: tuple[int, int] = (320, 320), batch: int = 2
                      ) -> Path:
    """YOLOv7 --end2end for onnxruntime: [K, 7] batch, x1, y1, x2, y2, class, score."""
    letterbox = fit(input_hw, centred=True)
    rows = [(b, *to_input(obj, letterbox), coco(obj.coco_class), obj.score)
            for b in range(batch) for obj in OBJECTS]
    base = np.array(rows, np.float32)
    nodes, initialisers = _brightness_nodes(1.0)
    initialisers += [
        numpy_helper.from_array(base, "base"),
        numpy_helper.from_array(base[:, 0].astype(np.int64), "row_batch"),
        numpy_helper.from_array(np.array([-1], np.int64), "flat"),
        numpy_helper.from_array(np.array([-1, 1], np.int64), "column"),
        numpy_helper.from_array(np.eye(7, dtype=np.float32)[6], "score_column"),
        numpy_helper.from_array(1 - np.eye(7, dtype=np.float32)[6], "other_columns"),
    ]
    nodes += [
        helper.make_node("Reshape", ["brightness", "flat"], ["per_batch"]),
        helper.make_node("Gather", ["per_batch", "row_batch"], ["per_row"]),
        helper.make_node("Reshape", ["per_row", "column"], ["per_row_column"]),
        helper.make_node("Mul", ["per_row_column", "score_column"], ["scaled"]),
        helper.make_node("Add", ["scaled", "other_columns"], ["scale"]),
        helper.make_node("Mul", ["base", "scale"], ["output0"]),
    ]
    return _save(path, nodes, initialisers, [batch, 3, *input_hw], [len(rows), 7], {})


def two_outputs(path: Path) -> Path:
    """A graph with two outputs (as a TensorRT-NMS YOLOv7 has four): not a known layout."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["images"], ["a"]),
         helper.make_node("Identity", ["images"], ["b"])], "two",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 64, 64])],
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 3, 64, 64]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 3, 64, 64])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def lit_and_dark(rgb_model: bool) -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
    """A frame bright in the model's first input channel, and one dark in it (BGR arrays)."""
    red = np.zeros((*FRAME_HW, 3), np.uint8)
    red[:, :, 2] = 255
    blue = np.zeros((*FRAME_HW, 3), np.uint8)
    blue[:, :, 0] = 255
    return (red, blue) if rgb_model else (blue, red)
