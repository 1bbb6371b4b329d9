"""Vehicle detection with any supported ONNX export (see :mod:`detectors.layouts`) on
onnxruntime: CUDA when present, else CPU.

Frames go in as OpenCV BGR arrays of any size, in batches; detections come out in each frame's
pixels with Simpang's vehicle classes (a COCO model's other classes are ignored).

Usage::

    detector = OnnxDetector("yolo11n.onnx")          # layout and classes from the model
    per_frame = detector.detect([frame_a, frame_b])  # [Detections, Detections]

The tests build a real graph of every layout (tests/onnx_layouts.py) and run it.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from detectors.detections import DETECTED_CLASSES, Detections
from detectors.layouts import (
    LayoutError,
    ModelFacts,
    OutputLayout,
    class_names,
    decode,
    detect_layout,
    vehicle_class_map,
)
from detectors.letterbox import to_batch

DEFAULT_INPUT_SIZE = 640


def _onnx_op_types(path: Path) -> frozenset[str]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return frozenset(node.op_type for node in model.graph.node)


def _input_hw(shape: Sequence[Any], metadata: dict[str, str],
              override: tuple[int, int] | None) -> tuple[int, int]:
    if override is not None:
        return override
    height, width = shape[2], shape[3]
    if isinstance(height, int) and isinstance(width, int):
        return height, width
    imgsz = metadata.get("imgsz")
    if imgsz:
        parsed = ast.literal_eval(imgsz)
        if isinstance(parsed, int):
            return parsed, parsed
        return int(parsed[0]), int(parsed[1])
    return DEFAULT_INPUT_SIZE, DEFAULT_INPUT_SIZE


class OnnxDetector:
    """One ONNX model, ready to detect.

    ``layout`` overrides what :func:`detectors.layouts.detect_layout` finds; ``class_names``
    overrides the model's metadata (model class order); ``input_hw`` the input size of a
    model whose input is dynamic. ``batch_size`` is how many frames go through one run
    (a model with a fixed batch dimension uses that).
    """

    def __init__(
        self,
        model_path: str | Path,
        *,
        layout: OutputLayout | str | None = None,
        class_names_override: Sequence[str] | None = None,
        confidence: float = 0.25,
        iou: float = 0.5,
        input_hw: tuple[int, int] | None = None,
        batch_size: int = 8,
        threads: int | None = None,
        providers: Sequence[str] | None = None,
    ) -> None:
        import onnxruntime as ort

        self.path = Path(model_path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no model file at {self.path}")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        available = ort.get_available_providers()
        chosen = list(providers) if providers else [
            p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available
        ]
        self.session = ort.InferenceSession(str(self.path), options, providers=chosen)
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise LayoutError(f"{self.path}: expected one image input [B, 3, H, W], found "
                              f"{[(i.name, i.shape) for i in inputs]}")
        self._input = inputs[0]
        self._input_dtype = np.float16 if "float16" in inputs[0].type else np.float32
        self._output_name = self.session.get_outputs()[0].name
        metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.input_hw = _input_hw(inputs[0].shape, metadata, input_hw)
        output_shapes = [o.shape for o in self.session.get_outputs()]
        try:
            self.layout = OutputLayout(layout) if layout else detect_layout(ModelFacts(
                output_shapes, self.input_hw, metadata, _onnx_op_types(self.path)))
        except LayoutError as exc:
            raise LayoutError(f"{self.path}: {exc}") from None
        names = list(class_names_override) if class_names_override else class_names(
            metadata, self._classes_in_output(output_shapes[0]))
        mapping = vehicle_class_map(names)
        self.class_names = names
        self.vehicle_classes = mapping
        self._vehicle_columns = np.array(sorted(mapping), np.int64)
        self._to_detected = np.full(max(len(names), max(mapping) + 1), -1, np.int64)
        for model_class, vehicle_class in mapping.items():
            self._to_detected[model_class] = DETECTED_CLASSES.index(vehicle_class)
        batch_dim = inputs[0].shape[0]
        self.fixed_batch = batch_dim if isinstance(batch_dim, int) else None
        self.batch_size = self.fixed_batch or batch_size
        self.confidence = confidence
        self.iou = iou
        self.providers = self.session.get_providers()

    def _classes_in_output(self, shape: Sequence[Any]) -> int | None:
        if self.layout is OutputLayout.YOLOV8 and isinstance(shape[1], int):
            return shape[1] - 4
        if self.layout in (OutputLayout.YOLOV5, OutputLayout.YOLOX,
                           OutputLayout.YOLOX_DECODED) and isinstance(shape[2], int):
            return shape[2] - 5
        return None

    def detect(self, frames: Sequence[NDArray[np.uint8]]) -> list[Detections]:
        """Detections for each frame (BGR, any size), in order."""
        out: list[Detections] = []
        for start in range(0, len(frames), self.batch_size):
            chunk = frames[start:start + self.batch_size]
            batch, fits = to_batch(chunk, self.input_hw, self.layout.preprocessing)
            if self.fixed_batch and len(chunk) < self.fixed_batch:
                batch = np.concatenate([batch, np.zeros(
                    (self.fixed_batch - len(chunk), *batch.shape[1:]), np.float32)])
            output = self.session.run(
                [self._output_name], {self._input.name: batch.astype(self._input_dtype,
                                                                      copy=False)})[0]
            raws = decode(self.layout, np.asarray(output, np.float32), len(chunk),
                          input_hw=self.input_hw, vehicle_columns=self._vehicle_columns,
                          confidence=self.confidence, iou=self.iou)
            for raw, fit, frame in zip(raws, fits, chunk, strict=True):
                out.append(Detections(fit.to_frame(raw.xyxy, frame.shape), raw.score,
                                      self._to_detected[raw.model_class]))
        return out
