"""Quality-control figures of a fit: sub-pixel histograms, σ vs z, photon ratios, a rendered preview."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from algorithms.cli import atomic_path
from algorithms.decode_plex.model import ModelConfig
from algorithms.io.table import LocTable


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def qc_plots(table: LocTable, cfg: ModelConfig, outdir: Path, dye_ratios: list[float] | None = None,
             raw: LocTable | None = None) -> list[str]:
    """Write the QC PNGs into ``outdir``; returns their file names. ``raw``: the table before de-biasing, whose
    sub-pixel histograms go beside the corrected ones (equalised histograms are flat whatever the bias was)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outdir.mkdir(parents=True, exist_ok=True)
    written = []
    px_x, px_y = cfg.px_size_nm
    rows = [("as fitted", raw), ("de-biased", table)] if raw is not None else [("", table)]
    fig, axes = plt.subplots(len(rows), 2, figsize=(8, 3 * len(rows)), squeeze=False)
    for (label, shown), pair in zip(rows, axes, strict=True):
        for ax, axis, px in ((pair[0], "x", px_x), (pair[1], "y", px_y)):
            ax.hist((shown[axis] / px) % 1.0 if len(shown) else [], bins=20, range=(0, 1))
            ax.set(xlabel=f"sub-pixel {axis} (px)", ylabel="localizations", title=label)
    fig.suptitle("sub-pixel positions (flat = unbiased" + (", before and after de-biasing)" if raw is not None
                                                            else "; not de-biased)"))
    fig.tight_layout()
    _save(fig, outdir / "qc_subpixel.png")
    written.append("qc_subpixel.png")
    if table.is_3d and "sigma_x" in table:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.scatter(table["z"], table["sigma_x"], s=2, label="σx")
        ax.scatter(table["z"], table["sigma_y"], s=2, label="σy")
        if "sigma_z" in table:
            ax.scatter(table["z"], table["sigma_z"], s=2, label="σz")
        ax.set(xlabel="z (nm)", ylabel="predicted σ (nm)")
        ax.legend()
        fig.tight_layout()
        _save(fig, outdir / "qc_sigma_vs_z.png")
        written.append("qc_sigma_vs_z.png")
    if "photons_0" in table and "photons_1" in table:
        ok = (table["photons_0"] > 0) & (table["photons_1"] > 0)
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.hist(np.log10(table["photons_1"][ok] / table["photons_0"][ok]), bins=100)
        for r in dye_ratios or []:
            ax.axvline(np.log10(r), color="k", ls="--")
        ax.set(xlabel="log10 photons ch1 / ch0", ylabel="localizations", title="photon ratios and dye peaks")
        fig.tight_layout()
        _save(fig, outdir / "qc_photon_ratio.png")
        written.append("qc_photon_ratio.png")
    fig, ax = plt.subplots(figsize=(5, 5))
    if len(table):
        pix = px_x / 5.0  # render at 1/5 of a camera pixel
        xr = (0.0, max(float(table["x"].max()), px_x))
        yr = (0.0, max(float(table["y"].max()), px_y))
        bins = (int(min(2000, max(1, (yr[1] - yr[0]) // pix))), int(min(2000, max(1, (xr[1] - xr[0]) // pix))))
        img, _, _ = np.histogram2d(table["y"], table["x"], bins=bins, range=(yr, xr))
        ax.imshow(img, cmap="magma", origin="upper", extent=(xr[0], xr[1], yr[1], yr[0]),
                  vmax=max(1.0, np.percentile(img[img > 0], 99)) if (img > 0).any() else 1.0)
    ax.set(xlabel="x (nm)", ylabel="y (nm)", title=f"{len(table)} localizations")
    fig.tight_layout()
    _save(fig, outdir / "qc_preview.png")
    written.append("qc_preview.png")
    return written
