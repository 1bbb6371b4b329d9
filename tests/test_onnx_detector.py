"""The ONNX detector on real ONNX graphs of each supported export layout (built in
tests/onnx_layouts.py), run by onnxruntime."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from detectors.detections import DETECTED_CLASSES, Detections
from detectors.layouts import LayoutError, OutputLayout
from detectors.onnx_detector import OnnxDetector
from simpang.vehicles import VehicleClass
from tests import onnx_layouts as layouts

SIMPANG_NAMES = [c.value for c in DETECTED_CLASSES]


def assert_expected(detections: Detections, expected: list[layouts.Obj]) -> None:
    order = np.argsort(-detections.confidence)
    want = sorted(expected, key=lambda o: -o.score)
    assert len(detections) == len(want), (detections, want)
    for index, obj in zip(order, want, strict=True):
        np.testing.assert_allclose(detections.xyxy[index], obj.xyxy, atol=0.01)
        assert detections.confidence[index] == pytest.approx(obj.score * layouts.PAD_GREY,
                                                             abs=1e-4)
        assert DETECTED_CLASSES[detections.class_id[index]] == VehicleClass(obj.coco_class)


CASES: list[tuple[Callable[[Path], Path], OutputLayout, bool]] = [
    (layouts.yolov8, OutputLayout.YOLOV8, True),
    (lambda p: layouts.yolov8(p, dynamic=False), OutputLayout.YOLOV8, True),
    (layouts.end_to_end, OutputLayout.END_TO_END, True),
    (layouts.yolov5, OutputLayout.YOLOV5, True),
    (layouts.yolox_raw, OutputLayout.YOLOX, False),
    (lambda p: layouts.yolov5(p, decoded_yolox=True), OutputLayout.YOLOX_DECODED, False),
    (layouts.yolov7_end_to_end, OutputLayout.YOLOV7_END_TO_END, True),
]


@pytest.mark.parametrize(("build", "layout", "rgb"), CASES,
                         ids=["yolov8", "yolov8-static", "end2end", "yolov5", "yolox",
                              "yolox-decoded", "yolov7-end2end"])
def test_each_export_layout_is_recognised_and_decoded(
    tmp_path: Path, build: Callable[[Path], Path], layout: OutputLayout, rgb: bool
) -> None:
    detector = OnnxDetector(build(tmp_path / "model.onnx"))
    assert detector.layout is layout
    assert detector.input_hw == (320, 320)
    lit, dark = layouts.lit_and_dark(rgb)
    # Frames in an order that shows any mix-up between the frames of a batch.
    results = detector.detect([lit, dark, dark, lit])
    assert len(results) == 4
    assert_expected(results[0], layouts.EXPECTED)
    assert_expected(results[3], layouts.EXPECTED)
    assert len(results[1]) == len(results[2]) == 0


def test_batches_larger_than_the_model_batch_and_uneven_tails(tmp_path: Path) -> None:
    dynamic = OnnxDetector(layouts.yolov8(tmp_path / "d.onnx"), batch_size=2)
    lit, dark = layouts.lit_and_dark(True)
    frames = [lit, dark, dark, lit, lit]
    results = dynamic.detect(frames)
    assert [len(r) for r in results] == [3, 0, 0, 3, 3]
    fixed = OnnxDetector(layouts.yolov7_end_to_end(tmp_path / "f.onnx", batch=2))
    assert fixed.fixed_batch == 2
    results = fixed.detect(frames)  # 2 + 2 + 1 (padded with a blank frame)
    assert [len(r) for r in results] == [3, 0, 0, 3, 3]


def test_frames_of_any_size_map_back_to_their_own_pixels(tmp_path: Path) -> None:
    detector = OnnxDetector(layouts.yolov8(tmp_path / "m.onnx"))
    lit, _ = layouts.lit_and_dark(True)
    doubled = np.repeat(np.repeat(lit, 2, axis=0), 2, axis=1)  # same scene at 1280×720
    big = detector.detect([doubled])[0]
    small = detector.detect([lit])[0]
    np.testing.assert_allclose(np.sort(big.xyxy, axis=0), 2 * np.sort(small.xyxy, axis=0),
                               atol=0.05)


def test_confidence_and_non_maximum_suppression_settings(tmp_path: Path) -> None:
    path = layouts.yolov8(tmp_path / "m.onnx")
    lit, _ = layouts.lit_and_dark(True)
    strict = OnnxDetector(path, confidence=0.35).detect([lit])[0]
    assert len(strict) == 2  # the bus (0.31) is under 0.35
    # With suppression off (IoU threshold 1), the duplicate box on the car survives.
    loose = OnnxDetector(path, iou=1.0).detect([lit])[0]
    assert len(loose) == len(layouts.EXPECTED) + 1


def test_own_class_names_and_an_explicit_layout(tmp_path: Path) -> None:
    path = layouts.yolov8(tmp_path / "own.onnx", names=SIMPANG_NAMES)
    detector = OnnxDetector(path)
    assert detector.class_names == SIMPANG_NAMES
    lit, _ = layouts.lit_and_dark(True)
    assert_expected(detector.detect([lit])[0], layouts.EXPECTED)
    # The layout can be forced: read as end-to-end, the same graph's output is nonsense, and
    # the override is what was used.
    forced = OnnxDetector(path, layout="end2end")
    assert forced.layout is OutputLayout.END_TO_END


def test_class_names_override_maps_other_vocabularies(tmp_path: Path) -> None:
    names = ["pedestrian", "motorbike", "car", "bus", "lorry"]
    path = layouts.yolov8(tmp_path / "other.onnx", names=names,
                          class_of={"motorcycle": "motorbike", "truck": "lorry",
                                    "person": "pedestrian"})
    detector = OnnxDetector(path)
    assert detector.vehicle_classes == {1: VehicleClass.MOTORCYCLE, 2: VehicleClass.CAR,
                                        3: VehicleClass.BUS}
    lit, _ = layouts.lit_and_dark(True)
    assert_expected(detector.detect([lit])[0], layouts.EXPECTED)
    relabelled = OnnxDetector(path, class_names_override=["car", "bus", "x", "y", "truck"])
    assert relabelled.vehicle_classes == {0: VehicleClass.CAR, 1: VehicleClass.BUS,
                                          4: VehicleClass.TRUCK}


def test_unknown_layouts_and_unusable_models_get_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(LayoutError, match="expected one output tensor; pass layout="):
        OnnxDetector(layouts.two_outputs(tmp_path / "two.onnx"))
    with pytest.raises(LayoutError, match=r"neither 3 × 2310 \(YOLOv5\) nor 2310 \(YOLOX\)"):
        OnnxDetector(layouts.yolov5(tmp_path / "v5.onnx"), input_hw=(320, 352))
    with pytest.raises(LayoutError, match="none of the model's classes is a vehicle"):
        OnnxDetector(layouts.yolov8(tmp_path / "animals.onnx", names=["cat", "dog"]))
    with pytest.raises(FileNotFoundError):
        OnnxDetector(tmp_path / "missing.onnx")
