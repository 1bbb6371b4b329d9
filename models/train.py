"""Train Simpang's default vehicle detector on frames rendered by the simulator, export it to
ONNX and measure it on a held-out rendered set. One command, seeded::

    pip install -e '.[train]'        # PyTorch, CPU build is enough
    python -m models.train           # writes models/simpang-vehicles.onnx and its report

Training frames come from every bundled scenario at several times of day, every camera at a
random pose near its own (:func:`simulator.render.vary_camera_poses`), under random lighting,
rain, noise, blur and JPEG quality; a quarter of the runs carry ten times the usual share of
buses and bicycles (:data:`RARE_CLASS_MIX`). The held-out frames use other simulation seeds
and the cameras' own poses. Both are rendered once into ``--work-dir`` and reused.

Targets: each vehicle box whose visibility is at least 0.3 and whose height is at least
:data:`MIN_BOX_HEIGHT_PX` in the network input; smaller or more hidden boxes are *ignored*
(no loss either way), as they are when :mod:`detectors.evaluation` scores the model.

Loss: cells whose centre lies in a box's central region (2.5 cells around its centre) on the
level its size suits are positives, and so is the stride-8 cell nearest every box's centre
(so a tiny box has one; the smallest box wins a shared cell); class scores learn the IoU of
the cell's predicted box (quality focal loss), boxes learn by GIoU.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from detectors.detections import DETECTED_CLASSES
from detectors.letterbox import Preprocessing, letterbox
from simpang.vehicles import VehicleClass

MIN_BOX_HEIGHT_PX = 6.0
MIN_VISIBILITY = 0.3
CLASS_NAMES = [c.value for c in DETECTED_CLASSES]


@dataclass(frozen=True)
class Run:
    """One simulation rendered for training or evaluation; ``rare_classes`` runs it with
    :data:`RARE_CLASS_MIX` instead of the scenario's own vehicle mix."""

    scenario: str
    begin: str
    seed: int
    rare_classes: bool = False


RARE_CLASS_MIX = {VehicleClass.MOTORCYCLE: 0.40, VehicleClass.CAR: 0.20, VehicleClass.BUS: 0.12,
                  VehicleClass.TRUCK: 0.08, VehicleClass.BICYCLE: 0.20}
"""Buses and bicycles are 2 % of the urban mix each, too few to learn them apart from trucks
and motorcycles; a quarter of the training runs see them ten times as often."""

_SCENES = [("four_arm", "07:15"), ("four_arm", "12:30"), ("four_arm", "17:20"),
           ("four_arm", "20:00"), ("t_junction", "07:20"), ("t_junction", "17:10"),
           ("corridor", "07:15"), ("corridor", "17:30")]
TRAIN_RUNS = ([Run(scenario, begin, seed)
               for seed, (scenario, begin) in enumerate(_SCENES * 3, start=100)]
              + [Run(scenario, begin, seed, rare_classes=True)
                 for seed, (scenario, begin) in enumerate(_SCENES, start=124)])
HELD_OUT_RUNS = [Run("four_arm", "08:00", 9001), Run("four_arm", "18:10", 9002),
                 Run("t_junction", "16:40", 9003), Run("corridor", "21:00", 9004)]


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    epochs: int = 32
    # Network input (height, width), multiples of 32; the exported model keeps it.
    input_hw: tuple[int, int] = (256, 448)
    batch_size: int = 16
    learning_rate: float = 2e-3
    weight_decay: float = 5e-4
    frames_per_run: int = 250
    held_out_frames_per_run: int = 150
    frame_interval_s: float = 2.0


@dataclass
class Sample:
    image: np.ndarray  # letterboxed RGB, H×W×3 uint8
    boxes: np.ndarray  # [M, 4] input pixels
    classes: np.ndarray  # [M]
    ignored: np.ndarray  # [M] bool


def render_sets(work_dir: Path, config: TrainConfig, train_runs: list[Run] | None = None,
                held_out_runs: list[Run] | None = None) -> tuple[list[Path], list[Path]]:
    """Render (once) the training and held-out frames; their directories."""
    from simpang.settings import Settings
    from simulator.render import render_dataset
    from simulator.simulate import parse_time_of_day, resolve_scenario

    cache = Settings().data_dir / "scenarios"

    def render(name: str, run: Run, seed: int, frames: int, vary_poses: bool) -> Path:
        out = work_dir / name
        if (out / "annotations.jsonl").exists():
            return out
        resolved = resolve_scenario(run.scenario, cache,
                                    RARE_CLASS_MIX if run.rare_classes else None)
        render_dataset(resolved, out, frames=frames, work_dir=work_dir / "sumo" / name,
                       begin_s=parse_time_of_day(run.begin), seed=seed,
                       frame_interval_s=config.frame_interval_s, vary_poses=vary_poses)
        return out

    train = [render(f"train-{'rare-' if run.rare_classes else ''}{run.seed}", run,
                    run.seed + config.seed, config.frames_per_run, True)
             for run in (TRAIN_RUNS if train_runs is None else train_runs)]
    held_out = [render(f"held-out-{run.seed}", run, run.seed, config.held_out_frames_per_run,
                       False)
                for run in (HELD_OUT_RUNS if held_out_runs is None else held_out_runs)]
    return train, held_out


def load_samples(directories: list[Path], input_hw: tuple[int, int]) -> list[Sample]:
    """Letterboxed frames and their targets in input pixels."""
    import cv2

    index = {name: i for i, name in enumerate(CLASS_NAMES)}
    samples = []
    for directory in directories:
        for line in (directory / "annotations.jsonl").read_text().splitlines():
            record = json.loads(line)
            frame = cv2.imread(str(directory / record["image"]))
            padded, fit = letterbox(frame, input_hw, Preprocessing())
            boxes = np.array([b["box_xyxy"] for b in record["boxes"]], np.float32).reshape(-1, 4)
            boxes[:, [0, 2]] = boxes[:, [0, 2]] * fit.scale + fit.pad_x
            boxes[:, [1, 3]] = boxes[:, [1, 3]] * fit.scale + fit.pad_y
            visibility = np.array([b["visibility"] for b in record["boxes"]], np.float32)
            ignored = (visibility < MIN_VISIBILITY) | (boxes[:, 3] - boxes[:, 1]
                                                        < MIN_BOX_HEIGHT_PX)
            samples.append(Sample(
                np.ascontiguousarray(padded[:, :, ::-1]), boxes,
                np.array([index[b["class"]] for b in record["boxes"]], np.int64), ignored))
    return samples


def assign(cells: Any, boxes: Any, ignored: Any) -> tuple[Any, Any, Any]:
    """For one image: each cell's box index (−1: none), positive and ignore masks."""
    import torch

    n_cells = cells.shape[0]
    if len(boxes) == 0:
        none = torch.zeros(n_cells, dtype=torch.bool)
        return torch.full((n_cells,), -1), none, none
    cx, cy, stride = cells[:, 0], cells[:, 1], cells[:, 2]
    x1, y1, x2, y2 = (boxes[:, i:i + 1] for i in range(4))
    inside = (cx > x1) & (cx < x2) & (cy > y1) & (cy < y2)
    centre_x, centre_y = (x1 + x2) / 2, (y1 + y2) / 2
    near = ((cx - centre_x).abs() < 2.5 * stride) & ((cy - centre_y).abs() < 2.5 * stride)
    longest = torch.maximum(x2 - x1, y2 - y1)
    suits = (((stride == 8) & (longest <= 80)) | ((stride == 16) & (longest >= 40)
                                                 & (longest <= 160))
             | ((stride == 32) & (longest >= 100)))
    candidate = inside & near & suits
    fine = torch.nonzero(stride == 8).squeeze(1)
    distance = (cx[fine] - centre_x) ** 2 + (cy[fine] - centre_y) ** 2
    candidate[torch.arange(len(boxes)), fine[distance.argmin(dim=1)]] = True
    area = ((x2 - x1) * (y2 - y1)).expand_as(candidate)
    cost = torch.where(candidate, area, torch.full_like(area, math.inf))
    best_cost, owner = cost.min(dim=0)
    assigned = torch.isfinite(best_cost)
    owner = torch.where(assigned, owner, torch.full_like(owner, -1))
    owner_ignored = assigned & ignored[owner.clamp(min=0)]
    in_ignored = (inside & ignored[:, None]).any(dim=0)
    positive = assigned & ~owner_ignored
    return owner, positive, (owner_ignored | in_ignored) & ~positive


def giou(a: Any, b: Any) -> Any:
    import torch

    top_left = torch.maximum(a[:, :2], b[:, :2])
    bottom_right = torch.minimum(a[:, 2:], b[:, 2:])
    overlap = (bottom_right - top_left).clamp(min=0).prod(dim=1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(dim=1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(dim=1)
    union = area_a + area_b - overlap + 1e-7
    iou = overlap / union
    hull = (torch.maximum(a[:, 2:], b[:, 2:]) - torch.minimum(a[:, :2], b[:, :2])).prod(dim=1)
    return iou - (hull - union) / (hull + 1e-7), iou


def detection_loss(distances: Any, logits: Any, cells: Any,
                   targets: list[Sample]) -> tuple[Any, dict[str, float]]:
    import torch
    from torch.nn import functional

    cls_target = torch.zeros_like(logits)
    weight = torch.ones_like(logits)
    box_losses = []
    positives = 0
    for image, sample in enumerate(targets):
        boxes = torch.from_numpy(sample.boxes)
        owner, positive, ignore = assign(cells, boxes, torch.from_numpy(sample.ignored))
        weight[image, ignore] = 0.0
        if not positive.any():
            continue
        centre = cells[positive, :2]
        d = distances[image, positive]
        predicted = torch.cat([centre - d[:, :2], centre + d[:, 2:]], dim=1)
        target_boxes = boxes[owner[positive]]
        g, iou = giou(predicted, target_boxes)
        box_losses.append((1 - g).sum())
        classes = torch.from_numpy(sample.classes)[owner[positive]]
        rows = torch.nonzero(positive).squeeze(1)
        cls_target[image, rows, classes] = iou.detach().clamp(min=0.1)
        positives += int(positive.sum())
    scores = logits.sigmoid()
    quality_focal = functional.binary_cross_entropy_with_logits(
        logits, cls_target, reduction="none") * (scores - cls_target).abs().pow(2.0)
    normaliser = max(positives, 1)
    cls_loss = (quality_focal * weight).sum() / normaliser
    box_loss = torch.stack(box_losses).sum() / normaliser if box_losses else logits.sum() * 0
    total = cls_loss + 2.0 * box_loss
    return total, {"cls": cls_loss.item(), "box": box_loss.item()}


def train(samples: list[Sample], config: TrainConfig, log: Any = print) -> Any:
    import torch

    from models.vehicle_net import VehicleNet

    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    net = VehicleNet(len(CLASS_NAMES))
    optimiser = torch.optim.AdamW(net.parameters(), lr=config.learning_rate,
                                  weight_decay=config.weight_decay)
    steps_per_epoch = len(samples) // config.batch_size
    total_steps = steps_per_epoch * config.epochs
    warmup = min(300, total_steps // 10)

    def learning_rate(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(total_steps - warmup, 1)
        return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * progress))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, learning_rate)
    step = 0
    started = time.monotonic()
    # Frames with a bus, truck or bicycle (a few per cent of vehicles) come up three times as
    # often, so the rare classes are learnt too.
    rare = {CLASS_NAMES.index(name) for name in ("bus", "truck", "bicycle")}
    weights = np.array([3.0 if rare & set(s.classes[~s.ignored].tolist()) else 1.0
                        for s in samples])
    for epoch in range(config.epochs):
        net.train()
        order = rng.choice(len(samples), size=len(samples), p=weights / weights.sum())
        sums = {"cls": 0.0, "box": 0.0}
        for batch_start in range(0, steps_per_epoch * config.batch_size, config.batch_size):
            batch = [augment(samples[i], rng) for i in
                     order[batch_start:batch_start + config.batch_size]]
            images = torch.from_numpy(np.stack([s.image for s in batch])).permute(0, 3, 1, 2)
            images = images.float() / 255.0
            distances, logits, cells = net.raw(images)
            loss, parts = detection_loss(distances, logits, cells, batch)
            optimiser.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 10.0)
            optimiser.step()
            schedule.step()
            step += 1
            for key in sums:
                sums[key] += parts[key]
        log(f"epoch {epoch + 1}/{config.epochs}: cls {sums['cls'] / steps_per_epoch:.4f} "
            f"box {sums['box'] / steps_per_epoch:.4f} "
            f"({time.monotonic() - started:.0f} s)")
    return net.eval()


def augment(sample: Sample, rng: np.random.Generator) -> Sample:
    """Mirror half the frames; jitter brightness and contrast."""
    image, boxes = sample.image, sample.boxes
    if rng.random() < 0.5:
        image = image[:, ::-1]
        boxes = boxes.copy()
        boxes[:, [0, 2]] = image.shape[1] - sample.boxes[:, [2, 0]]
    contrast = rng.uniform(0.7, 1.3)
    brightness = rng.uniform(-25, 25)
    image = np.clip(image.astype(np.float32) * contrast + brightness, 0, 255).astype(np.uint8)
    return Sample(np.ascontiguousarray(image), boxes, sample.classes, sample.ignored)


def export(net: Any, path: Path, config: TrainConfig) -> None:
    """ONNX, opset 17, dynamic batch; metadata as an Ultralytics export has it (``names``,
    ``imgsz``) plus Simpang's layout name and training facts."""
    import onnx
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(net, torch.zeros(1, 3, *config.input_hw), str(path), opset_version=17,
                      input_names=["images"], output_names=["output0"],
                      dynamic_axes={"images": {0: "batch"}, "output0": {0: "batch"}},
                      dynamo=False)
    model = onnx.load(str(path))
    metadata = {
        "description": "Simpang default vehicle detector, trained on simulator renders",
        "names": repr(dict(enumerate(CLASS_NAMES))),
        "imgsz": repr(list(config.input_hw)),
        "stride": "16",
        "simpang_layout": "yolov8",
        "training": json.dumps(asdict(config)),
    }
    del model.metadata_props[:]
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def evaluate(path: Path, directories: list[Path]) -> dict[str, Any]:
    """mAP@0.5 per class of the exported model on rendered frames (their own pixels)."""
    import cv2

    from detectors.evaluation import AveragePrecision
    from detectors.onnx_detector import OnnxDetector

    detector = OnnxDetector(path, confidence=0.01)
    index = {name: i for i, name in enumerate(CLASS_NAMES)}
    scale = min(detector.input_hw[0] / 360, detector.input_hw[1] / 640)
    ap = AveragePrecision(0.5)
    frames = 0
    for directory in directories:
        for line in (directory / "annotations.jsonl").read_text().splitlines():
            record = json.loads(line)
            frame = cv2.imread(str(directory / record["image"]))
            found = detector.detect([frame])[0]
            boxes = np.array([b["box_xyxy"] for b in record["boxes"]], np.float32).reshape(-1, 4)
            visibility = np.array([b["visibility"] for b in record["boxes"]])
            ignored = (visibility < MIN_VISIBILITY) | (
                (boxes[:, 3] - boxes[:, 1]) * scale < MIN_BOX_HEIGHT_PX)
            ap.add(boxes, np.array([index[b["class"]] for b in record["boxes"]], np.int64),
                   found.xyxy, found.confidence, found.class_id, ignored)
            frames += 1
    per_class = {CLASS_NAMES[c]: value for c, value in ap.per_class().items()}
    return {"frames": frames, "map50_per_class": per_class,
            "map50": round(float(np.mean(list(per_class.values()))), 4)}


def main(
    out: Annotated[Path, typer.Option(help="Where to write the ONNX model.")] = Path(
        "models/simpang-vehicles.onnx"),
    work_dir: Annotated[Path, typer.Option(help="Rendered frames (reused when present).")
                        ] = Path("build/detector-training"),
    seed: Annotated[int, typer.Option(help="Seed of weights, order and augmentation.")] = 0,
    epochs: Annotated[int, typer.Option(help="Passes over the training frames.")
                      ] = TrainConfig.epochs,
    input_height: Annotated[int, typer.Option(help="Network input height, multiple of 32.")
                            ] = TrainConfig.input_hw[0],
    input_width: Annotated[int, typer.Option(help="Network input width, multiple of 32.")
                           ] = TrainConfig.input_hw[1],
) -> None:
    """Render, train, export, evaluate; the report goes next to the model as JSON."""
    import torch

    torch.set_num_threads(max(1, torch.get_num_threads()))
    config = TrainConfig(seed=seed, epochs=epochs, input_hw=(input_height, input_width))
    started = time.monotonic()
    train_dirs, held_out_dirs = render_sets(work_dir, config)
    samples = load_samples(train_dirs, config.input_hw)
    typer.echo(f"{len(samples)} training frames, "
               f"{sum(int((~s.ignored).sum()) for s in samples)} boxes "
               f"({time.monotonic() - started:.0f} s)")
    net = train(samples, config, log=typer.echo)
    export(net, out, config)
    report = {"model": out.name, "size_bytes": out.stat().st_size, "input_hw": config.input_hw,
              "training_frames": len(samples), "config": asdict(config),
              "held_out": evaluate(out, held_out_dirs),
              "train_seconds": round(time.monotonic() - started)}
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    typer.echo(json.dumps(report["held_out"]))


if __name__ == "__main__":
    typer.run(main)
