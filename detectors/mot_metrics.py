"""Tracking accuracy against ground truth: CLEAR MOT's MOTA (Bernardin & Stiefelhagen 2008)
and the identity F1 score IDF1 (Ristani et al. 2016), as the MOTChallenge computes them.

Own code because py-motmetrics 1.4 calls ``np.asfarray``, removed in NumPy 2.

>>> import numpy as np
>>> acc = MotAccumulator()
>>> box = np.array([[0.0, 0.0, 10.0, 10.0]])
>>> for frame in range(4):  # the tracker switches ids half-way
...     acc.update(np.array([1]), box, np.array([7 if frame < 2 else 8]), box)
>>> summary = acc.summary()
>>> summary.id_switches, summary.mota, summary.idf1
(1, 0.75, 0.5)
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import linear_sum_assignment

from detectors.tracker import box_iou


@dataclass(frozen=True)
class MotSummary:
    frames: int
    ground_truth: int
    predictions: int
    matches: int
    misses: int
    false_positives: int
    id_switches: int
    mota: float
    idf1: float


@dataclass
class MotAccumulator:
    """Feed it every frame's ground truth and tracker output; read :meth:`summary`."""

    min_iou: float = 0.5
    frames: int = 0
    ground_truth: int = 0
    predictions: int = 0
    matches: int = 0
    id_switches: int = 0
    _last_match: dict[int, int] = field(default_factory=dict)
    _co_occurrence: dict[tuple[int, int], int] = field(
        default_factory=lambda: defaultdict(int))
    _gt_frames: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    _pred_frames: dict[int, int] = field(default_factory=lambda: defaultdict(int))

    def update(self, gt_ids: NDArray[np.int64], gt_xyxy: NDArray[np.floating],
               pred_ids: NDArray[np.int64], pred_xyxy: NDArray[np.floating]) -> None:
        self.frames += 1
        self.ground_truth += len(gt_ids)
        self.predictions += len(pred_ids)
        for gt in gt_ids.tolist():
            self._gt_frames[gt] += 1
        for pred in pred_ids.tolist():
            self._pred_frames[pred] += 1
        if not len(gt_ids) or not len(pred_ids):
            return
        iou = box_iou(np.asarray(gt_xyxy, np.float64).reshape(-1, 4),
                      np.asarray(pred_xyxy, np.float64).reshape(-1, 4))
        overlapping = iou >= self.min_iou
        for row, col in zip(*np.nonzero(overlapping), strict=True):
            self._co_occurrence[(int(gt_ids[row]), int(pred_ids[col]))] += 1
        # CLEAR MOT: keep last frame's correspondences that still overlap, then match the rest
        # by IoU.
        pred_index = {int(p): i for i, p in enumerate(pred_ids.tolist())}
        matched_rows: set[int] = set()
        matched_cols: set[int] = set()
        pairs: list[tuple[int, int]] = []
        for row, gt in enumerate(gt_ids.tolist()):
            col = pred_index.get(self._last_match.get(gt, -1))
            if col is not None and overlapping[row, col] and col not in matched_cols:
                pairs.append((row, col))
                matched_rows.add(row)
                matched_cols.add(col)
        free_rows = [r for r in range(len(gt_ids)) if r not in matched_rows]
        free_cols = [c for c in range(len(pred_ids)) if c not in matched_cols]
        if free_rows and free_cols:
            sub = np.where(overlapping[np.ix_(free_rows, free_cols)],
                           iou[np.ix_(free_rows, free_cols)], 0.0)
            rows, cols = linear_sum_assignment(-sub)
            pairs += [(free_rows[r], free_cols[c]) for r, c in zip(rows, cols, strict=True)
                      if sub[r, c] > 0]
        for row, col in pairs:
            gt, pred = int(gt_ids[row]), int(pred_ids[col])
            if gt in self._last_match and self._last_match[gt] != pred:
                self.id_switches += 1
            self._last_match[gt] = pred
        self.matches += len(pairs)

    def summary(self) -> MotSummary:
        misses = self.ground_truth - self.matches
        false_positives = self.predictions - self.matches
        mota = (1 - (misses + false_positives + self.id_switches) / self.ground_truth
                if self.ground_truth else 0.0)
        gt_ids = sorted(self._gt_frames)
        pred_ids = sorted(self._pred_frames)
        id_true_positives = 0
        if gt_ids and pred_ids:
            gt_row = {g: i for i, g in enumerate(gt_ids)}
            pred_col = {p: i for i, p in enumerate(pred_ids)}
            shared = np.zeros((len(gt_ids), len(pred_ids)))
            for (gt, pred), frames in self._co_occurrence.items():
                shared[gt_row[gt], pred_col[pred]] = frames
            rows, cols = linear_sum_assignment(-shared)
            id_true_positives = int(shared[rows, cols].sum())
        total = self.ground_truth + self.predictions
        idf1 = 2 * id_true_positives / total if total else 0.0
        return MotSummary(self.frames, self.ground_truth, self.predictions, self.matches,
                          misses, false_positives, self.id_switches, round(mota, 4),
                          round(idf1, 4))
