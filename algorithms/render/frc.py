"""Fourier ring correlation (Nieuwenhuizen et al., Nat. Methods 2013) for localization tables.

The localizations are cut into `n_blocks` blocks of consecutive frames; each split sends a random half of
the blocks to image A and the rest to image B (splitting single localizations at random would put the
repeated localizations of one molecule in both halves and overestimate the resolution). Both halves are
rendered as histograms on one grid, the ring correlation

    FRC(q) = Re Σ_ring A·B* / sqrt(Σ_ring |A|² · Σ_ring |B|²)

is averaged over `n_splits` splits, smoothed (moving average over `smooth_rings` rings), and the
resolution is 1/q at the first crossing of 1/7 (linear interpolation between rings).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from algorithms.render.images import Grid, histogram

THRESHOLD = 1.0 / 7.0


@dataclass
class FRCResult:
    """q in 1/nm; `curve` the split-averaged raw FRC, `smoothed` what the threshold is applied to."""

    q_per_nm: np.ndarray
    curve: np.ndarray
    smoothed: np.ndarray
    resolution_nm: float | None
    split_resolutions_nm: list[float | None] = field(default_factory=list)
    pixel_nm: float = 0.0
    n_blocks: int = 0

    def as_dict(self) -> dict[str, object]:
        finite = [r for r in self.split_resolutions_nm if r is not None]
        return {
            "resolution_nm": self.resolution_nm,
            "split_resolutions_nm": self.split_resolutions_nm,
            "split_std_nm": float(np.std(finite)) if len(finite) > 1 else None,
            "pixel_nm": self.pixel_nm, "n_blocks": self.n_blocks, "threshold": THRESHOLD,
        }


def ring_correlation(image_a: np.ndarray, image_b: np.ndarray, pixel_nm: float) -> tuple[np.ndarray, np.ndarray]:
    """(q per nm, FRC) of two equally shaped images, rings one frequency bin wide, up to Nyquist."""
    from scipy import fft

    size = max(image_a.shape)
    fa = fft.rfft2(image_a.astype(np.float32), s=(size, size), workers=-1)
    fb = fft.rfft2(image_b.astype(np.float32), s=(size, size), workers=-1)
    ky = np.fft.fftfreq(size) * size
    kx = np.arange(fa.shape[1], dtype=np.float64)
    radius = np.rint(np.hypot(ky[:, None], kx[None, :])).astype(np.int64)
    # rfft keeps only kx >= 0: columns 1..size/2-1 stand for two conjugate-symmetric halves
    weight = np.full(fa.shape[1], 2.0)
    weight[0] = 1.0
    if size % 2 == 0:
        weight[-1] = 1.0
    weight = np.broadcast_to(weight, fa.shape).ravel()
    n_rings = size // 2
    r = radius.ravel()
    keep = r < n_rings
    r, weight = r[keep], weight[keep]
    cross = np.bincount(r, weights=(fa * fb.conj()).real.ravel()[keep] * weight, minlength=n_rings)
    pa = np.bincount(r, weights=(np.abs(fa) ** 2).ravel()[keep] * weight, minlength=n_rings)
    pb = np.bincount(r, weights=(np.abs(fb) ** 2).ravel()[keep] * weight, minlength=n_rings)
    with np.errstate(invalid="ignore", divide="ignore"):
        frc = cross / np.sqrt(pa * pb)
    q = np.arange(n_rings) / (size * pixel_nm)
    return q, np.nan_to_num(frc)


def smooth(curve: np.ndarray, width: int) -> np.ndarray:
    """Moving average of odd `width` (shrinking at the ends)."""
    width = max(1, int(width) | 1)
    if width == 1 or len(curve) < 3:
        return curve.copy()
    kernel = np.ones(width)
    num = np.convolve(curve, kernel, mode="same")
    den = np.convolve(np.ones_like(curve), kernel, mode="same")
    return num / den


def threshold_crossing(q: np.ndarray, curve: np.ndarray, threshold: float = THRESHOLD,
                       skip: int = 2) -> float | None:
    """Resolution 1/q (nm) at the first downward crossing of `threshold` after `skip` rings, else None."""
    skip = max(1, skip)
    below = np.flatnonzero(curve[skip:] < threshold)
    if len(below) == 0:
        return None
    i = below[0] + skip
    if curve[i - 1] < threshold:  # never above the threshold: no resolvable detail at all
        return None
    q0, q1, c0, c1 = q[i - 1], q[i], curve[i - 1], curve[i]
    q_cross = q0 + (c0 - threshold) / (c0 - c1) * (q1 - q0) if c0 != c1 else q1
    return float(1.0 / q_cross) if q_cross > 0 else None


def frc(x_nm: np.ndarray, y_nm: np.ndarray, frame: np.ndarray, pixel_nm: float, n_blocks: int = 20,
        n_splits: int = 5, seed: int = 0, smooth_rings: int | None = None, grid: Grid | None = None) -> FRCResult:
    """FRC resolution of a localization set, averaged over `n_splits` random time-block splits."""
    x_nm, y_nm, frame = np.asarray(x_nm), np.asarray(y_nm), np.asarray(frame)
    if len(x_nm) < 2:
        raise ValueError("FRC needs localizations in at least two time blocks")
    grid = grid or Grid.around(x_nm, y_nm, pixel_nm)
    first, last = int(frame.min()), int(frame.max())
    n_blocks = max(2, min(int(n_blocks), last - first + 1))
    block = ((frame - first) * n_blocks // (last - first + 1)).astype(np.int64)
    rng = np.random.default_rng(seed)
    curves, per_split = [], []
    q = np.empty(0)
    size = max(grid.shape)
    width = smooth_rings if smooth_rings is not None else max(3, size // 100)
    for _ in range(max(1, int(n_splits))):
        half = rng.permutation(n_blocks) < n_blocks // 2
        in_a = half[block]
        if in_a.all() or not in_a.any():
            raise ValueError("FRC needs localizations in both halves of the time blocks")
        image_a = histogram(x_nm[in_a], y_nm[in_a], grid)
        image_b = histogram(x_nm[~in_a], y_nm[~in_a], grid)
        q, curve = ring_correlation(image_a, image_b, grid.pixel_nm)
        curves.append(curve)
        per_split.append(threshold_crossing(q, smooth(curve, width)))
    mean = np.mean(curves, axis=0)
    smoothed = smooth(mean, width)
    return FRCResult(q, mean, smoothed, threshold_crossing(q, smoothed), per_split, grid.pixel_nm, n_blocks)


def save_curve_png(result: FRCResult, path, title: str = "Fourier ring correlation"):
    """The FRC curve (raw and smoothed), the 1/7 threshold and the resolution, as a PNG."""
    from matplotlib.figure import Figure

    from algorithms.cli import atomic_path

    fig = Figure(figsize=(6, 4), dpi=100)
    ax = fig.add_subplot()
    ax.plot(result.q_per_nm * 1000, result.curve, color="0.7", lw=1, label="FRC (mean of splits)")
    ax.plot(result.q_per_nm * 1000, result.smoothed, color="C0", lw=2, label="smoothed")
    ax.axhline(THRESHOLD, color="C3", ls="--", lw=1, label="1/7")
    if result.resolution_nm:
        ax.axvline(1000 / result.resolution_nm, color="C2", lw=1,
                   label=f"resolution {result.resolution_nm:.1f} nm")
    ax.set_xlabel("spatial frequency (1/µm)")
    ax.set_ylabel("FRC")
    ax.set_ylim(-0.1, 1.05)
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    with atomic_path(path, suffix=path.suffix) as tmp:
        fig.savefig(tmp, format="png")
    return path
