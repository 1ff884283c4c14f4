"""Reading and writing canonical localization tables (nm, 0-based frames) as CSV and HDF5.

CSV: one header line of column names, then one row per localization; integer columns are written as
integers. HDF5: group ``locs`` with one dataset per column, attribute ``meta`` (JSON) and ``units``
(JSON of :data:`algorithms.io.table.UNITS` for the columns present). Both are written atomically.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from algorithms.cli import atomic_path
from algorithms.io.table import UNITS, LocTable


def write_table(table: LocTable, path: Path) -> None:
    """Write as CSV (``.csv``) or HDF5 (``.h5``/``.hdf5``), atomically."""
    path = Path(path)
    if path.suffix.lower() not in (".csv", ".h5", ".hdf5"):
        raise ValueError(f"unknown table format {path.suffix!r} (use .csv or .h5)")
    with atomic_path(path) as tmp:
        if path.suffix.lower() == ".csv":
            names = list(table.columns)
            cols = [table[n] for n in names]
            fmt = ["%d" if np.issubdtype(c.dtype, np.integer) else "%.10g" for c in cols]
            data = np.column_stack(cols) if names and len(table) else np.zeros((0, len(names)))
            np.savetxt(tmp, data, fmt=fmt, delimiter=",", header=",".join(names), comments="")
        elif path.suffix.lower() in (".h5", ".hdf5"):
            import h5py

            with h5py.File(tmp, "w") as fh:
                g = fh.create_group("locs")
                for name, col in table.columns.items():
                    g.create_dataset(name, data=col)
                g.attrs["meta"] = json.dumps(table.meta, default=str)
                g.attrs["units"] = json.dumps({k: UNITS[k] for k in table.columns if k in UNITS})


def read_table(path: Path) -> LocTable:
    """Read a table written by :func:`write_table`; ValueError with a clear message otherwise."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path} not found")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with open(path) as fh:
            header = fh.readline().strip()
        names = [n.strip() for n in header.split(",") if n.strip()]
        if not names:
            raise ValueError(f"{path} has no header line")
        try:
            data = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
        except ValueError as exc:
            raise ValueError(f"{path} is not a numeric CSV table: {exc}") from None
        if data.size == 0:
            data = np.zeros((0, len(names)))
        if data.shape[1] != len(names):
            raise ValueError(f"{path}: {data.shape[1]} values per row but {len(names)} column names")
        return LocTable({n: data[:, i] for i, n in enumerate(names)}, {"source": path.name})
    if suffix in (".h5", ".hdf5"):
        import h5py

        try:
            with h5py.File(path, "r") as fh:
                g = fh["locs"]
                cols = {name: g[name][()] for name in g}
                meta = json.loads(g.attrs.get("meta", "{}"))
        except (OSError, KeyError) as exc:
            raise ValueError(f"{path} is not a localization HDF5 file ({exc})") from None
        return LocTable(cols, meta)
    raise ValueError(f"unknown table format {path.suffix!r} (use .csv or .h5)")
