"""`python -m algorithms.io convert IN OUT [--to FORMAT] [--px-size NM]`: table format converter.

Also the registry entrypoint `io/1.0/convert` (design §2.4):
`python -m algorithms.io convert --inputs DIR --outputs DIR --params params.json`, with the table in
`inputs/table/` (a Picasso .hdf5 with its .yaml beside it, or any single table file) and params
`{"to": FORMAT, "px_size_nm": NM | null, "smap_v73": false, "quote_header": true}`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from algorithms.cli import BadInput, atomic_output, progress, read_params
from algorithms.io.formats import DEFAULT_SUFFIX, FORMATS, read_table, write_table

DEFAULTS: dict[str, Any] = {"to": "locus", "px_size_nm": None, "smap_v73": False, "quote_header": True}
_TABLE_SUFFIXES = (".hdf5", ".h5", ".mat", ".csv")

HELP = """\
Convert a localization table between formats. Units: positions are converted through nm (Locus tables
are nm, frames 0-based, x along image columns). Formats: locus (.h5), picasso (.hdf5 + .yaml, camera px),
decode (.h5, px or nm), smap (_sml.mat, nm, 1-based frames; v7 or --smap-v73), thunderstorm (.csv, nm,
1-based frames), challenge (.csv, SMLM challenge, nm, 1-based frames), decode_csv (.csv, DECODE's CSV). The input format is detected from
the content. --px-size NM is needed when the input is in pixels and does not say its pixel size, and
when writing a pixel format from a table without one; given, it overrides a stored pixel size.
Exit codes: 0 done, 2 bad input (one line on stderr), 1 failure."""


def _options(fmt: str, smap_v73: bool, quote_header: bool) -> dict[str, Any]:
    if fmt == "smap":
        return {"v73": smap_v73}
    if fmt == "thunderstorm":
        return {"quote": quote_header}
    return {}


def convert(src: Path, dest: Path, to: str | None = None, px_size_nm: float | None = None,
            smap_v73: bool = False, quote_header: bool = True) -> list[Path]:
    """Read `src` (format detected), write `dest` (format from `to` or its name). Returns files written."""
    progress(0.0, "read", file=src.name)
    table = read_table(src, px_size_nm=px_size_nm)
    progress(0.5, "write", rows=len(table))
    from algorithms.io.formats import format_for_output

    fmt = format_for_output(dest, to)
    written = write_table(table, dest, fmt=fmt, px_size_nm=px_size_nm, **_options(fmt, smap_v73, quote_header))
    progress(1.0, "done", rows=len(table), files=[p.name for p in written])
    return written


def _job_input(inputs: Path) -> Path:
    slot = inputs / "table"
    candidates = sorted(p for p in (slot.iterdir() if slot.is_dir() else []) if p.suffix.lower() in _TABLE_SUFFIXES)
    if len(candidates) != 1:
        raise BadInput(f"input slot 'table' must hold exactly one table file (.hdf5/.h5/.mat/.csv), "
                       f"found {len(candidates)}")
    return candidates[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m algorithms.io convert", description=HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", nargs="?", type=Path, help="input table")
    parser.add_argument("dest", nargs="?", type=Path, help="output table (format from --to or its name)")
    parser.add_argument("--to", choices=FORMATS, help="output format")
    parser.add_argument("--px-size", type=float, dest="px_size_nm", metavar="NM", help="camera pixel size, nm")
    parser.add_argument("--smap-v73", action="store_true", help="write SMAP files as MATLAB v7.3 (HDF5)")
    parser.add_argument("--no-quote", action="store_true", help="ThunderSTORM header without quotes")
    parser.add_argument("--inputs", type=Path, help="registry form: folder with inputs/table/<file>")
    parser.add_argument("--outputs", type=Path, help="registry form: output folder")
    parser.add_argument("--params", type=Path, help="registry form: params JSON")
    args = parser.parse_args(argv)
    if args.inputs is not None or args.outputs is not None:
        if args.inputs is None or args.outputs is None:
            raise BadInput("the registry form needs both --inputs and --outputs")
        params = {**DEFAULTS, **read_params(args.params)}
        if params["to"] not in FORMATS:
            raise BadInput(f"params.to must be one of {', '.join(FORMATS)}")
        src = _job_input(args.inputs)
        stem = src.name[: -len("_sml.mat")] if src.name.lower().endswith("_sml.mat") else src.stem
        dest = args.outputs / f"{stem}{DEFAULT_SUFFIX[params['to']]}"
        written = convert(src, dest, params["to"], params["px_size_nm"], bool(params["smap_v73"]),
                          bool(params["quote_header"]))
        with atomic_output(args.outputs / "convert.json") as fh:
            json.dump({"input": src.name, "format": params["to"], "files": [p.name for p in written]}, fh)
        return 0
    if args.src is None or args.dest is None:
        raise BadInput("give IN and OUT (or --inputs/--outputs/--params); see --help")
    convert(args.src, args.dest, args.to, args.px_size_nm, args.smap_v73, not args.no_quote)
    return 0
