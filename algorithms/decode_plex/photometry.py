"""Photons per channel measured in the frames at the network's positions: what colour assignment reads.

Ratiometric colour rests on each emitter's photon split between the channels. The network's own photon
outputs learn the bright channel and barely the dim one (a dye sending 2 % of its photons there: predicted and
true photons correlated r ≈ 0.45 after 2000 training steps, issue 20), so the split they give is close to the
average for every emitter and colour assignment is at chance. The split is measured here instead, with the
position, z and background the network gives and the PSF the model was trained with: in each channel the
localizations of a frame are fitted jointly as ``frame ≈ b + Σ_n N_n · PSF_n`` with a constant background b
per window (linear in the N_n and b, so neighbours that overlap share their pixels correctly), weighted by the shot-noise variance (× 2 on an EMCCD)
and solved twice to update the weights. ``sigma`` is the Cramér–Rao bound of N_n at that model, which is what
the colour likelihood needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from algorithms.io.table import LocTable


@dataclass
class Photometry:
    """PSFs (one per channel, the simulator's objects), the channel geometry and the camera's noise excess."""

    psfs: list[Any]
    geometry: Any  # algorithms.simulation.geometry.ChannelGeometry
    px_size_nm: tuple[float, float]
    excess: float = 1.0  # variance per photon: 2 for an EMCCD's gain register, 1 otherwise
    focal_offsets_nm: list[float] | None = None  # biplane: the z each channel's plane is focused on

    def measure(self, frames: np.ndarray, table: LocTable, frame_offset: int = 0) -> dict[str, np.ndarray]:
        """``photometry_c`` and ``photometry_sigma_c`` (photons) per channel c for the localizations of
        ``table`` whose frame lies in ``frames`` ((n, C, H, W) photons; frame f is ``frames[f - offset]``)."""
        n_loc, n_ch = len(table), frames.shape[1]
        out = {f"photometry_{c}": np.full(n_loc, np.nan) for c in range(n_ch)}
        out.update({f"photometry_sigma_{c}": np.full(n_loc, np.nan) for c in range(n_ch)})
        x_ref = np.asarray(table["x"], float) / self.px_size_nm[0]
        y_ref = np.asarray(table["y"], float) / self.px_size_nm[1]
        z = np.asarray(table["z"], float) if "z" in table else np.zeros(n_loc)
        frame = np.asarray(table["frame"]) - frame_offset
        for f in np.unique(frame):
            if not 0 <= f < len(frames):
                continue
            rows = np.flatnonzero(frame == f)
            for c in range(n_ch):
                bg = table[f"bg_{c}" if c else "bg"][rows]  # extract's per-channel backgrounds
                xc, yc = self.geometry.to_channel(c, x_ref[rows], y_ref[rows])
                zc = z[rows] - (self.focal_offsets_nm[c] if self.focal_offsets_nm else 0.0)
                n, s = _joint_fit(frames[f, c], self.psfs[c], xc, yc, zc, np.asarray(bg, float), self.excess)
                out[f"photometry_{c}"][rows], out[f"photometry_sigma_{c}"][rows] = n, s
        return out


def _joint_fit(image: np.ndarray, psf: Any, x: np.ndarray, y: np.ndarray, z: np.ndarray, bg: np.ndarray,
               excess: float, iterations: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Photons of each emitter and their √CRLB by weighted least squares over the pixels of their PSF windows,
    with a constant background per window fitted alongside (a background off by 3 photons/px would move a dim
    channel's count by ~50 photons; the network's estimate ``bg`` only starts the weights)."""
    h, w = image.shape
    m = len(x)
    rois, r0, c0 = psf.rois(x, y, z)
    rh, rw = rois.shape[-2:]
    rr = r0[:, None, None] + np.arange(rh)[None, :, None]
    cc = c0[:, None, None] + np.arange(rw)[None, None, :]
    inside = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
    flat = np.where(inside, rr * w + cc, -1)
    pixels = np.unique(flat[inside])
    if len(pixels) == 0:
        return np.full(m, np.nan), np.full(m, np.nan)
    e, i, j = np.nonzero(inside)
    at = np.searchsorted(pixels, flat[e, i, j])
    design = np.zeros((len(pixels), 2 * m))  # N_1..N_m, then the background of each window
    design[at, e] = rois[e, i, j]
    # A pixel in several windows takes the background of the window whose emitter is nearest.
    owner = np.zeros(len(pixels), np.int64)
    d = (rr[e, i, 0] + 0.5 - y[e]) ** 2 + (cc[e, 0, j] + 0.5 - x[e]) ** 2
    order = np.argsort(-d)  # nearest last: it wins the assignment below
    owner[at[order]] = e[order]
    design[np.arange(len(pixels)), m + owner] = 1.0
    data = image.reshape(-1)[pixels]
    model = bg[owner] + design[:, :m] @ np.full(m, 100.0)
    for _ in range(iterations):
        var = excess * np.maximum(model, 1.0)
        a = design / var[:, None]
        params = np.linalg.lstsq(design.T @ a, a.T @ data, rcond=None)[0]
        model = design @ np.concatenate([np.maximum(params[:m], 0.0), params[m:]])
    var = excess * np.maximum(model, 1.0)
    fisher = design.T @ (design / var[:, None])
    try:
        sigma = np.sqrt(np.clip(np.diag(np.linalg.pinv(fisher))[:m], 0.0, None))
    except np.linalg.LinAlgError:
        sigma = np.full(m, np.inf)
    return params[:m], sigma
