"""The detector's training script end to end on a small rendered set: render, train, export,
load the export with the runtime detector."""

from __future__ import annotations

from pathlib import Path

import onnx
import torch

from detectors.layouts import OutputLayout
from detectors.onnx_detector import OnnxDetector
from models import train


def test_training_renders_trains_exports_and_the_runtime_reads_the_export(
        tmp_path: Path) -> None:
    config = train.TrainConfig(epochs=1, batch_size=8, frames_per_run=16,
                               held_out_frames_per_run=8, input_hw=(160, 288))
    train_dirs, held_out_dirs = train.render_sets(
        tmp_path / "frames", config, [train.Run("t_junction", "07:30", 1, rare_classes=True)],
        [train.Run("t_junction", "17:30", 2)])
    samples = train.load_samples(train_dirs, config.input_hw)
    assert len(samples) == 16 and sum(len(s.boxes) for s in samples) > 0
    assert samples[0].image.shape == (160, 288, 3)

    torch.set_num_threads(1)
    net = train.train(samples, config, log=lambda _: None)
    path = tmp_path / "model.onnx"
    train.export(net, path, config)

    model = onnx.load(str(path))
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert path.stat().st_size < 10 * 1024 * 1024
    detector = OnnxDetector(path, batch_size=4)
    assert detector.layout is OutputLayout.YOLOV8
    assert detector.class_names == train.CLASS_NAMES
    assert detector.input_hw == (160, 288)
    report = train.evaluate(path, held_out_dirs)
    assert report["frames"] == 8 and set(report["map50_per_class"]) <= set(train.CLASS_NAMES)


def test_assignment_gives_every_box_a_cell_and_ignores_hidden_ones() -> None:
    from models.vehicle_net import VehicleNet

    _, _, cells = VehicleNet(5).raw(torch.zeros(1, 3, *train.TrainConfig().input_hw))
    boxes = torch.tensor([[100.0, 50.0, 104.0, 54.0],     # tiny: still gets its nearest cell
                          [10.0, 10.0, 90.0, 120.0],      # large: mostly stride-16 cells
                          [200.0, 100.0, 240.0, 140.0]])  # ignored
    owner, positive, ignore = train.assign(cells, boxes, torch.tensor([False, False, True]))
    assert set(owner[positive].tolist()) == {0, 1}
    # The large box's cells are coarse ones, plus the fine cell nearest its centre that
    # every box gets.
    assert (cells[positive & (owner == 1), 2] == 8).sum() == 1
    assert (cells[positive & (owner == 1), 2] == 16).sum() > 10
    assert ignore.any() and not (ignore & positive).any()
    assert (owner[ignore] == 2).any()
