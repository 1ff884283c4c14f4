"""Multi-channel geometry: affine transforms between channels, mirroring, offsets, indicator maps, and the
photon models that split an emitter's photons over channels.

A transform is a 3 × 3 matrix acting on homogeneous *sensor* pixel coordinates ``[x, y, 1]`` (x along
columns, y along rows, pixel centres at ``+0.5``) and maps **channel k → reference channel 0**. Channel k's
frames are a window of the sensor starting at ``roi_offsets[k] = (row, col)``; positions inside a frame are
frame pixels, so ``sensor = frame + (col, row)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


def translation(dx_px: float, dy_px: float) -> np.ndarray:
    t = np.eye(3)
    t[0, 2], t[1, 2] = dx_px, dy_px
    return t


def mirror_x(width_px: float) -> np.ndarray:
    """Mirror along x across a sensor region ``width_px`` wide (x → width - x)."""
    return np.array([[-1.0, 0.0, width_px], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


def mirror_y(height_px: float) -> np.ndarray:
    return np.array([[1.0, 0.0, 0.0], [0.0, -1.0, height_px], [0.0, 0.0, 1.0]])


def _check(t: Any, k: int) -> np.ndarray:
    m = np.asarray(t, dtype=np.float64)
    if m.shape == (2, 3):
        m = np.vstack([m, [0.0, 0.0, 1.0]])
    if m.shape != (3, 3) or not np.allclose(m[2], [0, 0, 1]):
        raise ValueError(f"transform of channel {k} must be a 2 x 3 or affine 3 x 3 matrix, not {m.tolist()}")
    if abs(np.linalg.det(m[:2, :2])) < 1e-9:
        raise ValueError(f"transform of channel {k} is singular")
    return m


@dataclass
class ChannelGeometry:
    """Per-channel transforms (channel k → reference, sensor px) and frame offsets on the sensor."""

    transforms: list[np.ndarray]
    roi_offsets: list[tuple[int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.transforms = [_check(t, k) for k, t in enumerate(self.transforms)]
        if not self.roi_offsets:
            self.roi_offsets = [(0, 0)] * len(self.transforms)
        if len(self.roi_offsets) != len(self.transforms):
            raise ValueError("one ROI offset per channel is needed")
        self._inv = [np.linalg.inv(t) for t in self.transforms]

    @property
    def n_channels(self) -> int:
        return len(self.transforms)

    @classmethod
    def identity(cls, n_channels: int) -> ChannelGeometry:
        return cls([np.eye(3) for _ in range(n_channels)])

    def _apply(self, m: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return m[0, 0] * x + m[0, 1] * y + m[0, 2], m[1, 0] * x + m[1, 1] * y + m[1, 2]

    def to_channel(self, k: int, x_px: Any, y_px: Any) -> tuple[np.ndarray, np.ndarray]:
        """Reference-frame pixels → channel k frame pixels."""
        x, y = np.asarray(x_px, dtype=np.float64), np.asarray(y_px, dtype=np.float64)
        r0, c0 = self.roi_offsets[0]
        rk, ck = self.roi_offsets[k]
        xs, ys = self._apply(self._inv[k], x + c0, y + r0)
        return xs - ck, ys - rk

    def to_reference(self, k: int, x_px: Any, y_px: Any) -> tuple[np.ndarray, np.ndarray]:
        """Channel k frame pixels → reference-frame pixels."""
        x, y = np.asarray(x_px, dtype=np.float64), np.asarray(y_px, dtype=np.float64)
        r0, c0 = self.roi_offsets[0]
        rk, ck = self.roi_offsets[k]
        xs, ys = self._apply(self.transforms[k], x + ck, y + rk)
        return xs - c0, ys - r0

    def jacobian_to_channel(self, k: int) -> np.ndarray:
        """d(x_k, y_k)/d(x_ref, y_ref): the linear part of reference → channel k."""
        return self._inv[k][:2, :2].copy()

    def indicator_maps(
        self, shape: tuple[int, int], scale_px: float | None = None
    ) -> tuple[np.ndarray, float]:
        """``(C, 2, H, W)`` float32: for each reference pixel centre, where the same point appears in channel
        k minus where it is in the reference (dx, dy in px), divided by ``scale_px`` (default: the largest
        absolute offset, or 1 when all are below 1) so the maps are O(1). Channel 0 is zero."""
        h, w = shape
        yy, xx = np.mgrid[0:h, 0:w] + 0.5
        maps = np.zeros((self.n_channels, 2, h, w), dtype=np.float64)
        for k in range(1, self.n_channels):
            xk, yk = self.to_channel(k, xx, yy)
            maps[k, 0], maps[k, 1] = xk - xx, yk - yy
        if scale_px is None:
            scale_px = max(1.0, float(np.abs(maps).max()))
        return (maps / scale_px).astype(np.float32), float(scale_px)


def channel_photons(
    photons: np.ndarray,
    dye: np.ndarray,
    n_channels: int,
    model: str = "independent",
    transmission: np.ndarray | None = None,
    plane_ratios: np.ndarray | None = None,
) -> np.ndarray:
    """Photons per channel ``(M, C)`` from emitter photons.

    * ``independent``: ``photons`` already ``(M, C)`` (per-channel flux), or one value copied to each channel;
    * ``biplane``: the same photons into every plane, times ``plane_ratios[k]`` (default 1; e.g. PSF norms);
    * ``ratiometric``: ``photons × transmission[dye, k]`` (dye × channel transmission matrix).
    """
    p = np.asarray(photons, dtype=np.float64)
    if model == "independent":
        if p.ndim == 2:
            if p.shape[1] != n_channels:
                raise ValueError(f"photons have {p.shape[1]} channels, expected {n_channels}")
            return p
        return np.repeat(p[:, None], n_channels, axis=1)
    if p.ndim == 2:
        raise ValueError(f"photon model {model!r} needs one photon count per emitter, not per channel")
    if model == "biplane":
        r = np.ones(n_channels) if plane_ratios is None else np.asarray(plane_ratios, dtype=np.float64)
        if r.shape != (n_channels,):
            raise ValueError(f"plane_ratios needs {n_channels} values")
        return p[:, None] * r[None, :]
    if model == "ratiometric":
        if transmission is None:
            raise ValueError("the ratiometric photon model needs a dye × channel transmission matrix")
        t = np.asarray(transmission, dtype=np.float64)
        if t.ndim != 2 or t.shape[1] != n_channels or np.any(t < 0):
            raise ValueError(
                f"transmission must be a non-negative (dyes, {n_channels}) matrix, not shape {t.shape}"
            )
        if np.any(dye >= t.shape[0]):
            raise ValueError(f"dye index beyond the transmission matrix's {t.shape[0]} rows")
        return p[:, None] * t[np.asarray(dye, dtype=np.int64)]
    raise ValueError(f"photon model must be independent, biplane or ratiometric, not {model!r}")
