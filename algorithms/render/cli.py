"""`python -m algorithms.render {render,frc,qc} ...` and the registry entrypoints behind them."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from algorithms.cli import BadInput, atomic_output, progress, read_params
from algorithms.io.formats import read_table
from algorithms.io.table import LocTable
from algorithms.render import images, output
from algorithms.render.frc import frc, save_curve_png
from algorithms.render.qc import build_report

RENDER_DEFAULTS: dict[str, Any] = {
    "pixel_nm": 10.0, "blur": "global", "sigma_nm": 10.0, "color_by": "none", "tiff_bits": 32,
    "scalebar_nm": None, "px_size_nm": None, "percentile": 99.5, "cmap": "hot", "z_range_nm": None,
}
FRC_DEFAULTS: dict[str, Any] = {"pixel_nm": None, "n_blocks": 20, "n_splits": 5, "seed": 0, "px_size_nm": None}
_TABLE_SUFFIXES = (".hdf5", ".h5", ".mat", ".csv")
PNG_MAX_SIDE = 32768  # matplotlib's Agg canvas refuses larger sides

RENDER_HELP = """\
Render localization tables (nm) into a super-resolution image: PNG with a scale bar and an ImageJ TIFF
(16-bit scaled or 32-bit float) whose resolution tags hold the pixel size in nm.
--blur none: 2D histogram; global: Gaussian of --sigma NM; precision: each localization's own
precision (sigma_x, sigma_y) as σ. --color-by z: hue from z (nm); channel: one colour per value of the
`channel` column, or one per input file when several are given (multicolor overlay)."""


def _inputs_from_slot(inputs: Path, slot: str = "table") -> list[Path]:
    folder = inputs / slot
    files = sorted(p for p in (folder.iterdir() if folder.is_dir() else []) if p.suffix.lower() in _TABLE_SUFFIXES)
    if not files:
        raise BadInput(f"input slot '{slot}' holds no table file (.hdf5/.h5/.mat/.csv)")
    return files


def _check_number(params: dict[str, Any], key: str, positive: bool = True) -> None:
    value = params.get(key)
    if value is None:
        return
    if not isinstance(value, int | float) or (positive and value <= 0):
        raise BadInput(f"{key} must be a positive number, got {value!r}")


def render_tables(tables: list[LocTable], params: dict[str, Any]) -> tuple[np.ndarray, images.Grid, dict[str, Any]]:
    """The image (grey (H, W) or RGB (H, W, 3)) for `params` (see RENDER_DEFAULTS), its grid and stats."""
    pixel = float(params["pixel_nm"])
    xs = np.concatenate([t["x"] for t in tables])
    ys = np.concatenate([t["y"] for t in tables])
    try:
        grid = images.Grid.around(xs, ys, pixel)
    except ValueError as exc:
        raise BadInput(str(exc)) from None

    def sigma_of(table: LocTable) -> float | np.ndarray | None:
        if params["blur"] == "none":
            return None
        if params["blur"] == "global":
            return float(params["sigma_nm"])
        if "sigma_x" not in table:
            raise BadInput("blur 'precision' needs a sigma_x column (localization precision)")
        sx = table["sigma_x"]
        return np.sqrt(sx * table["sigma_y"]) if "sigma_y" in table else sx

    if max(grid.shape) > PNG_MAX_SIDE:
        raise BadInput(f"the image would be {grid.width}×{grid.height} pixels at {pixel} nm; at most "
                       f"{PNG_MAX_SIDE} per side: use a larger pixel_nm")
    start = time.perf_counter()
    color_by = params["color_by"]
    if color_by == "z":
        if len(tables) != 1 or "z" not in tables[0]:
            raise BadInput("color_by z needs one table with a z column")
        t = tables[0]
        z_range = tuple(params["z_range_nm"]) if params.get("z_range_nm") else None
        if z_range is None:
            z_range = (float(np.nanpercentile(t["z"], 1)), float(np.nanpercentile(t["z"], 99)))
        image = images.render_z_color(t["x"], t["y"], t["z"], grid, sigma_of(t), z_range,
                                      percentile=params["percentile"])
    elif color_by == "channel":
        if len(tables) > 1:
            layers = [images.render(t["x"], t["y"], grid, sigma_of(t)) for t in tables]
        else:
            t = tables[0]
            if "channel" not in t:
                raise BadInput("color_by channel needs a channel column or several input tables")
            layers = []
            for value in np.unique(t["channel"]):
                part = t.select(t["channel"] == value)
                layers.append(images.render(part["x"], part["y"], grid, sigma_of(part)))
        try:
            image = images.overlay(layers, percentile=params["percentile"])
        except ValueError as exc:
            raise BadInput(str(exc)) from None
    else:
        sigmas = [sigma_of(t) for t in tables]
        image = sum(images.render(t["x"], t["y"], grid, s) for t, s in zip(tables, sigmas, strict=True))
    stats = {"render_s": round(time.perf_counter() - start, 3), "localizations": int(len(xs)),
             "width_px": grid.width, "height_px": grid.height, "pixel_nm": pixel,
             "origin_nm": [grid.x0_nm, grid.y0_nm]}
    if color_by == "z":
        stats["z_range_nm"] = list(z_range)  # the colormap's limits (turbo: blue low, red high)
    return image, grid, stats


def _params_from_args(args: argparse.Namespace, defaults: dict[str, Any]) -> dict[str, Any]:
    return {**defaults, **{k: v for k, v in vars(args).items() if k in defaults and v is not None}}


def _read_all(paths: list[Path], px_size_nm: float | None) -> list[LocTable]:
    tables = []
    for i, path in enumerate(paths):
        progress(0.05 + 0.25 * i / len(paths), "read", file=path.name)
        tables.append(read_table(path, px_size_nm=px_size_nm))
    return tables


def cmd_render(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m algorithms.render render", description=RENDER_HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tables", nargs="*", type=Path, help="input table(s); several = one colour each")
    parser.add_argument("--png", type=Path, help="output PNG (with scale bar)")
    parser.add_argument("--tiff", type=Path, help="output TIFF (pixel size in nm in its metadata)")
    parser.add_argument("--pixel", dest="pixel_nm", type=float, help="render pixel size, nm (default 10)")
    parser.add_argument("--blur", choices=("none", "global", "precision"))
    parser.add_argument("--sigma", dest="sigma_nm", type=float, help="global Gaussian σ, nm (default 10)")
    parser.add_argument("--color-by", dest="color_by", choices=("none", "z", "channel"))
    parser.add_argument("--bits", dest="tiff_bits", type=int, choices=(16, 32), help="TIFF bits (default 32)")
    parser.add_argument("--scalebar", dest="scalebar_nm", type=float, help="scale bar length, nm (default auto)")
    parser.add_argument("--px-size", dest="px_size_nm", type=float, help="camera pixel size, nm, for px inputs")
    parser.add_argument("--inputs", type=Path)
    parser.add_argument("--outputs", type=Path)
    parser.add_argument("--params", type=Path)
    args = parser.parse_args(argv)
    if args.inputs is not None or args.outputs is not None:
        if args.inputs is None or args.outputs is None:
            raise BadInput("the registry form needs both --inputs and --outputs")
        params = {**RENDER_DEFAULTS, **read_params(args.params)}
        paths = _inputs_from_slot(args.inputs)
        png, tiff, report = args.outputs / "render.png", args.outputs / "render.tif", args.outputs / "render.json"
    else:
        params = _params_from_args(args, RENDER_DEFAULTS)
        paths = args.tables
        if not paths or not (args.png or args.tiff):
            raise BadInput("give input table(s) and --png and/or --tiff; see --help")
        png, tiff, report = args.png, args.tiff, None
    _validate_render(params)
    tables = _read_all(paths, params["px_size_nm"])
    progress(0.3, "render", localizations=sum(len(t) for t in tables))
    image, grid, stats = render_tables(tables, params)
    progress(0.8, "write")
    if png:
        legend = ("turbo", *stats["z_range_nm"], "z (nm)") if "z_range_nm" in stats else None
        output.save_png(image, png, grid.pixel_nm, params["scalebar_nm"], cmap=params["cmap"],
                        percentile=params["percentile"], legend=legend)
    if tiff:
        output.save_tiff(image, tiff, grid.pixel_nm, bits=int(params["tiff_bits"]))
    if report:
        with atomic_output(report) as fh:
            json.dump({**stats, "inputs": [p.name for p in paths], "params": params}, fh, indent=2)
    progress(1.0, "done", metrics=stats)
    return 0


def _validate_render(params: dict[str, Any]) -> None:
    for key in ("pixel_nm", "sigma_nm", "scalebar_nm", "px_size_nm"):
        _check_number(params, key)
    if params["blur"] not in ("none", "global", "precision"):
        raise BadInput("blur must be none, global or precision")
    if params["color_by"] not in ("none", "z", "channel"):
        raise BadInput("color_by must be none, z or channel")
    if params["tiff_bits"] not in (16, 32):
        raise BadInput("tiff_bits must be 16 or 32")


def cmd_frc(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m algorithms.render frc",
                                     description="FRC resolution (nm) with time-block splits; curve PNG + JSON.")
    parser.add_argument("table", nargs="?", type=Path)
    parser.add_argument("out_dir", nargs="?", type=Path, help="folder for frc.png and frc.json")
    parser.add_argument("--pixel", dest="pixel_nm", type=float, help="histogram pixel, nm (default: σ/3)")
    parser.add_argument("--blocks", dest="n_blocks", type=int, help="time blocks (default 20)")
    parser.add_argument("--splits", dest="n_splits", type=int, help="random splits averaged (default 5)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--px-size", dest="px_size_nm", type=float)
    parser.add_argument("--inputs", type=Path)
    parser.add_argument("--outputs", type=Path)
    parser.add_argument("--params", type=Path)
    args = parser.parse_args(argv)
    if args.inputs is not None:
        params = {**FRC_DEFAULTS, **read_params(args.params)}
        path, out_dir = _inputs_from_slot(args.inputs)[0], args.outputs
    else:
        params = _params_from_args(args, FRC_DEFAULTS)
        path, out_dir = args.table, args.out_dir
    if path is None or out_dir is None:
        raise BadInput("give TABLE and OUT_DIR; see --help")
    _check_number(params, "pixel_nm")
    table = _read_all([path], params["px_size_nm"])[0]
    from algorithms.render.qc import _frc_pixel

    pixel = params["pixel_nm"] or _frc_pixel(table)
    progress(0.4, "frc", pixel_nm=pixel)
    try:
        result = frc(table["x"], table["y"], table["frame"], pixel, n_blocks=int(params["n_blocks"]),
                     n_splits=int(params["n_splits"]), seed=int(params["seed"]))
    except ValueError as exc:
        raise BadInput(f"{path.name}: {exc}") from None
    save_curve_png(result, Path(out_dir) / "frc.png")
    with atomic_output(Path(out_dir) / "frc.json") as fh:
        json.dump(result.as_dict(), fh, indent=2)
    progress(1.0, "done", metrics={"resolution_nm": result.resolution_nm})
    return 0


def cmd_qc(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m algorithms.render qc",
                                     description="QC report of a localization table: qc.html + PNGs + qc.json.")
    parser.add_argument("table", nargs="?", type=Path)
    parser.add_argument("out_dir", nargs="?", type=Path)
    parser.add_argument("--px-size", dest="px_size_nm", type=float, help="camera pixel size, nm")
    parser.add_argument("--frc-pixel", dest="frc_pixel_nm", type=float)
    parser.add_argument("--inputs", type=Path)
    parser.add_argument("--outputs", type=Path)
    parser.add_argument("--params", type=Path)
    args = parser.parse_args(argv)
    if args.inputs is not None:
        params = {"px_size_nm": None, "frc_pixel_nm": None, **read_params(args.params)}
        path, out_dir = _inputs_from_slot(args.inputs)[0], args.outputs
    else:
        params = {"px_size_nm": args.px_size_nm, "frc_pixel_nm": args.frc_pixel_nm}
        path, out_dir = args.table, args.out_dir
    if path is None or out_dir is None:
        raise BadInput("give TABLE and OUT_DIR; see --help")
    table = _read_all([path], params["px_size_nm"])[0]
    progress(0.4, "qc")
    summary = build_report(table, Path(out_dir), params["px_size_nm"], params["frc_pixel_nm"],
                           title=f"QC: {path.name}")
    progress(1.0, "done", metrics={"localizations": summary["localizations"],
                                   "frc_resolution_nm": summary.get("frc", {}).get("resolution_nm")})
    return 0


COMMANDS = {"render": cmd_render, "frc": cmd_frc, "qc": cmd_qc}


def main(argv: list[str] | None = None) -> int:
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        raise BadInput(f"usage: python -m algorithms.render {{{','.join(COMMANDS)}}} ... (--help for each)")
    return COMMANDS[argv[0]](argv[1:])
