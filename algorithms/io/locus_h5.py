"""Our own table file: HDF5 with one dataset per column, each carrying its unit.

Layout (version 1)::

    /                      attrs: format = "locus.localizations", version = 1, meta = JSON object
    /localizations/<name>  1-D dataset per column, attr unit = "nm" | "frame (0-based)" | ...

Columns are stored with their own dtype, so a round trip is exact.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from algorithms.io._common import bad, json_safe
from algorithms.io.table import LocTable

FORMAT_TAG = "locus.localizations"
VERSION = 1
SUFFIXES = (".h5", ".hdf5")


def sniff(h5: h5py.File) -> bool:
    return h5.attrs.get("format") == FORMAT_TAG


def read(path: Path, px_size_nm: float | None = None) -> LocTable:
    """Read a Locus table file. `px_size_nm`, when given, replaces the stored pixel size (metadata only)."""
    with h5py.File(path, "r") as h5:
        if not sniff(h5):
            raise bad(path, "not a Locus localization file (no format attribute)")
        version = int(h5.attrs.get("version", 0))
        if version > VERSION:
            raise bad(path, f"written by a newer Locus (format version {version} > {VERSION})")
        if "localizations" not in h5:
            raise bad(path, "has no /localizations group")
        group = h5["localizations"]
        columns = {name: group[name][...] for name in group}
        units = {name: str(group[name].attrs.get("unit", "")) for name in group}
        meta = json.loads(h5.attrs.get("meta", "{}"))
    meta.setdefault("units", {})
    for name, unit in units.items():
        meta["units"].setdefault(name, unit)
    if px_size_nm is not None:
        meta["px_size_nm"] = float(px_size_nm)
    try:
        return LocTable(columns, meta)
    except ValueError as exc:
        raise bad(path, str(exc)) from None


def write(table: LocTable, path: Path) -> list[Path]:
    with h5py.File(path, "w") as h5:
        h5.attrs["format"] = FORMAT_TAG
        h5.attrs["version"] = VERSION
        h5.attrs["meta"] = json.dumps(json_safe(table.meta))
        group = h5.create_group("localizations")
        for name, column in table.columns.items():
            ds = group.create_dataset(name, data=np.asarray(column), compression="gzip", compression_opts=1,
                                      shuffle=True)
            ds.attrs["unit"] = table.unit(name)
    return [path]
