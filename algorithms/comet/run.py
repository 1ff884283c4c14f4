"""`python -m algorithms.comet run`: estimate and remove stage drift from a localization table.

Outputs (in --outputs): the corrected table in the input's format (`<name>_undrifted.<ext>`), the drift
per frame (`drift.csv`, nm, with the split-half band), a drift plot (`drift.png`) and `summary.json`
(timings, pair counts, split-half precision). Progress is printed as JSON lines on stdout.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from algorithms.cli import BadInput, atomic_output, job_arguments, progress, read_params
from algorithms.comet.estimate import CometParams, DriftResult, correct, estimate_drift
from algorithms.comet.tableio import read_table, write_table
from algorithms.io.table import LocTable

# What a table in the `locs` slot may be; anything else there (a Picasso .yaml) is read by its table's reader.
TABLE_SUFFIXES = (".csv", ".h5", ".hdf5", ".mat")

DESCRIPTION = """\
Drift correction without fiducials (COMET-style pair overlap with a coarse pre-pass).
Input: a localization table in nm with 0-based frames (columns frame, x, y, optional z, sigma_x,
sigma_y, sigma_z in nm). Either --locs FILE, or --inputs DIR with the table in DIR/locs/.
Parameters (JSON, all optional): see algorithms/schemas/comet_run.json; lengths in nm, times in frames.
"""


def _find_locs(args: argparse.Namespace) -> Path:
    if args.locs is not None:
        return args.locs
    if args.inputs is None:
        raise BadInput("give --locs FILE or --inputs DIR (with the table in DIR/locs/)")
    folder = args.inputs / "locs"
    # Only tables: a Picasso table's .yaml travels beside it in the same folder (read by the table's reader).
    files = sorted(p for p in folder.glob("*") if p.is_file() and p.suffix.lower() in TABLE_SUFFIXES
                   ) if folder.is_dir() else []
    if len(files) != 1:
        raise BadInput(f"expected exactly one table in {folder.name}/, found {len(files)}")
    return files[0]


def validate_table(table: LocTable) -> None:
    """Refuse tables the estimator cannot use, with a one-line reason."""
    if len(table) == 0:
        raise BadInput("the localization table is empty")
    for name in ("frame", "x", "y", "z", "sigma_x", "sigma_y", "sigma_z"):
        if name in table and not np.all(np.isfinite(table[name].astype(np.float64))):
            raise BadInput(f"column {name} holds NaN or infinite values")
    if table["frame"].min() < 0:
        raise BadInput("frames must be 0-based (found a negative frame)")
    if np.unique(table["frame"]).size < 2:
        raise BadInput("all localizations are in one frame: drift needs at least two frames")
    for name in ("sigma_x", "sigma_y", "sigma_z"):
        if name in table and np.any(table[name] <= 0):
            raise BadInput(f"column {name} must be positive (localization precision in nm)")


def _arrays(table: LocTable) -> tuple[np.ndarray, np.ndarray | None]:
    axes = ["x", "y"] + (["z"] if table.is_3d else [])
    pos = np.column_stack([table[a].astype(np.float64) for a in axes])
    sig_names = [f"sigma_{a}" for a in axes]
    sigma = None
    if all(n in table for n in sig_names[:2]):
        lat = np.column_stack([table[n].astype(np.float64) for n in sig_names[:2]])
        z = [table["sigma_z"].astype(np.float64)] if table.is_3d and "sigma_z" in table else []
        if table.is_3d and not z:
            z = [2.5 * lat.mean(axis=1)]  # astigmatic z precision is about 2.5× the lateral one
        sigma = np.column_stack([lat, *z])
    return pos, sigma


def write_drift_csv(result: DriftResult, path: Path) -> None:
    d = result.drift.shape[1]
    axes = "xyz"[:d]
    cols = [np.arange(len(result.drift)), *result.drift.T]
    names = ["frame"] + [f"drift_{a}_nm" for a in axes]
    if result.band is not None:
        cols += list(result.band.T)
        names += [f"band_{a}_nm" for a in axes]
    with atomic_output(path) as fh:
        fh.write(",".join(names) + "\n")
        np.savetxt(fh, np.column_stack(cols), delimiter=",", fmt=["%d"] + ["%.4f"] * (len(cols) - 1))


def plot_drift(result: DriftResult, path: Path) -> None:
    """x, y (and z) drift against frame, with the split-half band (±|d_A - d_B|/2)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = result.drift.shape[1]
    frames = np.arange(len(result.drift))
    fig, axs = plt.subplots(d, 1, figsize=(8, 2.2 * d + 0.6), sharex=True, squeeze=False)
    for a, ax in enumerate(axs[:, 0]):
        ax.plot(frames, result.drift[:, a], lw=1.0, color=f"C{a}")
        if result.band is not None:
            band = 2.0 * result.band[:, a]  # ±2× the split-half estimate: about a 95 % band
            ax.fill_between(frames, result.drift[:, a] - band, result.drift[:, a] + band, color=f"C{a}",
                            alpha=0.3, lw=0)
        ax.set_ylabel(f"{'xyz'[a]} drift (nm)")
        ax.grid(alpha=0.3)
    title = "Drift (0 at frame 0)"
    if result.precision_nm is not None:
        title += "; split-half precision " + ", ".join(
            f"{'xyz'[a]} {v:.2f} nm" for a, v in enumerate(result.precision_nm))
    axs[0, 0].set_title(title, fontsize=9)
    axs[-1, 0].set_xlabel("frame")
    fig.tight_layout()
    with atomic_output(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    params = read_params(args.params)
    # Reading the table, not estimating: the pixel size of a table in pixels that does not say it.
    flag = getattr(args, "px_size", None)
    px_size_nm = params.pop("px_size_nm", None) if flag is None else flag
    params.pop("px_size_nm", None)
    try:
        cp = CometParams.from_dict(params)
    except (TypeError, ValueError) as exc:
        raise BadInput(f"bad parameters: {exc}") from None
    locs_path = _find_locs(args)
    progress(0.0, "read", file=locs_path.name)
    table, fmt = read_table(locs_path, px_size_nm=px_size_nm)
    validate_table(table)
    pos, sigma = _arrays(table)
    progress(0.05, "estimate", localizations=len(table), dims=pos.shape[1])

    def on_progress(frac: float, stage: str) -> None:
        progress(0.05 + 0.85 * frac, stage)

    try:
        result = estimate_drift(table["frame"], pos, sigma, cp, on_progress)
    except RuntimeError as exc:  # e.g. backend "cuda" without a device
        raise BadInput(str(exc)) from None

    out = args.outputs
    out.mkdir(parents=True, exist_ok=True)
    corrected = correct(table["frame"], pos, result.drift)
    new_cols = {a: corrected[:, k] for k, a in enumerate("xyz"[: pos.shape[1]])}
    suffix = locs_path.suffix
    write_table(table.with_columns(**new_cols), out / f"{locs_path.stem}_undrifted{suffix}", fmt)
    write_drift_csv(result, out / "drift.csv")
    plot_drift(result, out / "drift.png")
    summary = {"input": locs_path.name, "format": fmt, **result.summary()}
    summary["stats"] = {k: v for k, v in result.stats.items() if k != "params"}
    summary["params"] = asdict(cp)
    with atomic_output(out / "summary.json") as fh:
        json.dump(summary, fh, indent=2, default=float)
    metrics = {"time_s": round(result.timings["total"], 3)}
    if result.precision_nm is not None:
        metrics["split_half_precision_nm"] = [round(float(v), 3) for v in result.precision_nm]
    progress(1.0, "done", metrics=metrics)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m algorithms.comet", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="estimate and remove drift", description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    job_arguments(r)
    r.add_argument("--locs", type=Path, help="localization table: any format algorithms.io reads, or plain "
                                             "CSV/h5 in nm with 0-based frames")
    r.add_argument("--px-size", type=float, metavar="NM", help="camera pixel size for tables in pixels")
    args = parser.parse_args(argv)
    return run(args)
