"""Fitting frames into a detector's input: resize keeping the aspect ratio, pad, and map the
boxes back.

Exports differ in what they expect: Ultralytics and YOLOv5/v7 take RGB scaled to [0, 1] and
padded on both sides; YOLOX takes BGR in [0, 255] padded at the bottom and right only.

>>> import numpy as np
>>> frame = np.zeros((360, 640, 3), np.uint8)
>>> batch, fits = to_batch([frame], (320, 320), Preprocessing())
>>> batch.shape, fits[0]
((1, 3, 320, 320), Letterbox(scale=0.5, pad_x=0.0, pad_y=70.0))
>>> fits[0].to_frame(np.array([[0, 70, 320, 250]], np.float32), frame.shape).tolist()
[[0.0, 0.0, 640.0, 360.0]]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class Preprocessing:
    """``rgb``: swap OpenCV's BGR; ``scale``: multiply pixels by it; ``centred``: pad on both
    sides (else only bottom/right)."""

    rgb: bool = True
    scale: float = 1.0 / 255.0
    centred: bool = True
    pad_value: int = 114


@dataclass(frozen=True)
class Letterbox:
    """How one frame went into the input: scaled by ``scale``, then shifted by the padding."""

    scale: float
    pad_x: float
    pad_y: float

    def to_frame(self, xyxy: NDArray[np.float32], frame_shape: Sequence[int]) -> NDArray[
            np.float32]:
        """Boxes in input pixels → boxes in frame pixels, clipped to the frame."""
        out = xyxy.astype(np.float32, copy=True)
        out[:, [0, 2]] = (out[:, [0, 2]] - self.pad_x) / self.scale
        out[:, [1, 3]] = (out[:, [1, 3]] - self.pad_y) / self.scale
        height, width = frame_shape[:2]
        np.clip(out[:, [0, 2]], 0, width, out=out[:, [0, 2]])
        np.clip(out[:, [1, 3]], 0, height, out=out[:, [1, 3]])
        return out


def letterbox(frame: NDArray[np.uint8], input_hw: tuple[int, int],
              prep: Preprocessing) -> tuple[NDArray[np.uint8], Letterbox]:
    """``frame`` (BGR, H×W×3) fitted into ``input_hw``, still H×W×3 uint8."""
    input_h, input_w = input_hw
    height, width = frame.shape[:2]
    scale = min(input_h / height, input_w / width)
    new_w, new_h = round(width * scale), round(height * scale)
    resized = frame if (new_w, new_h) == (width, height) else cv2.resize(
        frame, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    spare_x, spare_y = input_w - new_w, input_h - new_h
    left, top = (spare_x // 2, spare_y // 2) if prep.centred else (0, 0)
    padded = cv2.copyMakeBorder(resized, top, spare_y - top, left, spare_x - left,
                                cv2.BORDER_CONSTANT, value=(prep.pad_value,) * 3)
    return np.asarray(padded, np.uint8), Letterbox(scale, float(left), float(top))


def to_batch(frames: Sequence[NDArray[np.uint8]], input_hw: tuple[int, int],
             prep: Preprocessing) -> tuple[NDArray[np.float32], list[Letterbox]]:
    """Frames → an N×3×H×W float32 batch and how each was fitted."""
    batch = np.empty((len(frames), 3, *input_hw), np.float32)
    fits = []
    for index, frame in enumerate(frames):
        padded, fit = letterbox(frame, input_hw, prep)
        channels = padded[:, :, ::-1] if prep.rgb else padded
        np.multiply(channels.transpose(2, 0, 1), prep.scale, out=batch[index], casting="unsafe")
        fits.append(fit)
    return batch, fits
