"""``python -m algorithms.evaluation compare --truth T --pred P [--outputs DIR]`` (any table format that
:mod:`algorithms.io.formats` reads: Locus .h5, ThunderSTORM / SMLM-challenge CSV, Picasso, DECODE, SMAP)."""

import argparse
import json
import math
from pathlib import Path

from algorithms.cli import BadInput, atomic_output, progress, read_params
from algorithms.evaluation.matching import AXIAL_NM, LATERAL_NM, METHODS
from algorithms.evaluation.metrics import evaluate
from algorithms.io.formats import read_table


def compare(argv):
    ap = argparse.ArgumentParser(prog="python -m algorithms.evaluation compare", description=(
        "Match predicted localizations to ground truth per frame (SMLM challenge: 250 nm lateral, "
        "500 nm axial) and print JI, precision, recall, RMSE (nm), efficiency, photon RMSE, color metrics."))
    ap.add_argument("--truth", type=Path)
    ap.add_argument("--pred", type=Path)
    ap.add_argument("--inputs", type=Path, help="folder with truth/ and pred/ slots (worker agent)")
    ap.add_argument("--outputs", type=Path, help="folder for metrics.json (printed only when absent)")
    ap.add_argument("--params", type=Path)
    ap.add_argument("--method", choices=METHODS)
    ap.add_argument("--lateral-nm", type=float)
    ap.add_argument("--axial-nm", type=float)
    args = ap.parse_args(argv)
    params = read_params(args.params)
    unknown = set(params) - {"method", "lateral_nm", "axial_nm", "px_size_nm"}
    if unknown:
        raise BadInput(f"unknown parameter(s): {', '.join(sorted(unknown))}")

    def slot(name, given):
        if given is not None:
            return given
        folder = args.inputs / name if args.inputs else None
        files = sorted(folder.iterdir()) if folder and folder.is_dir() else []
        if not files:
            raise BadInput(f"no {name} table given")
        return files[0]

    try:
        px = params.get("px_size_nm")  # for tables in pixels that do not say their pixel size
        truth = read_table(slot("truth", args.truth), px_size_nm=px)
        pred = read_table(slot("pred", args.pred), px_size_nm=px)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    out = evaluate(truth, pred, method=args.method or params.get("method", "hungarian"),
                   lateral_nm=args.lateral_nm or params.get("lateral_nm", LATERAL_NM),
                   axial_nm=args.axial_nm or params.get("axial_nm", AXIAL_NM))
    out = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()}
    progress(1.0, "compare", metrics=out)
    if args.outputs:
        with atomic_output(args.outputs / "metrics.json") as fh:
            json.dump(out, fh, indent=1)
    return 0


ENTRYPOINTS = {"compare": compare}
