"""SMLM challenge CSV (EPFL 2013/2016): ground-truth activations and localization results.

Ground truth `activations.csv` has the header `Ground-truth,frame,xnano,ynano,znano,intensity`; rows are
(index 1-based, frame **1-based**, x nm, y nm, z nm, photons). Localization results for the challenge's
assessment use the same columns, often without a header; a header-less file is read by its column count:
6 = (index, frame, x, y, z, intensity), 5 = (frame, x, y, z, intensity), 4 = (frame, x, y, intensity),
3 = (frame, x, y). The format has fixed columns: other columns of a table are not written.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from algorithms.io._common import bad
from algorithms.io._csv import first_line, is_numeric_row, load_numeric, split_header, write_numeric
from algorithms.io.table import LocTable

SUFFIXES = (".csv",)
HEADER = ["Ground-truth", "frame", "xnano", "ynano", "znano", "intensity"]
_NAMES = {"ground-truth": "id", "index": "id", "id": "id", "frame": "frame", "xnano": "x", "ynano": "y",
          "znano": "z", "intensity": "photons", "x": "x", "y": "y", "z": "z"}
_BY_COUNT = {6: ["id", "frame", "x", "y", "z", "photons"], 5: ["frame", "x", "y", "z", "photons"],
             4: ["frame", "x", "y", "photons"], 3: ["frame", "x", "y"]}
COLUMNS = ("id", "frame", "x", "y", "z", "photons")


def sniff(line: str) -> bool:
    fields = split_header(line) if line else []
    if any(f.lower() in ("xnano", "ground-truth") for f in fields):
        return True
    return is_numeric_row(fields) and len(fields) in _BY_COUNT


def read(path: Path, px_size_nm: float | None = None) -> LocTable:
    fields = split_header(first_line(path))
    has_header = not is_numeric_row(fields)
    if has_header:
        names = [_NAMES.get(f.lower()) for f in fields]
        if None in names or not {"frame", "x", "y"} <= set(names):
            raise bad(path, f"unrecognised SMLM-challenge header {','.join(fields)!r}")
    elif len(fields) in _BY_COUNT:
        names = _BY_COUNT[len(fields)]
    else:
        raise bad(path, f"SMLM-challenge CSV rows must have 3 to 6 values, found {len(fields)}")
    data = load_numeric(path, skip_header=has_header, n_columns=len(names))
    columns: dict[str, np.ndarray] = {}
    for i, name in enumerate(names):
        values = data[:, i]
        if name == "frame":
            values = np.rint(values).astype(np.int64) - 1
        elif name == "id":
            values = np.rint(values).astype(np.int64)
        columns[name] = values
    meta = {"source_format": "challenge", "challenge_header": has_header}
    if px_size_nm is not None:
        meta["px_size_nm"] = float(px_size_nm)
    return LocTable(columns, meta)


def write(table: LocTable, path: Path, px_size_nm: float | None = None) -> list[Path]:
    n = len(table)
    ids = table["id"] if "id" in table else np.arange(1, n + 1)
    z = table["z"] if "z" in table else np.zeros(n)
    photons = table["photons"] if "photons" in table else np.zeros(n)
    write_numeric(path, HEADER, [ids, table["frame"] + 1, table["x"], table["y"], z, photons], quote=False)
    return [path]
