"""The one I/O boundary of the drift CLI: read a localization table, write it back in the same format.

Every format of `algorithms.io.formats` (Locus h5, ThunderSTORM, Picasso, DECODE, SMAP, SMLM challenge)
is read and written through it. Two plain layouts that those readers do not take are handled here:

- CSV: a header of canonical column names (`frame,x,y[,z],sigma_x,...`), nm and 0-based frames; a unit
  may be spelled in the header (`x [nm]`, `x_nm`), and any unit other than nm is refused;
- h5: one 1-D dataset per column at the root and a root attribute `units = "nm"`.
"""

from __future__ import annotations

import csv
import importlib
import re
import warnings
from pathlib import Path

import numpy as np

from algorithms.cli import BadInput
from algorithms.io.table import REQUIRED, LocTable

_HEADER_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*?)(?:_(nm|px|um|frame))?\s*(?:\[\s*([^\]]*)\s*\])?\s*$")
_LENGTH_COLUMNS = {"x", "y", "z", "sigma_x", "sigma_y", "sigma_z"}


def _shared_formats():
    try:
        return importlib.import_module("algorithms.io.formats")
    except ImportError:
        return None


def read_table(path: Path, px_size_nm: float | None = None) -> tuple[LocTable, str]:
    """The table in `path` and a format tag for `write_table`. Bad files raise BadInput."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"localization file {path.name} not found")
    plain = _plain_layout(path)
    if plain == "csv":
        return _read_csv(path), "csv"
    if plain == "h5":
        return _read_h5(path), "h5"
    shared = _shared_formats()
    if shared is not None and hasattr(shared, "read_table"):
        try:
            table = shared.read_table(path, px_size_nm=px_size_nm)
            return table, "shared"
        except (ValueError, KeyError) as exc:
            raise BadInput(f"{path.name}: {exc}") from None
    raise BadInput(f"{path.name}: unsupported table format {path.suffix or '(no suffix)'}; use .csv or .h5")


def _plain_layout(path: Path) -> str | None:
    """'csv' / 'h5' for the plain layouts of this module's docstring, None for anything else.

    A CSV is plain when its header names canonical columns without a bracketed unit (ThunderSTORM spells
    `x [nm]` and counts frames from 1, so it must go through the shared reader); an h5 is plain when its root
    says `units = nm` and holds a `frame` dataset.
    """
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with path.open(newline="", errors="replace") as fh:
            header = next(csv.reader(fh), None)
        if not header:
            return "csv"  # empty: let the plain reader say so
        if header[0].lstrip().startswith("#") or {h.strip().lower() for h in header} & {"xnano", "ground-truth"}:
            return None  # DECODE's commented header or the SMLM challenge's: the shared readers know them
        return None if any("[" in h or '"' in h for h in header) else "csv"
    if suffix in (".h5", ".hdf5"):
        import h5py

        try:
            with h5py.File(path, "r") as f:
                return "h5" if "units" in f.attrs or ("frame" in f and isinstance(f["frame"], h5py.Dataset)) else None
        except OSError:
            return "h5"  # unreadable: the plain reader gives the one-line error
    return None


def write_table(table: LocTable, path: Path, fmt: str) -> None:
    """Write `table` to `path` in format `fmt` (atomically: temp file, then rename)."""
    from algorithms.cli import atomic_output

    if fmt == "shared":
        _shared_formats().write_table(table, path)
        return
    if fmt == "csv":
        names = list(table.columns)
        data = np.column_stack([table[n].astype(np.float64) for n in names])
        ints = {n for n in names if np.issubdtype(table[n].dtype, np.integer)}
        with atomic_output(path) as fh:
            fh.write(",".join(names) + "\n")
            fmts = ["%d" if n in ints else "%.6f" for n in names]
            np.savetxt(fh, data, delimiter=",", fmt=fmts)
        return
    import h5py

    with atomic_output(path, "wb") as fh, h5py.File(fh, "w") as f:
        f.attrs["units"] = "nm"
        f.attrs["frame_origin"] = 0
        f.attrs["columns"] = ",".join(table.columns)  # h5 groups iterate alphabetically: keep the order
        for name, col in table.columns.items():
            f.create_dataset(name, data=col)


def _canonical(name: str) -> str:
    m = _HEADER_RE.match(name)
    if not m:
        return name.strip()
    base, suffix_unit, bracket_unit = m.group(1), m.group(2), m.group(3)
    unit = (bracket_unit or suffix_unit or "").strip().lower()
    if base in _LENGTH_COLUMNS and unit and unit != "nm":
        raise BadInput(f"column {name!r} is in {unit}; this reader needs nm (convert, or use the shared readers)")
    return base


def _read_csv(path: Path) -> LocTable:
    with path.open(newline="") as fh:
        header = next(csv.reader(fh), None)
    if not header:
        raise BadInput(f"{path.name} is empty")
    names = [_canonical(h) for h in header]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data": reported below
            data = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    except ValueError as exc:
        raise BadInput(f"{path.name}: not a numeric CSV table ({exc})") from None
    if data.size == 0:
        raise BadInput(f"{path.name} holds no localizations")
    if data.shape[1] != len(names):
        raise BadInput(f"{path.name}: header has {len(names)} columns, rows have {data.shape[1]}")
    return _to_table({n: data[:, k] for k, n in enumerate(names)}, path)


def _read_h5(path: Path) -> LocTable:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            unit = f.attrs.get("units")
            if isinstance(unit, bytes):
                unit = unit.decode()
            if unit is None:
                raise BadInput(f"{path.name} does not state its units (root attribute units = 'nm')")
            if str(unit).lower() != "nm":
                raise BadInput(f"{path.name} is in {unit}; this reader needs nm")
            cols = {name: np.asarray(ds[()]) for name, ds in f.items() if isinstance(ds, h5py.Dataset)}
            order = f.attrs.get("columns")
            if order is not None:
                order = order.decode() if isinstance(order, bytes) else str(order)
                names = [n for n in order.split(",") if n in cols]
                cols = {n: cols[n] for n in names + [n for n in cols if n not in names]}
    except OSError as exc:
        raise BadInput(f"{path.name} is not a readable h5 file ({exc})") from None
    return _to_table(cols, path)


def _to_table(cols: dict[str, np.ndarray], path: Path) -> LocTable:
    missing = [c for c in REQUIRED if c not in cols]
    if missing:
        raise BadInput(f"{path.name} lacks column(s) {', '.join(missing)}")
    frame = np.asarray(cols["frame"], dtype=np.float64)
    if np.isnan(frame).any():
        raise BadInput(f"{path.name}: frame column holds NaN")
    if frame.size and not np.all(frame == np.round(frame)):
        raise BadInput(f"{path.name}: frame column holds non-integer values")
    try:
        return LocTable({k: (np.round(v).astype(np.int64) if k == "frame" else v) for k, v in cols.items()},
                        {"source": path.name})
    except ValueError as exc:
        raise BadInput(f"{path.name}: {exc}") from None
