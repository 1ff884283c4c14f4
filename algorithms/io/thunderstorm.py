"""ThunderSTORM CSV: one header line of `name [unit]` (quoted by ThunderSTORM, unquoted by many scripts).

ThunderSTORM's `frame` is **1-based**; positions are in `[nm]` (default export), `[px]` or `[um]`.
Columns mapped to canonical names:

| ThunderSTORM | ours |
|---|---|
| `frame` | `frame` - 1 |
| `x`, `y`, `z` | `x`, `y`, `z` (nm) |
| `sigma` (or `sigma1`, `sigma2`) | `psf_sigma_x`, `psf_sigma_y` |
| `uncertainty_xy` (or `uncertainty`) | `sigma_x` = `sigma_y` |
| `uncertainty_z` | `sigma_z` |
| `intensity [photon]`, `offset [photon]` | `photons`, `bg` |

Other columns (`id`, `chi2`, `bkgstd`, `detections`, ...) are kept under their own name with their unit.
Position-like columns in px need the pixel size (`--px-size`), which ThunderSTORM does not write into
the CSV; so do columns without a unit. ThunderSTORM's own positions have the image corner at 0 nm; they
are kept as written.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from algorithms.io._common import bad, need_px_size
from algorithms.io._csv import first_line, load_numeric, split_header, write_numeric
from algorithms.io.table import UNITS, LocTable

SUFFIXES = (".csv",)
_HEADER_RE = re.compile(r"^\s*(?P<name>[^\[]+?)\s*(\[(?P<unit>[^\]]*)\])?\s*$")
_LENGTH = {"x", "y", "z", "sigma", "sigma1", "sigma2", "uncertainty", "uncertainty_xy", "uncertainty_z",
           "uncertainty_x", "uncertainty_y"}
# ThunderSTORM name -> canonical names it fills
_MAP = {
    "x": ("x",), "y": ("y",), "z": ("z",), "sigma": ("psf_sigma_x", "psf_sigma_y"),
    "sigma1": ("psf_sigma_x",), "sigma2": ("psf_sigma_y",), "uncertainty_xy": ("sigma_x", "sigma_y"),
    "uncertainty": ("sigma_x", "sigma_y"), "uncertainty_x": ("sigma_x",), "uncertainty_y": ("sigma_y",),
    "uncertainty_z": ("sigma_z",), "intensity": ("photons",), "offset": ("bg",),
}
_NM_PER = {"nm": 1.0, "um": 1000.0, "µm": 1000.0, "μm": 1000.0, "microns": 1000.0}


def parse_header(line: str) -> list[tuple[str, str | None]]:
    """[(name, unit or None)] from a header line."""
    out = []
    for field in split_header(line):
        match = _HEADER_RE.match(field)
        if not match:
            out.append((field, None))
        else:
            out.append((match["name"].strip(), match["unit"].strip() if match["unit"] is not None else None))
    return out


def sniff(line: str) -> bool:
    names = {name for name, _ in parse_header(line)} if line else set()
    return {"x", "y"} <= names and "frame" in names


def read(path: Path, px_size_nm: float | None = None) -> LocTable:
    header = parse_header(first_line(path))
    names = [n for n, _ in header]
    if not {"frame", "x", "y"} <= set(names):
        raise bad(path, "ThunderSTORM CSV header must name frame, x and y")
    data = load_numeric(path, skip_header=True, n_columns=len(header))
    columns: dict[str, np.ndarray] = {}
    units: dict[str, str] = {}
    for i, (name, unit) in enumerate(header):
        values = data[:, i]
        targets = _MAP.get(name, (name,))
        if name == "frame":
            columns["frame"] = np.rint(values).astype(np.int64) - 1
            continue
        if name in _LENGTH:
            if unit is None or unit == "px":
                why = f"column {name!r} is in " + ("pixels" if unit == "px" else "unknown units (no [unit])")
                values = values * need_px_size(path, px_size_nm, why)
            elif unit in _NM_PER:
                values = values * _NM_PER[unit]
            else:
                raise bad(path, f"column {name!r} has unit [{unit}], expected nm, um or px")
        elif name in ("intensity", "offset") and unit not in (None, "photon", "photons"):
            targets = (name,)  # not photons (e.g. digital units): kept as written
        if name == "id":
            values = np.rint(values).astype(np.int64)
        for target in targets:
            columns[target] = values
            if target not in UNITS:
                units[target] = unit or ""
    meta: dict[str, Any] = {"source_format": "thunderstorm", "units": units,
                            "thunderstorm_header": [[n, u] for n, u in header]}
    if px_size_nm is not None:
        meta["px_size_nm"] = float(px_size_nm)
    return LocTable(columns, meta)


def _columns_out(table: LocTable) -> list[tuple[str, str, np.ndarray]]:
    """(ThunderSTORM name, unit, values) in ThunderSTORM's usual order."""
    out: list[tuple[str, str, np.ndarray]] = []
    used: set[str] = set()

    def take(ts_name: str, unit: str, *canon: str) -> None:
        if all(c in table for c in canon) and not any(c in used for c in canon):
            out.append((ts_name, unit, table[canon[0]]))
            used.update(canon)

    if "id" in table:
        out.append(("id", "", table["id"]))
        used.add("id")
    out.append(("frame", "", table["frame"] + 1))
    used.add("frame")
    for axis in ("x", "y", "z"):
        take(axis, "nm", axis)
    for pair, single, first, second in (
        (("psf_sigma_x", "psf_sigma_y"), "sigma", "sigma1", "sigma2"),
        (("sigma_x", "sigma_y"), "uncertainty_xy", "uncertainty_x", "uncertainty_y"),
    ):
        both = all(c in table for c in pair) and not any(c in used for c in pair)
        if both and np.array_equal(table[pair[0]], table[pair[1]]):
            take(single, "nm", *pair)
            continue
        if both and (single == "uncertainty_xy" or not table.is_3d):
            # Picasso's import_ts reads `uncertainty_xy` (and `sigma` in 2D) only: their mean square root
            # goes first, the exact x and y after it (read later, they are what this reader keeps).
            out.append((single, "nm", np.sqrt((table[pair[0]] ** 2 + table[pair[1]] ** 2) / 2)))
        take(first, "nm", pair[0])
        take(second, "nm", pair[1])
    take("intensity", "photon", "photons")
    take("offset", "photon", "bg")
    take("uncertainty_z", "nm", "sigma_z")
    for name in table.columns:
        if name not in used:
            out.append((name, table.unit(name), table[name]))
    return out


def write(table: LocTable, path: Path, px_size_nm: float | None = None, quote: bool = True) -> list[Path]:
    cols = _columns_out(table)
    header = [f"{name} [{unit}]" if unit else name for name, unit, _ in cols]
    write_numeric(path, header, [values for _, _, values in cols], quote=quote)
    return [path]
