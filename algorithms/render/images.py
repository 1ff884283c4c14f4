"""Rendering localizations (nm) into images.

The grid: pixel (row r, column c) covers x in [x0 + c·p, x0 + (c+1)·p) and y in [y0 + r·p, y0 + (r+1)·p),
p = `pixel_nm`; x runs along columns, y along rows (design §6). All renderers return float32 images whose
sum is the number (or weight) of localizations inside the grid, so images of one grid add up.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

DEFAULT_COLORS = ((1.0, 0.0, 1.0), (0.0, 1.0, 0.0), (0.0, 1.0, 1.0), (1.0, 1.0, 0.0), (1.0, 0.5, 0.0),
                  (0.4, 0.6, 1.0))  # magenta, green, cyan, yellow, orange, blue


@dataclass(frozen=True)
class Grid:
    """A render grid: origin (x0, y0) of pixel (0, 0)'s corner in nm, pixel size in nm, shape in pixels."""

    x0_nm: float
    y0_nm: float
    pixel_nm: float
    width: int
    height: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width

    @classmethod
    def around(cls, x_nm: np.ndarray, y_nm: np.ndarray, pixel_nm: float, margin_nm: float = 0.0,
               max_pixels: int = 2**27) -> Grid:
        """The smallest grid of whole pixels (origin on a multiple of `pixel_nm`) holding every point."""
        if pixel_nm <= 0:
            raise ValueError("pixel size must be positive")
        if len(x_nm) == 0:
            return cls(0.0, 0.0, float(pixel_nm), 1, 1)
        x0 = np.floor((np.nanmin(x_nm) - margin_nm) / pixel_nm) * pixel_nm
        y0 = np.floor((np.nanmin(y_nm) - margin_nm) / pixel_nm) * pixel_nm
        width = int(np.floor((np.nanmax(x_nm) + margin_nm - x0) / pixel_nm)) + 1
        height = int(np.floor((np.nanmax(y_nm) + margin_nm - y0) / pixel_nm)) + 1
        if width * height > max_pixels:
            raise ValueError(f"a {width}×{height} image at {pixel_nm} nm/px is too large; use a larger pixel")
        return cls(float(x0), float(y0), float(pixel_nm), width, height)


def _flat_index(grid: Grid, x_nm: np.ndarray, y_nm: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Flat pixel index of each point inside the grid, and the mask of those points (None: all inside)."""
    inv = 1.0 / grid.pixel_nm
    col = np.subtract(x_nm, grid.x0_nm, dtype=np.float64)
    col *= inv
    row = np.subtract(y_nm, grid.y0_nm, dtype=np.float64)
    row *= inv
    inside = (col >= 0) & (col < grid.width) & (row >= 0) & (row < grid.height)
    if inside.all():
        mask = None
    else:
        mask = inside
        col, row = col[inside], row[inside]
    idx = row.astype(np.int64)  # non-negative here, so truncation is floor
    idx *= grid.width
    idx += col.astype(np.int64)
    return idx, mask


def _pick(values: np.ndarray | None, mask: np.ndarray | None) -> np.ndarray | None:
    if values is None:
        return None
    values = np.asarray(values, dtype=np.float64)
    return values if mask is None else values[mask]


def histogram(x_nm: np.ndarray, y_nm: np.ndarray, grid: Grid, weights: np.ndarray | None = None) -> np.ndarray:
    """Localizations (or `weights`) per pixel, float32 (height, width)."""
    idx, inside = _flat_index(grid, x_nm, y_nm)
    counts = np.bincount(idx, weights=_pick(weights, inside), minlength=grid.width * grid.height)
    return counts.reshape(grid.shape).astype(np.float32)


def gaussian(x_nm: np.ndarray, y_nm: np.ndarray, grid: Grid, sigma_nm: float | np.ndarray,
             weights: np.ndarray | None = None, levels_per_octave: int = 4) -> np.ndarray:
    """Each localization as a normalised 2D Gaussian.

    `sigma_nm` is one global σ, or one σ per localization (e.g. its precision). Per-localization σ are
    grouped into geometric levels (`levels_per_octave` per factor 2; with the default 4 each σ is rendered
    within ±9 % of its value) and each level is a histogram blurred once: cost O(N + levels·pixels), not O(N·footprint).
    """
    sigma = np.asarray(sigma_nm, dtype=np.float64)
    if sigma.ndim == 0:
        image = histogram(x_nm, y_nm, grid, weights)
        return _blur(image, float(sigma) / grid.pixel_nm)
    if len(sigma) != len(x_nm):
        raise ValueError("one sigma per localization expected")
    sigma_px = np.clip(np.nan_to_num(sigma / grid.pixel_nm, nan=1.0), 1e-3, None)
    step = 2.0 ** (1.0 / levels_per_octave)
    level = np.rint(np.log(sigma_px) / np.log(step)).astype(np.int64)
    image = np.zeros(grid.shape, dtype=np.float32)
    idx, inside = _flat_index(grid, x_nm, y_nm)
    level = level if inside is None else level[inside]
    w = _pick(weights, inside)
    # Gaussian semigroup: G(σ_b) = G(σ_a) ∗ G(√(σ_b² − σ_a²)). Walking the levels from the widest down, each
    # step blurs the running sum only by the increment, so no level pays for its full kernel width.
    values = np.unique(level)[::-1]
    for i, value in enumerate(values):
        sel = level == value
        counts = np.bincount(idx[sel], weights=None if w is None else w[sel], minlength=grid.width * grid.height)
        image += counts.reshape(grid.shape).astype(np.float32)
        this = step ** float(value)
        below = step ** float(values[i + 1]) if i + 1 < len(values) else 0.0
        image = _blur(image, float(np.sqrt(this**2 - below**2)))
    return image


def _blur(image: np.ndarray, sigma_px: float) -> np.ndarray:
    if sigma_px < 0.1:  # narrower than a fifth of a pixel: a histogram already is the image
        return image
    return ndimage.gaussian_filter(image, sigma_px, mode="constant", truncate=4.0).astype(np.float32)


def render(x_nm: np.ndarray, y_nm: np.ndarray, grid: Grid, sigma_nm: float | np.ndarray | None = None,
           weights: np.ndarray | None = None) -> np.ndarray:
    """Histogram when `sigma_nm` is None, Gaussian otherwise."""
    if sigma_nm is None:
        return histogram(x_nm, y_nm, grid, weights)
    return gaussian(x_nm, y_nm, grid, sigma_nm, weights)


def colormap_rgb(name: str, n: int) -> np.ndarray:
    """(n, 3) colours from a matplotlib colormap (imported lazily)."""
    import matplotlib

    cmap = matplotlib.colormaps[name]
    return np.asarray(cmap(np.linspace(0.0, 1.0, n)))[:, :3]


def normalize(image: np.ndarray, percentile: float = 99.5) -> np.ndarray:
    """Scale to [0, 1] with the given percentile of the non-zero pixels as white."""
    nonzero = image[image > 0]
    if nonzero.size == 0:
        return np.zeros_like(image, dtype=np.float32)
    top = float(np.percentile(nonzero, percentile))
    top = top if top > 0 else float(nonzero.max())
    return np.clip(image / top, 0.0, 1.0).astype(np.float32)


def render_z_color(x_nm: np.ndarray, y_nm: np.ndarray, z_nm: np.ndarray, grid: Grid,
                   sigma_nm: float | np.ndarray | None = None, z_range_nm: tuple[float, float] | None = None,
                   n_slices: int = 16, cmap: str = "turbo", percentile: float = 99.5) -> np.ndarray:
    """RGB float32 (height, width, 3): hue from z (colormap over `z_range_nm`), brightness from density."""
    z = np.asarray(z_nm, dtype=np.float64)
    lo, hi = z_range_nm if z_range_nm is not None else (np.nanpercentile(z, 1), np.nanpercentile(z, 99))
    if not hi > lo:
        hi = lo + 1.0
    slice_ix = np.clip(((z - lo) / (hi - lo) * n_slices).astype(np.int64), 0, n_slices - 1)
    colors = colormap_rgb(cmap, n_slices)
    rgb = np.zeros((*grid.shape, 3), dtype=np.float32)
    total = np.zeros(grid.shape, dtype=np.float32)
    sigma = np.asarray(sigma_nm) if sigma_nm is not None else None
    for k in range(n_slices):
        sel = slice_ix == k
        if not sel.any():
            continue
        s = None if sigma is None else (sigma if sigma.ndim == 0 else sigma[sel])
        layer = render(x_nm[sel], y_nm[sel], grid, s)
        total += layer
        rgb += layer[..., None] * colors[k].astype(np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        hue = np.where(total[..., None] > 0, rgb / total[..., None], 0.0)
    return (hue * normalize(total, percentile)[..., None]).astype(np.float32)


def overlay(images: list[np.ndarray], colors: list[tuple[float, float, float]] | None = None,
            percentile: float = 99.5) -> np.ndarray:
    """Multicolor overlay: each image normalised on its own, tinted, added; RGB float32 in [0, 1]."""
    colors = list(colors or DEFAULT_COLORS)
    if len(images) > len(colors):
        raise ValueError(f"{len(images)} channels but only {len(colors)} colours")
    rgb = np.zeros((*images[0].shape, 3), dtype=np.float32)
    for image, color in zip(images, colors, strict=False):
        rgb += normalize(image, percentile)[..., None] * np.asarray(color, dtype=np.float32)
    return np.clip(rgb, 0.0, 1.0)
