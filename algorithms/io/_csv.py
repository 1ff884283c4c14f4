"""Reading and writing numeric CSV tables with one header line (quoted or not)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from algorithms.io._common import bad


def first_line(path: Path, size: int = 4096) -> str:
    with open(path, "rb") as fh:
        head = fh.read(size)
    return head.decode("utf-8-sig", "replace").splitlines()[0] if head.strip() else ""


def split_header(line: str) -> list[str]:
    """The header's names. A spreadsheet that re-saves a quoted header can wrap the whole line in one more
    pair of quotes, doubling the inner ones (a line starting ``"id,""frame"",``): one field holding the real
    header, which is split again."""
    names = [name.strip() for name in next(csv.reader(io.StringIO(line), skipinitialspace=True), [])]
    if len(names) == 1 and "," in names[0]:
        return split_header(names[0])
    return names


def is_numeric_row(fields: list[str]) -> bool:
    try:
        [float(f) for f in fields]
    except ValueError:
        return False
    return bool(fields)


def check_complete(path: Path) -> None:
    """A table cut inside its last number still parses; every writer we know ends with a newline."""
    with open(path, "rb") as fh:
        fh.seek(0, 2)
        if fh.tell() == 0:
            raise bad(path, "file is empty")
        fh.seek(-1, 2)
        if fh.read(1) not in (b"\n", b"\r"):
            raise bad(path, "last line does not end with a newline: the file looks truncated "
                            "(add the newline if it is complete)")


def load_numeric(path: Path, skip_header: bool, n_columns: int) -> np.ndarray:
    """All data rows as a float64 (N, n_columns) array; malformed rows are a one-line error."""
    check_complete(path)
    try:
        data = np.loadtxt(path, delimiter=",", skiprows=1 if skip_header else 0, ndmin=2, dtype=np.float64,
                          encoding="utf-8-sig", quotechar='"')
    except ValueError as exc:
        raise bad(path, f"malformed CSV row ({str(exc).splitlines()[0]})") from None
    if data.size == 0:
        return np.empty((0, n_columns))
    if data.shape[1] != n_columns:
        raise bad(path, f"rows have {data.shape[1]} values but the header names {n_columns} columns")
    return data


def write_numeric(path: Path, header: list[str], columns: list[np.ndarray], quote: bool) -> None:
    """Integers as integers, float32 with 9 and float64 with 17 significant digits (exact round trip)."""
    fmts = []
    for col in columns:
        kind = np.asarray(col).dtype
        fmts.append("%d" if kind.kind in "iub" else ("%.9g" if kind == np.float32 else "%.17g"))
    names = [f'"{h}"' if quote else h for h in header]
    with open(path, "w", newline="") as fh:
        fh.write(",".join(names) + "\n")
        if columns and len(columns[0]):
            data = np.empty((len(columns[0]), len(columns)), dtype=object)
            for i, col in enumerate(columns):
                data[:, i] = col
            np.savetxt(fh, data, delimiter=",", fmt=fmts)
