"""Writing rendered images: PNG with a scale bar (matplotlib, Agg) and 16/32-bit TIFF with pixel size."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from algorithms.cli import atomic_path
from algorithms.render.images import normalize


def nice_length_nm(width_nm: float) -> float:
    """A 1/2/5×10^k length near a fifth of the image width."""
    target = max(width_nm / 5.0, 1e-3)
    exponent = np.floor(np.log10(target))
    for mantissa in (5, 2, 1):
        if mantissa * 10**exponent <= target:
            return float(mantissa * 10**exponent)
    return float(10**exponent)


def _label(length_nm: float) -> str:
    if length_nm >= 1000:
        value = length_nm / 1000
        return f"{value:g} µm"
    return f"{length_nm:g} nm"


def save_png(image: np.ndarray, path: Path, pixel_nm: float, scalebar_nm: float | None = None,
             cmap: str = "hot", percentile: float = 99.5,
             legend: tuple[str, float, float, str] | None = None) -> Path:
    """Grey-level (colormapped) or RGB image as a PNG, one image pixel per PNG pixel, scale bar bottom right.

    `legend` = (colormap, low, high, label), e.g. ("turbo", -400, 400, "z (nm)"), adds a colour bar bottom left.
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    path = Path(path)
    height, width = image.shape[:2]
    shown = image if image.ndim == 3 else normalize(image, percentile)
    dpi = 100
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.imshow(shown, cmap=None if image.ndim == 3 else cmap, vmin=0, vmax=1, interpolation="nearest",
              origin="upper")
    ax.set_axis_off()
    length = scalebar_nm if scalebar_nm is not None else nice_length_nm(width * pixel_nm)
    bar_px = length / pixel_nm
    if 2 <= bar_px <= width * 0.9 and height >= 16:
        margin = max(2.0, 0.04 * min(width, height))
        thick = max(1.0, 0.012 * height)
        x_start = width - margin - bar_px
        y_start = height - margin - thick
        ax.add_patch(Rectangle((x_start - 0.5, y_start - 0.5), bar_px, thick, color="white", lw=0))
        if height >= 64:
            ax.text(x_start + bar_px / 2, y_start - thick, _label(length), color="white", ha="center",
                    va="bottom", fontsize=max(6, min(24, height / 40 * 72 / dpi * 1.5)))
    ax.set_xlim(-0.5, width - 0.5)
    ax.set_ylim(height - 0.5, -0.5)
    if legend is not None and width >= 128 and height >= 128:
        name, low, high, label = legend
        bar = fig.add_axes((0.04, 0.05, 0.25, 0.025))
        bar.imshow(np.linspace(0, 1, 256)[None, :], cmap=name, aspect="auto")
        bar.set_xticks([0, 255], [f"{low:.4g}", f"{high:.4g}"])
        bar.set_yticks([])
        bar.tick_params(colors="white", labelsize=8, length=2)
        bar.set_title(label, color="white", fontsize=8)
    with atomic_path(path, suffix=path.suffix) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return path


def save_tiff(image: np.ndarray, path: Path, pixel_nm: float, bits: int = 32) -> Path:
    """ImageJ TIFF with the pixel size (nm) in its resolution tags: float32 as is (bits=32) or uint16
    scaled so the maximum is 65535 (bits=16; the scale is written to the image description)."""
    import tifffile

    path = Path(path)
    data = np.asarray(image)
    if data.ndim == 3:  # RGB -> channel stack (C, Y, X)
        data = np.moveaxis(data, -1, 0)
    metadata: dict[str, object] = {"unit": "nm", "axes": "CYX" if data.ndim == 3 else "YX"}
    if bits == 16:
        peak = float(data.max()) if data.size else 0.0
        scale = 65535.0 / peak if peak > 0 else 1.0
        data = np.clip(np.rint(data * scale), 0, 65535).astype(np.uint16)
        metadata["counts_per_unit"] = scale
    elif bits == 32:
        data = data.astype(np.float32)
    else:
        raise ValueError("TIFF bits must be 16 or 32")
    with atomic_path(path, suffix=path.suffix) as tmp:
        tifffile.imwrite(tmp, data, imagej=True, resolution=(1.0 / pixel_nm, 1.0 / pixel_nm), metadata=metadata)
    return path
