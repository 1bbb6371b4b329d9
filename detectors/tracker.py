"""Multi-object tracking by detection, after ByteTrack (Zhang et al., ECCV 2022): a constant
velocity Kalman filter per track over (centre x, centre y, aspect ratio, height); confident
detections are matched to tracks first, then the weak ones (often a partly hidden vehicle) to
the tracks still unmatched, so a vehicle behind a bus keeps its identity; tracks unseen for a
while are kept ``lost_frames`` frames for the vehicle to reappear.

Each track's class is the one with the highest sum of confidence × box height over its
detections, so a detector flickering between car and truck gives one class per vehicle, and
what it saw up close outweighs what it guessed far away.

Why not supervision's ByteTrack: deprecated there since 0.28 in favour of the ``trackers``
package, which requires the GUI build of OpenCV (``opencv-python``) next to the headless one
Simpang uses on servers.

>>> import numpy as np
>>> from detectors.detections import Detections
>>> tracker = ByteTracker()
>>> for x in range(0, 50, 10):
...     tracks = tracker.update(Detections(np.array([[x, 0, x + 40, 30]]), np.array([0.9]),
...                                        np.array([1])))
>>> tracks.track_id.tolist(), tracks.class_id.tolist()
([1], [1])
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import linear_sum_assignment

from detectors.detections import DETECTED_CLASSES, Detections, bottom_centres

_POSITION_WEIGHT = 1.0 / 20
_VELOCITY_WEIGHT = 1.0 / 160
_F = np.eye(8)
_F[:4, 4:] = np.eye(4)
_H = np.eye(4, 8)


def xyxy_to_xyah(xyxy: NDArray[np.floating]) -> NDArray[np.float64]:
    width = xyxy[:, 2] - xyxy[:, 0]
    height = np.maximum(xyxy[:, 3] - xyxy[:, 1], 1e-6)
    return np.stack([(xyxy[:, 0] + xyxy[:, 2]) / 2, (xyxy[:, 1] + xyxy[:, 3]) / 2,
                     width / height, height], axis=1).astype(np.float64)


def xyah_to_xyxy(xyah: NDArray[np.floating]) -> NDArray[np.float64]:
    width = xyah[:, 2] * xyah[:, 3]
    return np.stack([xyah[:, 0] - width / 2, xyah[:, 1] - xyah[:, 3] / 2,
                     xyah[:, 0] + width / 2, xyah[:, 1] + xyah[:, 3] / 2], axis=1)


def box_iou(a: NDArray[np.floating], b: NDArray[np.floating]) -> NDArray[np.float64]:
    """Pairwise IoU of ``a`` [N, 4] and ``b`` [M, 4] (x1, y1, x2, y2) → [N, M]."""
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    overlap = np.prod(np.clip(bottom_right - top_left, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    union = area_a[:, None] + area_b[None, :] - overlap
    return np.asarray(np.where(union > 0, overlap / np.maximum(union, 1e-9), 0.0), np.float64)


def _vote(detections: Detections, index: NDArray[np.int64]) -> NDArray[np.float64]:
    """A detection's say in its track's class: its confidence × its box height, so the class
    seen up close outweighs guesses made while the vehicle was small and far."""
    boxes = detections.xyxy[index]
    return np.asarray(detections.confidence[index] * (boxes[:, 3] - boxes[:, 1]), np.float64)


def _noise(height: NDArray[np.float64], weights: tuple[float, float, float, float]
           ) -> NDArray[np.float64]:
    """Diagonal covariances [N, 4, 4]: a positive weight scales with the box height, a
    negative one is an absolute standard deviation."""
    std = np.stack([w * height if w > 0 else np.full_like(height, -w) for w in weights], axis=1)
    result: NDArray[np.float64] = np.eye(len(weights))[None] * (std ** 2)[:, :, None]
    return result


@dataclass
class TrackerSettings:
    high_score: float = 0.5
    low_score: float = 0.1
    new_track_score: float = 0.6
    # A detection joins a track only above this IoU with the track's predicted box.
    match_iou: float = 0.2
    second_match_iou: float = 0.5
    # One second at 10 frames/s (the simulator's cameras; ``--max-fps 10`` for a real one),
    # as ByteTrack's 30 frames are at 30 frames/s. A track kept longer drifts on its last
    # velocity until it takes over the next vehicle of a queue, whose crossing is then lost:
    # with 30 frames, count accuracy was about 1 point lower on two sets of benchmark scenes.
    lost_frames: int = 10
    # Frames in a row a new track must be matched before it is reported.
    confirm_frames: int = 2


@dataclass(frozen=True)
class Tracks:
    """Confirmed tracks matched in this frame: their detection boxes, ids and voted class."""

    xyxy: NDArray[np.float32]
    confidence: NDArray[np.float32]
    class_id: NDArray[np.int64]
    track_id: NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.track_id)

    @property
    def bottom_centre(self) -> NDArray[np.float32]:
        return bottom_centres(self.xyxy)


@dataclass
class ByteTracker:
    settings: TrackerSettings = field(default_factory=TrackerSettings)

    def __post_init__(self) -> None:
        self.frame = 0
        self._next_id = 1
        self._mean = np.zeros((0, 8))
        self._cov = np.zeros((0, 8, 8))
        self._ids = np.zeros(0, np.int64)
        self._hits = np.zeros(0, np.int64)
        self._last_seen = np.zeros(0, np.int64)
        self._confirmed = np.zeros(0, bool)
        self._class_votes = np.zeros((0, len(DETECTED_CLASSES)))
        # Track index → index of the detection it was matched to in the current frame.
        self._matches: dict[int, int] = {}

    @property
    def active_tracks(self) -> int:
        return len(self._ids)

    def update(self, detections: Detections) -> Tracks:
        """Advance one frame with its detections; the confirmed tracks seen in it."""
        self.frame += 1
        self._matches = {}
        s = self.settings
        self._predict()
        scores = detections.confidence
        high = np.flatnonzero(scores >= s.high_score)
        low = np.flatnonzero((scores >= s.low_score) & (scores < s.high_score))
        track_boxes = xyah_to_xyxy(self._mean[:, :4])
        tracks = np.arange(len(self._ids))

        matches_high, unmatched_tracks, unmatched_high = self._associate(
            track_boxes, tracks, detections, high, s.match_iou, fuse_score=True)
        # Weak detections may only continue tracks that were being followed (not lost ones).
        recent = unmatched_tracks[self._last_seen[unmatched_tracks] == self.frame - 1]
        matches_low, _, _ = self._associate(track_boxes, recent, detections, low,
                                            s.second_match_iou, fuse_score=False)
        matched = matches_high + matches_low
        if matched:
            track_index = np.array([t for t, _ in matched])
            detection_index = np.array([d for _, d in matched])
            self._correct(track_index, detections, detection_index)

        new = unmatched_high[scores[unmatched_high] >= s.new_track_score]
        self._start(detections, new)
        self._drop_stale()

        seen = np.flatnonzero((self._last_seen == self.frame) & self._confirmed)
        source = np.array([self._matches[i] for i in seen.tolist()], np.int64)
        return Tracks(
            xyxy=detections.xyxy[source].reshape(-1, 4),
            confidence=detections.confidence[source],
            class_id=self._class_votes[seen].argmax(axis=1).astype(np.int64),
            track_id=self._ids[seen].copy(),
        )

    def _predict(self) -> None:
        if not len(self._ids):
            return
        height = self._mean[:, 3]
        q = _noise(height, (_POSITION_WEIGHT, _POSITION_WEIGHT, -1e-2, _POSITION_WEIGHT))
        q_velocity = _noise(height, (_VELOCITY_WEIGHT, _VELOCITY_WEIGHT, -1e-5,
                                     _VELOCITY_WEIGHT))
        process = np.zeros_like(self._cov)
        process[:, :4, :4] = q
        process[:, 4:, 4:] = q_velocity
        self._mean = self._mean @ _F.T
        self._cov = _F @ self._cov @ _F.T + process

    def _associate(
        self, track_boxes: NDArray[np.float64], tracks: NDArray[np.int64],
        detections: Detections, candidates: NDArray[np.int64], min_iou: float, *,
        fuse_score: bool,
    ) -> tuple[list[tuple[int, int]], NDArray[np.int64], NDArray[np.int64]]:
        if not len(tracks) or not len(candidates):
            return [], tracks, candidates
        iou = box_iou(track_boxes[tracks], detections.xyxy[candidates])
        similarity = iou * detections.confidence[candidates][None, :] if fuse_score else iou
        rows, cols = linear_sum_assignment(-similarity)
        ok = iou[rows, cols] >= min_iou
        pairs = [(int(tracks[r]), int(candidates[c])) for r, c in zip(rows[ok], cols[ok],
                                                                      strict=True)]
        matched_tracks = {t for t, _ in pairs}
        matched_detections = {d for _, d in pairs}
        return (pairs,
                np.array([t for t in tracks if t not in matched_tracks], np.int64),
                np.array([d for d in candidates if d not in matched_detections], np.int64))

    def _correct(self, track_index: NDArray[np.int64], detections: Detections,
                 detection_index: NDArray[np.int64]) -> None:
        measured = xyxy_to_xyah(detections.xyxy[detection_index])
        mean, cov = self._mean[track_index], self._cov[track_index]
        r = _noise(mean[:, 3], (_POSITION_WEIGHT, _POSITION_WEIGHT, -1e-1, _POSITION_WEIGHT))
        projected_cov = _H @ cov @ _H.T + r
        gain = cov @ _H.T @ np.linalg.inv(projected_cov)
        innovation = measured - mean @ _H.T
        self._mean[track_index] = mean + np.einsum("nij,nj->ni", gain, innovation)
        self._cov[track_index] = cov - gain @ projected_cov @ gain.transpose(0, 2, 1)
        consecutive = self._last_seen[track_index] == self.frame - 1
        self._hits[track_index] = np.where(consecutive, self._hits[track_index] + 1, 1)
        self._last_seen[track_index] = self.frame
        self._confirmed[track_index] |= self._hits[track_index] >= self.settings.confirm_frames
        np.add.at(self._class_votes, (track_index, detections.class_id[detection_index]),
                  _vote(detections, detection_index))
        self._matches.update(zip(track_index.tolist(), detection_index.tolist(),
                                            strict=True))

    def _start(self, detections: Detections, new: NDArray[np.int64]) -> None:
        count = len(new)
        first = len(self._ids)
        if count:
            measured = xyxy_to_xyah(detections.xyxy[new])
            mean = np.concatenate([measured, np.zeros_like(measured)], axis=1)
            height = measured[:, 3]
            std = np.stack([2 * _POSITION_WEIGHT * height, 2 * _POSITION_WEIGHT * height,
                            np.full(count, 1e-2), 2 * _POSITION_WEIGHT * height,
                            10 * _VELOCITY_WEIGHT * height, 10 * _VELOCITY_WEIGHT * height,
                            np.full(count, 1e-5), 10 * _VELOCITY_WEIGHT * height], axis=1)
            votes = np.zeros((count, len(DETECTED_CLASSES)))
            votes[np.arange(count), detections.class_id[new]] = _vote(detections, new)
            self._mean = np.concatenate([self._mean, mean])
            self._cov = np.concatenate([self._cov, np.eye(8)[None] * (std ** 2)[:, :, None]])
            self._ids = np.concatenate([self._ids, np.arange(self._next_id,
                                                             self._next_id + count)])
            self._next_id += count
            self._hits = np.concatenate([self._hits, np.ones(count, np.int64)])
            self._last_seen = np.concatenate([self._last_seen,
                                              np.full(count, self.frame, np.int64)])
            # On the very first frame there is nothing to confirm against (as in ByteTrack).
            self._confirmed = np.concatenate([
                self._confirmed,
                np.full(count, self.frame == 1 or self.settings.confirm_frames <= 1)])
            self._class_votes = np.concatenate([self._class_votes, votes])
            self._matches.update(zip(range(first, first + count), new.tolist(),
                                                strict=True))

    def _drop_stale(self) -> None:
        unseen = self.frame - self._last_seen
        # Unconfirmed tracks go at once when missed; confirmed ones after ``lost_frames``.
        keep = np.where(self._confirmed, unseen <= self.settings.lost_frames, unseen == 0)
        if keep.all():
            return
        old_to_new = np.cumsum(keep) - 1
        self._matches = {int(old_to_new[t]): d for t, d in self._matches.items() if keep[t]}
        for name in ("_mean", "_cov", "_ids", "_hits", "_last_seen", "_confirmed",
                     "_class_votes"):
            setattr(self, name, getattr(self, name)[keep])
