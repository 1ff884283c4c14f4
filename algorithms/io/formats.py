"""Table formats by name: detection from content, reading, and atomic writing.

Conventions at this boundary (design §6): tables come out in nm with 0-based frames and x along image
columns, and the **image corner at 0 nm**: camera pixel (row i, column j) covers [j·p, (j+1)·p) in x and
[i·p, (i+1)·p) in y, its centre at ((j + 0.5)·p, (i + 0.5)·p) — the SMLM challenge's and ThunderSTORM's
convention. Picasso and DECODE count pixel positions with pixel centres at integers, so their positions
convert as (x_px + 0.5)·p (and back); ThunderSTORM `[px]` is corner-based already (x_px·p). SMAP's nm are
kept as written.

| name | files | detected by |
|---|---|---|
| `locus` | .h5 | root attribute `format = locus.localizations` |
| `picasso` | .hdf5 + .yaml | structured `/locs` dataset |
| `decode` | .h5 | `/data/xyz` and `/meta` |
| `smap` | _sml.mat | MATLAB header (v7.3: HDF5 with `saveloc/loc`; v7: MAT 5 with `saveloc`) |
| `thunderstorm` | .csv | header naming `frame`, `x`, `y` (with `[unit]`s) |
| `challenge` | .csv | header `Ground-truth,frame,xnano,...` or 3–6 numeric columns |
| `decode_csv` | .csv | first line `# DECODE EmitterSet` |
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import h5py

from algorithms.cli import BadInput
from algorithms.io import challenge, decode, locus_h5, picasso, smap, thunderstorm
from algorithms.io._common import bad
from algorithms.io._csv import first_line
from algorithms.io.table import LocTable

READERS: dict[str, Callable[..., LocTable]] = {
    "locus": locus_h5.read, "picasso": picasso.read, "decode": decode.read, "smap": smap.read,
    "thunderstorm": thunderstorm.read, "challenge": challenge.read, "decode_csv": decode.read_csv,
}
WRITERS: dict[str, Callable[..., list[Path]]] = {
    "locus": locus_h5.write, "picasso": picasso.write, "decode": decode.write, "smap": smap.write,
    "thunderstorm": thunderstorm.write, "challenge": challenge.write, "decode_csv": decode.write_csv,
}
FORMATS = tuple(READERS)
# Suffix an output of each format gets when only a folder is given (registry jobs).
DEFAULT_SUFFIX = {"locus": ".h5", "picasso": ".hdf5", "decode": ".h5", "smap": "_sml.mat",
                  "thunderstorm": ".csv", "challenge": ".csv", "decode_csv": ".csv"}
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def _hdf5_offset(path: Path) -> int | None:
    """Where the HDF5 signature is (0, or 512/1024/... after a user block such as MATLAB's), else None."""
    with open(path, "rb") as fh:
        offset = 0
        while True:
            fh.seek(offset)
            head = fh.read(8)
            if len(head) < 8:
                return None
            if head == _HDF5_MAGIC:
                return offset
            offset = 512 if offset == 0 else offset * 2
            if offset > 1 << 20:
                return None


def detect_format(path: Path) -> str:
    """The format of a table file from its content (the suffix is only a tie-breaker)."""
    path = Path(path)
    if not path.is_file():
        raise bad(path, "no such file")
    if path.stat().st_size == 0:
        raise bad(path, "file is empty")
    with open(path, "rb") as fh:
        head = fh.read(128)
    if head.startswith(b"MATLAB"):
        return "smap"
    if _hdf5_offset(path) is not None:
        try:
            with h5py.File(path, "r") as h5:
                for name, module in (("locus", locus_h5), ("picasso", picasso), ("decode", decode)):
                    if module.sniff(h5):
                        return name
        except OSError as exc:
            raise bad(path, f"HDF5 file cannot be opened (truncated or corrupt: {exc})") from None
        raise bad(path, "HDF5 file holds no localization table this reader knows (Locus, Picasso, DECODE)")
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        raise bad(path, "not a localization table (binary content of unknown kind)") from None
    line = first_line(path)
    if decode.sniff_csv(line):
        return "decode_csv"
    if challenge.sniff(line):
        return "challenge"
    if thunderstorm.sniff(line):
        return "thunderstorm"
    raise bad(path, f"CSV header {line[:80]!r} is neither ThunderSTORM (frame, x [nm], y [nm], ...) "
                    "nor SMLM-challenge")


def format_for_output(path: Path, to: str | None) -> str:
    """The format an output path asks for: `to` if given, else from its name."""
    if to:
        if to not in WRITERS:
            raise BadInput(f"unknown output format {to!r}; choose one of {', '.join(FORMATS)}")
        return to
    name = Path(path).name.lower()
    if name.endswith("_sml.mat") or name.endswith(".mat"):
        return "smap"
    if name.endswith(".hdf5"):
        return "picasso"
    if name.endswith(".h5"):
        return "locus"
    if name.endswith(".csv"):
        return "thunderstorm"
    raise BadInput(f"{Path(path).name}: cannot tell the output format from the name; pass --to FORMAT")


def read_table(path: Path | str, px_size_nm: float | None = None, fmt: str | None = None) -> LocTable:
    """Read any supported table into the canonical LocTable; every failure is a one-line BadInput."""
    path = Path(path)
    if path.suffix.lower() == ".yaml" and path.with_suffix(".hdf5").is_file():
        path = path.with_suffix(".hdf5")  # Picasso's YAML was given: its table is the .hdf5 beside it
    fmt = fmt or detect_format(path)
    if fmt not in READERS:
        raise BadInput(f"unknown input format {fmt!r}; choose one of {', '.join(FORMATS)}")
    try:
        table = READERS[fmt](path, px_size_nm=px_size_nm)
    except BadInput:
        raise
    except (OSError, KeyError, ValueError, TypeError, IndexError, NotImplementedError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise bad(path, f"cannot read as {fmt} (truncated or corrupt?): {first}") from None
    table.meta.setdefault("source_format", fmt)
    table.meta["source_file"] = path.name
    return table


def write_table(table: LocTable, path: Path | str, fmt: str | None = None, px_size_nm: float | None = None,
                **options: object) -> list[Path]:
    """Write atomically: every file of the format is written into a temporary folder beside `path`,
    then renamed into place; on any error nothing (not even a partial file) is left behind."""
    path = Path(path)
    fmt = format_for_output(path, fmt)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmpdir = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        kwargs = dict(options)
        if fmt != "locus":
            kwargs["px_size_nm"] = px_size_nm
        elif px_size_nm is not None:
            table = LocTable(dict(table.columns), {**table.meta, "px_size_nm": float(px_size_nm)})
        written = WRITERS[fmt](table, tmpdir / path.name, **kwargs)
        final = [path.parent / p.name for p in written]
        for tmp, dest in zip(written, final, strict=True):
            os.replace(tmp, dest)
        return final
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmpdir)
