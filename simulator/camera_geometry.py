"""Pinhole geometry of a virtual camera looking at an approach: world ↔ image.

World coordinates are SUMO's network metres (x east, y north, z up). A camera stands at
``position`` and looks along the horizontal unit vector ``facing``, tilted down by
``tilt_deg``. Image x grows right, y grows down; the principal point is the image centre.

>>> import numpy as np
>>> cam = PinholeCamera(position=(0.0, 0.0, 7.0), facing=(0.0, 1.0), tilt_deg=22.0,
...                     fov_deg=64.0, width_px=640, height_px=360)
>>> u, v = cam.project(np.array([[0.0, 7.0 / np.tan(np.radians(22.0)), 0.0]]))[0]
>>> round(float(u)), round(float(v))
(320, 180)
>>> ground = cam.image_to_ground(np.array([[320.0, 180.0]]))[0]
>>> [round(float(c), 2) for c in ground]
[0.0, 17.33, 0.0]
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

NEAR_PLANE_M = 0.5
"""Geometry closer to the camera than this (along the optical axis) is clipped away."""


@dataclass(frozen=True)
class PinholeCamera:
    position: tuple[float, float, float]
    facing: tuple[float, float]
    tilt_deg: float
    fov_deg: float
    width_px: int
    height_px: int
    _rotation: NDArray[np.float64] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        fx, fy = self.facing
        norm = float(np.hypot(fx, fy))
        if norm == 0:
            raise ValueError("facing must be a non-zero horizontal vector")
        fx, fy = fx / norm, fy / norm
        tilt = np.radians(self.tilt_deg)
        forward = np.array([fx * np.cos(tilt), fy * np.cos(tilt), -np.sin(tilt)])
        right = np.array([fy, -fx, 0.0])
        down = np.cross(forward, right)
        object.__setattr__(self, "_rotation", np.stack([right, down, forward]))

    @property
    def focal_px(self) -> float:
        return (self.width_px / 2) / float(np.tan(np.radians(self.fov_deg) / 2))

    def to_camera(self, points_world: NDArray[np.float64]) -> NDArray[np.float64]:
        """(N, 3) world points → (N, 3) camera coordinates (right, down, forward)."""
        return np.asarray((points_world - np.asarray(self.position)) @ self._rotation.T)

    def camera_to_image(self, points_cam: NDArray[np.float64]) -> NDArray[np.float64]:
        f = self.focal_px
        depth = points_cam[:, 2:3]
        return np.asarray(
            points_cam[:, :2] * f / depth + np.array([self.width_px / 2, self.height_px / 2])
        )

    def project(self, points_world: NDArray[np.float64]) -> NDArray[np.float64]:
        """(N, 3) world points → (N, 2) pixels. Points behind the camera give nonsense: check
        :meth:`in_front` or clip first."""
        return self.camera_to_image(self.to_camera(points_world))

    def in_front(self, points_world: NDArray[np.float64]) -> NDArray[np.bool_]:
        return np.asarray(self.to_camera(points_world)[:, 2] > NEAR_PLANE_M)

    def image_to_ground(self, pixels: NDArray[np.float64]) -> NDArray[np.float64]:
        """(N, 2) pixels → (N, 3) points where their rays meet the road (z = 0).

        Pixels at or above the horizon have no ground point: NaN.
        """
        f = self.focal_px
        rays_cam = np.column_stack([
            (pixels[:, 0] - self.width_px / 2) / f,
            (pixels[:, 1] - self.height_px / 2) / f,
            np.ones(len(pixels)),
        ])
        rays_world = rays_cam @ self._rotation
        origin = np.asarray(self.position)
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = -origin[2] / rays_world[:, 2]
        scale = np.where(scale > 0, scale, np.nan)
        return np.asarray(origin + rays_world * scale[:, None])

    def clip_polygon(self, polygon_world: NDArray[np.float64]) -> NDArray[np.float64]:
        """Clip a closed (N, 3) world polygon to the near plane; returns its (M, 2) pixels
        (M may be 0)."""
        cam = self.to_camera(polygon_world)
        out: list[NDArray[np.float64]] = []
        count = len(cam)
        for index in range(count):
            current, following = cam[index], cam[(index + 1) % count]
            current_in = current[2] > NEAR_PLANE_M
            following_in = following[2] > NEAR_PLANE_M
            if current_in:
                out.append(current)
            if current_in != following_in:
                t = (NEAR_PLANE_M - current[2]) / (following[2] - current[2])
                out.append(current + t * (following - current))
        if not out:
            return np.empty((0, 2))
        return self.camera_to_image(np.array(out))


def segments_cross(
    a0: NDArray[np.float64], a1: NDArray[np.float64], b0: NDArray[np.float64],
    b1: NDArray[np.float64],
) -> NDArray[np.int8]:
    """For each row, whether the moves ``a0 → a1`` cross the segment ``b0 → b1`` (2-D).

    Returns +1 where the move crosses from the segment's left to its right (looking from
    ``b0`` to ``b1``), −1 for right to left, 0 for no crossing. A move that starts exactly on
    the line counts; one that ends on it does not, so a track crossing in two steps that
    meet on the line is counted once.

    >>> import numpy as np
    >>> line0, line1 = np.array([[0.0, 0.0]]), np.array([[10.0, 0.0]])
    >>> int(segments_cross(np.array([[5.0, 1.0]]), np.array([[5.0, -1.0]]), line0, line1)[0])
    1
    >>> int(segments_cross(np.array([[15.0, 1.0]]), np.array([[15.0, -1.0]]), line0, line1)[0])
    0
    """

    def side(p: NDArray[np.float64], q0: NDArray[np.float64], q1: NDArray[np.float64]) -> (
        NDArray[np.float64]
    ):
        return np.asarray(
            (q1[:, 0] - q0[:, 0]) * (p[:, 1] - q0[:, 1])
            - (q1[:, 1] - q0[:, 1]) * (p[:, 0] - q0[:, 0])
        )

    start_side = side(a0, b0, b1)
    end_side = side(a1, b0, b1)
    straddles_line = (start_side >= 0) & (end_side < 0) | (start_side <= 0) & (end_side > 0)
    move_side_b0 = side(b0, a0, a1)
    move_side_b1 = side(b1, a0, a1)
    within_segment = move_side_b0 * move_side_b1 <= 0
    crossing = straddles_line & within_segment
    direction = np.where(start_side > end_side, 1, -1)
    return np.asarray(np.where(crossing, direction, 0), dtype=np.int8)
