"""Quality-control report of a localization table: one HTML page and its PNGs.

Plots: sub-pixel position histograms (a gridding check: fitted positions pile up at pixel centres or
edges when the fitter is biased), photons, localization precision and PSF width distributions,
localizations per frame, the FRC curve, and the drift trace when the table carries one (columns
`drift_x`, `drift_y` in nm, or `meta["drift_nm"] = {"frame": [...], "x": [...], "y": [...]}`).
"""

from __future__ import annotations

import html
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from algorithms.io.table import LocTable
from algorithms.render.frc import frc, save_curve_png


def _figure(width: float = 5.0, height: float = 3.2):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    return fig, fig.add_subplot()


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path.name


def _hist(ax, values: np.ndarray, bins: int | np.ndarray, label: str, color: str = "C0") -> None:
    values = values[np.isfinite(values)]
    if values.size:
        ax.hist(values, bins=bins, color=color, alpha=0.7, label=label)


def subpixel_plot(table: LocTable, px_size_nm: float, path: Path) -> dict[str, float]:
    """Histogram of the position within the camera pixel; returns the χ²/dof against a flat one."""
    fig, ax = _figure()
    stats = {}
    bins = np.linspace(0, 1, 21)
    for axis, color in (("x", "C0"), ("y", "C1")):
        frac = np.mod(table[axis] / px_size_nm, 1.0)  # image corner at 0 nm: 0 and 1 are edges, 0.5 the centre
        _hist(ax, frac, bins, f"{axis} within pixel", color)
        counts, _ = np.histogram(frac, bins)
        expected = counts.sum() / len(counts)
        stats[f"subpixel_chi2_dof_{axis}"] = float(((counts - expected) ** 2 / max(expected, 1e-9)).sum()
                                                   / (len(counts) - 1)) if expected else float("nan")
    ax.set_xlabel("position within camera pixel (0 = edge, 0.5 = centre)")
    ax.set_ylabel("localizations")
    ax.set_title(f"Sub-pixel positions (pixel {px_size_nm:g} nm)")
    ax.legend(fontsize=8)
    _save(fig, path)
    return stats


def build_report(table: LocTable, out_dir: Path, px_size_nm: float | None = None, frc_pixel_nm: float | None = None,
                 n_splits: int = 5, seed: int = 0, title: str = "Localization QC") -> dict[str, Any]:
    """Write `qc.html`, its PNGs and `qc.json` into `out_dir` (all at once: built in a temp folder, then
    moved in). Returns the summary numbers."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir, prefix=".qc."))
    try:
        summary, sections = _build(table, tmp, px_size_nm, frc_pixel_nm, n_splits, seed)
        page = _html(title, table, summary, sections)
        (tmp / "qc.html").write_text(page)
        (tmp / "qc.json").write_text(json.dumps(summary, indent=2))
        for item in sorted(tmp.iterdir()):
            item.replace(out_dir / item.name)
        return summary
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _build(table: LocTable, tmp: Path, px_size_nm: float | None, frc_pixel_nm: float | None, n_splits: int,
           seed: int) -> tuple[dict[str, Any], list[tuple[str, str, str]]]:
    sections: list[tuple[str, str, str]] = []  # (heading, png name, caption)
    n = len(table)
    frames = table["frame"]
    summary: dict[str, Any] = {"localizations": n, "frames": int(frames.max() - frames.min() + 1) if n else 0}
    px = px_size_nm or table.meta.get("px_size_nm")
    if px and n:
        summary.update(subpixel_plot(table, float(px), tmp / "qc_subpixel.png"))
        sections.append(("Sub-pixel positions", "qc_subpixel.png",
                         "Flat when the fitter is unbiased; peaks at 0.5 or at the edges mean pixel locking."))
    for column, label, unit in (("photons", "Photons per localization", "photons"),
                                ("bg", "Background", "photons/px")):
        if column in table and n:
            fig, ax = _figure()
            values = np.asarray(table[column], dtype=np.float64)
            hi = np.nanpercentile(values, 99.5)
            _hist(ax, values[values <= hi], 60, column)
            ax.set_xlabel(f"{column} ({unit})")
            ax.set_ylabel("localizations")
            ax.set_title(label)
            name = f"qc_{column}.png"
            _save(fig, tmp / name)
            sections.append((label, name, f"median {np.nanmedian(values):.4g} {unit}"))
            summary[f"median_{column}"] = float(np.nanmedian(values))
    for prefix, label in (("sigma", "Localization precision"), ("psf_sigma", "PSF width")):
        present = [a for a in ("x", "y", "z") if f"{prefix}_{a}" in table]
        if present and n:
            fig, ax = _figure()
            for i, axis in enumerate(present):
                values = np.asarray(table[f"{prefix}_{axis}"], dtype=np.float64)
                hi = np.nanpercentile(values, 99.5)
                _hist(ax, values[values <= hi], 60, f"{prefix}_{axis}", f"C{i}")
                summary[f"median_{prefix}_{axis}_nm"] = float(np.nanmedian(values))
            ax.set_xlabel("nm")
            ax.set_ylabel("localizations")
            ax.set_title(label)
            ax.legend(fontsize=8)
            name = f"qc_{prefix}.png"
            _save(fig, tmp / name)
            sections.append((label, name, ", ".join(f"median {a}: {summary[f'median_{prefix}_{a}_nm']:.3g} nm"
                                                    for a in present)))
    if n:
        fig, ax = _figure(6, 3)
        counts = np.bincount(frames - frames.min())
        ax.plot(np.arange(len(counts)) + frames.min(), counts, lw=0.6)
        ax.set_xlabel("frame (0-based)")
        ax.set_ylabel("localizations")
        ax.set_title("Localizations per frame")
        _save(fig, tmp / "qc_per_frame.png")
        sections.append(("Localizations per frame", "qc_per_frame.png",
                         f"mean {counts.mean():.3g} per frame over {len(counts)} frames"))
    if n >= 100 and frames.max() > frames.min():
        pixel = frc_pixel_nm or _frc_pixel(table)
        try:
            result = frc(table["x"], table["y"], frames, pixel, n_splits=n_splits, seed=seed)
        except ValueError as exc:
            summary["frc_error"] = str(exc)
        else:
            save_curve_png(result, tmp / "qc_frc.png")
            summary["frc"] = result.as_dict()
            res = result.resolution_nm
            sections.append(("Fourier ring correlation", "qc_frc.png",
                             f"resolution {res:.1f} nm" if res else "no 1/7 crossing below Nyquist"))
    drift = _drift(table)
    if drift is not None:
        fig, ax = _figure(6, 3)
        ax.plot(drift[0], drift[1], label="x")
        ax.plot(drift[0], drift[2], label="y")
        ax.set_xlabel("frame (0-based)")
        ax.set_ylabel("drift (nm)")
        ax.set_title("Drift")
        ax.legend(fontsize=8)
        _save(fig, tmp / "qc_drift.png")
        sections.append(("Drift", "qc_drift.png", f"range x {np.ptp(drift[1]):.1f} nm, y {np.ptp(drift[2]):.1f} nm"))
    return summary, sections


def _frc_pixel(table: LocTable) -> float:
    """A pixel fine enough for the precision (a third of the median σ), but at most 4096² pixels."""
    sigma = np.nanmedian(table["sigma_x"]) if "sigma_x" in table else 10.0
    extent = max(np.ptp(table["x"]), np.ptp(table["y"]), 1.0)
    return float(max(sigma / 3.0, extent / 4096, 1.0))


def _drift(table: LocTable) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    if "drift_x" in table and "drift_y" in table:
        order = np.argsort(table["frame"], kind="stable")
        return table["frame"][order], table["drift_x"][order], table["drift_y"][order]
    meta = table.meta.get("drift_nm")
    if isinstance(meta, dict) and {"frame", "x", "y"} <= set(meta):
        return np.asarray(meta["frame"]), np.asarray(meta["x"]), np.asarray(meta["y"])
    return None


def _html(title: str, table: LocTable, summary: dict[str, Any], sections: list[tuple[str, str, str]]) -> str:
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(_fmt(v))}</td></tr>"
                   for k, v in summary.items() if not isinstance(v, dict))
    if "frc" in summary:
        res = summary["frc"]["resolution_nm"]
        rows += f"<tr><th>FRC resolution</th><td>{html.escape(_fmt(res))} nm</td></tr>"
    figures = "".join(
        f'<section><h2>{html.escape(h)}</h2><img src="{html.escape(png)}" alt="{html.escape(h)}">'
        f"<p>{html.escape(caption)}</p></section>" for h, png, caption in sections)
    source = html.escape(str(table.meta.get("source_file", "")))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:1em auto}}img{{max-width:100%}}
th{{text-align:left;padding-right:1em}}</style></head>
<body><h1>{html.escape(title)}</h1><p>{source}</p><table>{rows}</table>{figures}</body></html>
"""


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "–" if value is None else str(value)
