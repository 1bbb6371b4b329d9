"""Detection accuracy: average precision per class at an IoU threshold (mAP@0.5).

Ground-truth boxes can be marked *ignored* (too small or too hidden to ask a detector for): a
detection matching one counts neither for nor against the model, as KITTI's "don't care" and
COCO's crowd regions do.

>>> import numpy as np
>>> ap = AveragePrecision(iou_threshold=0.5)
>>> ap.add(np.array([[0, 0, 10, 10]], np.float32), np.array([1]),
...        np.array([[0, 0, 10, 10], [50, 50, 60, 60]], np.float32), np.array([0.9, 0.8]),
...        np.array([1, 1]))
>>> ap.per_class()
{1: 1.0}
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from detectors.tracker import box_iou


def average_precision(recall: NDArray[np.float64], precision: NDArray[np.float64]) -> float:
    """Area under the precision–recall curve with precision made monotone (all points).

    >>> import numpy as np
    >>> average_precision(np.array([0.5, 1.0]), np.array([1.0, 0.5]))
    0.75
    """
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[1.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]
    changes = np.flatnonzero(r[1:] != r[:-1])
    return float(np.sum((r[changes + 1] - r[changes]) * p[changes + 1]))


@dataclass
class AveragePrecision:
    """Accumulates frames, then gives AP per class (classes with ground truth only)."""

    iou_threshold: float = 0.5
    _scores: dict[int, list[float]] = field(default_factory=lambda: defaultdict(list))
    _hits: dict[int, list[bool]] = field(default_factory=lambda: defaultdict(list))
    _positives: dict[int, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, gt_xyxy: NDArray[np.float32], gt_class: NDArray[np.int64],
            pred_xyxy: NDArray[np.float32], pred_score: NDArray[np.float32],
            pred_class: NDArray[np.int64], gt_ignored: NDArray[np.bool_] | None = None) -> None:
        """One frame's ground truth and detections (boxes in the same pixels)."""
        ignored = (np.zeros(len(gt_xyxy), bool) if gt_ignored is None
                   else np.asarray(gt_ignored, bool))
        for cls in np.union1d(gt_class, pred_class).tolist():
            gt_index = np.flatnonzero(gt_class == cls)
            pred_index = np.flatnonzero(pred_class == cls)
            pred_index = pred_index[np.argsort(-pred_score[pred_index], kind="stable")]
            self._positives[cls] += int((~ignored[gt_index]).sum())
            iou = box_iou(pred_xyxy[pred_index], gt_xyxy[gt_index])
            taken = np.zeros(len(gt_index), bool)
            for row, pred in enumerate(pred_index):
                candidates = iou[row] if len(gt_index) else np.empty(0)
                # Prefer an unmatched counted box, then an ignored one.
                order = np.argsort(-candidates)
                match = next((int(c) for c in order if candidates[c] >= self.iou_threshold
                              and not taken[c] and not ignored[gt_index[c]]), None)
                if match is None:
                    if any(candidates[c] >= self.iou_threshold and ignored[gt_index[c]]
                           for c in order):
                        continue
                    self._scores[cls].append(float(pred_score[pred]))
                    self._hits[cls].append(False)
                    continue
                taken[match] = True
                self._scores[cls].append(float(pred_score[pred]))
                self._hits[cls].append(True)

    def per_class(self) -> dict[int, float]:
        out = {}
        for cls, positives in sorted(self._positives.items()):
            if positives == 0:
                continue
            scores = np.asarray(self._scores[cls])
            hits = np.asarray(self._hits[cls], bool)[np.argsort(-scores, kind="stable")]
            true_positives = np.cumsum(hits)
            recall = true_positives / positives
            precision = true_positives / np.arange(1, len(hits) + 1)
            out[cls] = round(average_precision(recall, precision), 4)
        return out
