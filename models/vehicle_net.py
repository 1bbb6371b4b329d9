"""The network of Simpang's default vehicle detector (PyTorch; training only).

A small anchor-free detector: a plain convolutional backbone to strides 8, 16 and 32 (the
coarsest sees a whole bus close to the camera), a top-down merge into stride 8, and on each
level a shared-style head predicting, per grid cell, distances
from the cell centre to the box's four sides and one score per class (no objectness), as
Ultralytics' heads do. Exported, it emits the ``yolov8`` layout ``[B, 4 + nc, N]`` (centre x,
centre y, width, height in input pixels, sigmoid scores), so the runtime reads it like any
YOLOv8/YOLO11 export.

>>> import torch
>>> net = VehicleNet(num_classes=5).eval()
>>> net(torch.zeros(2, 3, 192, 320)).shape
torch.Size([2, 9, 1260])
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional

STRIDES = (8, 16, 32)


def _conv(c_in: int, c_out: int, stride: int = 1, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class _Residual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv(channels, channels // 2, kernel=1),
                                  _conv(channels // 2, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class _Head(nn.Module):
    def __init__(self, c_in: int, width: int, num_classes: int) -> None:
        super().__init__()
        self.stem = _conv(c_in, width)
        self.box = nn.Sequential(_conv(width, width), nn.Conv2d(width, 4, 1))
        self.cls = nn.Sequential(_conv(width, width), nn.Conv2d(width, num_classes, 1))
        # Start with rare positives (focal-loss prior) and boxes about two cells wide.
        nn.init.constant_(self.cls[-1].bias, -4.6)  # type: ignore[arg-type]
        nn.init.constant_(self.box[-1].bias, 0.5)  # type: ignore[arg-type]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.stem(x)
        return self.box(x), self.cls(x)


class VehicleNet(nn.Module):
    """``forward`` gives the exported output; :meth:`raw` the training outputs."""

    def __init__(self, num_classes: int,
                 widths: tuple[int, int, int, int, int] = (16, 32, 64, 96, 128)) -> None:
        super().__init__()
        w1, w2, w3, w4, w5 = widths
        self.num_classes = num_classes
        self.stem = nn.Sequential(_conv(3, w1, 2), _conv(w1, w2, 2), _Residual(w2))
        self.stage8 = nn.Sequential(_conv(w2, w3, 2), _Residual(w3), _Residual(w3))
        self.stage16 = nn.Sequential(_conv(w3, w4, 2), _Residual(w4), _Residual(w4))
        self.stage32 = nn.Sequential(_conv(w4, w5, 2), _Residual(w5))
        self.lateral = _conv(w4, w3, kernel=1)
        self.merge8 = _conv(w3, w3)
        self.head8 = _Head(w3, w3, num_classes)
        self.head16 = _Head(w4, w3, num_classes)
        self.head32 = _Head(w5, w3, num_classes)

    def raw(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per cell over both levels: side distances (pixels, ≥ 0) [B, N, 4] as
        left, top, right, bottom; class logits [B, N, nc]; cell centres [N, 2] and strides
        [N] packed as [N, 3] (x, y, stride)."""
        c8 = self.stage8(self.stem(images))
        c16 = self.stage16(c8)
        c32 = self.stage32(c16)
        p8 = self.merge8(c8 + functional.interpolate(self.lateral(c16), size=c8.shape[-2:],
                                                     mode="nearest"))
        distances, logits, cells = [], [], []
        for feature, head, stride in ((p8, self.head8, 8), (c16, self.head16, 16),
                                      (c32, self.head32, 32)):
            box, cls = head(feature)
            _, _, height, width = box.shape
            distances.append(functional.softplus(box).flatten(2) * stride)
            logits.append(cls.flatten(2))
            ys, xs = torch.meshgrid(torch.arange(height, device=box.device),
                                    torch.arange(width, device=box.device), indexing="ij")
            cells.append(torch.stack([(xs.flatten() + 0.5) * stride,
                                      (ys.flatten() + 0.5) * stride,
                                      torch.full((height * width,), float(stride),
                                                 device=box.device)], dim=1))
        return (torch.cat(distances, 2).transpose(1, 2), torch.cat(logits, 2).transpose(1, 2),
                torch.cat(cells, 0))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        distances, logits, cells = self.raw(images)
        centre = cells[None, :, :2]
        top_left = centre - distances[..., :2]
        bottom_right = centre + distances[..., 2:]
        box = torch.cat([(top_left + bottom_right) / 2, bottom_right - top_left], dim=2)
        return torch.cat([box, logits.sigmoid()], dim=2).transpose(1, 2)
