"""DECODE EmitterSet files (`EmitterSet.save` to .h5, DECODE 0.10).

Layout::

    /data/xyz (N, 3)  /data/xyz_sig (N, 3)  /data/xyz_cr (N, 3)   positions, 1-s.d. errors, CRLB (variance)
    /data/phot, phot_sig, phot_cr, bg, bg_sig, bg_cr, prob, frame_ix, id, [code]
    /meta   attrs xy_unit ('px' | 'nm'), px_size [px_size_x, px_size_y] (nm)
    /decode attrs version

An empty optional field is stored as an HDF5 null dataset (shape None) and is skipped.

**Axes.** DECODE's x is the *first* image axis (rows of the frame array) and y the second (columns);
`px_size[0]` applies to x, `px_size[1]` to y. Our tables have x along columns, so DECODE's x becomes our
`y` and DECODE's y our `x`. In px units DECODE puts pixel centres at integer coordinates; our nm have the
image corner at 0, so y_nm = (x_px + 0.5)·px_size[0] and x_nm = (y_px + 0.5)·px_size[1].
`z` (and its sigma / CRLB) is in nm whatever `xy_unit` says. `frame_ix` is 0-based.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from algorithms.io._common import bad, extra_units, need_px_size
from algorithms.io._csv import check_complete
from algorithms.io.table import LocTable

SUFFIXES = (".h5", ".hdf5")
EXTRA_GROUP = "locus_extra"
PIXEL_CENTRE = 0.5  # DECODE px: pixel centres at integers; ours (nm): image corner at 0, centres at +0.5 px
FILLER_ATTR = "locus_filler_columns"
UNITS_ATTR = "locus_units"
_SCALARS = {  # DECODE field -> canonical column
    "phot": "photons", "phot_sig": "photons_sigma", "phot_cr": "photons_crlb",
    "bg": "bg", "bg_sig": "bg_sigma", "bg_cr": "bg_crlb",
    "prob": "prob", "frame_ix": "frame", "id": "id", "code": "channel",
}
_UNITS = {"photons_crlb": "photons^2", "bg_crlb": "(photons/px)^2",
          "crlb_x": "nm^2", "crlb_y": "nm^2", "crlb_z": "nm^2"}
# (DECODE column index, canonical name for xyz, _sig, _cr); DECODE x (rows) is our y.
_AXES = ((0, "y", "sigma_y", "crlb_y"), (1, "x", "sigma_x", "crlb_x"), (2, "z", "sigma_z", "crlb_z"))


def sniff(h5: h5py.File) -> bool:
    return "data" in h5 and isinstance(h5["data"], h5py.Group) and "xyz" in h5["data"] and "meta" in h5


def _decode_str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def read(path: Path, px_size_nm: float | None = None) -> LocTable:
    with h5py.File(path, "r") as h5:
        if not sniff(h5):
            raise bad(path, "not a DECODE EmitterSet file (no /data/xyz and /meta)")
        data = h5["data"]
        fields = {name: data[name][()] for name in data if data[name].shape is not None}
        xy_unit = _decode_str(h5["meta"].attrs.get("xy_unit", "")) or None
        stored_px = h5["meta"].attrs.get("px_size")
        version = _decode_str(h5["decode"].attrs.get("version", "")) if "decode" in h5 else ""
        fillers = str(h5.attrs.get(FILLER_ATTR, "")).split(",")
        stored_units = json.loads(h5.attrs.get(UNITS_ATTR, "{}"))
        extra = {name: (h5[EXTRA_GROUP][name][()], str(h5[EXTRA_GROUP][name].attrs.get("unit", "")))
                 for name in h5[EXTRA_GROUP]} if EXTRA_GROUP in h5 else {}
    xyz = np.asarray(fields.pop("xyz"), dtype=np.float64)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise bad(path, f"/data/xyz must be (N, 3), found {xyz.shape}")
    if "frame_ix" not in fields:
        raise bad(path, "DECODE file lacks /data/frame_ix")
    if px_size_nm is not None:
        px = np.array([float(px_size_nm)] * 2)
    elif stored_px is not None and np.size(stored_px) in (1, 2):
        px = np.broadcast_to(np.asarray(stored_px, dtype=np.float64).ravel(), (2,)).copy()
    else:
        px = None
    if xy_unit not in ("px", "nm"):
        raise bad(path, f"unknown xy_unit {xy_unit!r} (expected 'px' or 'nm')")
    if xy_unit == "px":
        need_px_size(path, None if px is None else float(px[0]), "DECODE positions are in pixels")
        scale = np.array([px[0], px[1], 1.0])
    else:
        scale = np.ones(3)
    columns: dict[str, np.ndarray] = {}
    shift = PIXEL_CENTRE if xy_unit == "px" else 0.0
    for idx, name, sig_name, cr_name in _AXES:
        columns[name] = (xyz[:, idx] + (shift if idx < 2 else 0.0)) * scale[idx]
        if "xyz_sig" in fields:
            columns[sig_name] = np.asarray(fields["xyz_sig"], dtype=np.float64)[:, idx] * scale[idx]
        if "xyz_cr" in fields:
            columns[cr_name] = np.asarray(fields["xyz_cr"], dtype=np.float64)[:, idx] * scale[idx] ** 2
    for field, canon in _SCALARS.items():
        if field in fields:
            columns[canon] = np.asarray(fields[field])
    for name in fillers:
        columns.pop(name, None)
    return _table(columns, extra, stored_units, version, xy_unit, px)


def _table(columns: dict[str, np.ndarray], extra: dict[str, tuple[np.ndarray, str]], stored_units: dict[str, Any],
           version: str, xy_unit: str, px: np.ndarray | None) -> LocTable:
    units = dict(_UNITS)
    units.update({k: str(v) for k, v in stored_units.items() if k in columns})
    for name, (values, unit) in extra.items():
        columns[name] = np.asarray(values)
        units[name] = unit
    meta: dict[str, Any] = {"source_format": "decode", "decode_version": version, "decode_xy_unit": xy_unit,
                            "units": units}
    if px is not None:
        meta["px_size_nm"] = float(px[1])  # along our x (columns)
        meta["px_size_xy_nm"] = [float(px[1]), float(px[0])]  # (along columns, along rows)
    return LocTable(columns, meta)


def write(table: LocTable, path: Path, px_size_nm: float | None = None) -> list[Path]:
    """Write a DECODE EmitterSet file; in px when a pixel size is known (DECODE's usual), else in nm."""
    pair = table.meta.get("px_size_xy_nm")
    if px_size_nm is not None:
        pair = [float(px_size_nm)] * 2
    elif pair is None and table.meta.get("px_size_nm"):
        pair = [float(table.meta["px_size_nm"])] * 2
    n = len(table)
    # DECODE order is (x=rows, y=columns); pair is (along columns, along rows).
    scale = np.array([pair[1], pair[0], 1.0]) if pair else np.ones(3)

    def stack(names: tuple[str, str, str], power: int) -> np.ndarray | None:
        if not any(name in table for name in names):
            return None
        out = np.full((n, 3), np.nan, dtype=np.float32)
        for i, name in enumerate(names):
            if name in table:
                out[:, i] = table[name] / scale[i] ** power
        return out

    xyz = stack(("y", "x", "z"), 1)
    if pair:
        xyz[:, :2] -= PIXEL_CENTRE  # back to DECODE's pixel centres at integers
    data: dict[str, np.ndarray | None] = {
        "xyz": xyz, "xyz_sig": stack(("sigma_y", "sigma_x", "sigma_z"), 1),
        "xyz_cr": stack(("crlb_y", "crlb_x", "crlb_z"), 2),
    }
    fillers = []  # columns DECODE requires that the table lacks; the reader drops them again
    if "z" not in table:
        data["xyz"][:, 2] = 0.0  # DECODE always has a z column; 2D data sit in focus
        fillers.append("z")
    if data["xyz_sig"] is not None and "sigma_z" not in table:
        fillers.append("sigma_z")
    for field, canon in _SCALARS.items():
        if field != "code":  # DECODE 0.10's loader hands every /data dataset to EmitterSet: no "code" there
            data[field] = np.asarray(table[canon]) if canon in table else None
    if data["id"] is None:
        data["id"] = np.full(n, -1, dtype=np.int64)  # DECODE's "no id"
        fillers.append("id")
    with h5py.File(path, "w") as h5:
        group = h5.create_group("data")
        for name, values in data.items():
            if values is None:
                group.create_dataset(name, data=h5py.Empty("f4"))
            else:
                group.create_dataset(name, data=values)
        meta = h5.create_group("meta")
        meta.attrs["xy_unit"] = "px" if pair else "nm"
        if pair:
            meta.attrs["px_size"] = np.array([pair[1], pair[0]], dtype=np.float32)
        h5.create_group("decode").attrs["version"] = "0.10.0"
        if fillers:
            h5.attrs[FILLER_ATTR] = ",".join(fillers)
        h5.attrs[UNITS_ATTR] = json.dumps(extra_units(table))
        # Columns DECODE has no field for: a group DECODE's loader does not read, so nothing is lost.
        known = {"x", "y", "z", "sigma_x", "sigma_y", "sigma_z", "crlb_x", "crlb_y", "crlb_z",
                 *(c for f, c in _SCALARS.items() if f != "code")}
        extra = [name for name in table.columns if name not in known]
        if extra:
            group = h5.create_group(EXTRA_GROUP)
            for name in extra:
                group.create_dataset(name, data=table[name]).attrs["unit"] = table.unit(name)
    return [path]


# ---- DECODE CSV (EmitterSet.save to .csv) ---------------------------------------------------------------
# Three comment lines ("# DECODE EmitterSet", "# {decode meta JSON}", "# {emitter meta JSON}" with xy_unit
# and px_size), then a pandas header: x, y, z, the scalar fields, x_cr, y_cr, z_cr, x_sig, y_sig, z_sig.
# Axes, units and empty (NaN) fields as in the .h5 file.
CSV_MAGIC = "# DECODE EmitterSet"
_CSV_AXES = {"x": 0, "y": 1, "z": 2}


def sniff_csv(line: str) -> bool:
    return line.strip().startswith(CSV_MAGIC)


def read_csv(path: Path, px_size_nm: float | None = None) -> LocTable:
    with open(path, encoding="utf-8") as fh:
        lines = [fh.readline() for _ in range(4)]
    if not sniff_csv(lines[0]) or not lines[3].strip():
        raise bad(path, "not a DECODE CSV (no '# DECODE EmitterSet' preamble and header)")
    try:
        decode_meta = json.loads(lines[1].strip().lstrip("#").strip() or "{}")
        em_meta = json.loads(lines[2].strip().lstrip("#").strip() or "{}")
    except ValueError:
        raise bad(path, "DECODE CSV metadata lines are not JSON") from None
    names = [n.strip() for n in lines[3].strip().split(",")]
    if not {"x", "y", "z", "frame_ix"} <= set(names):
        raise bad(path, "DECODE CSV header lacks x, y, z or frame_ix")
    check_complete(path)
    data = np.genfromtxt(path, delimiter=",", skip_header=4, dtype=np.float64, ndmin=2, invalid_raise=True)
    if data.size and data.shape[1] != len(names):
        raise bad(path, f"rows have {data.shape[1]} values but the header names {len(names)} columns")
    data = data.reshape(-1, len(names))
    col = {n: data[:, i] for i, n in enumerate(names)}
    xy_unit = em_meta.get("xy_unit")
    stored = em_meta.get("px_size")
    if px_size_nm is not None:
        px = np.array([float(px_size_nm)] * 2)
    elif stored is not None:
        px = np.broadcast_to(np.asarray(stored, dtype=np.float64).ravel(), (2,)).copy()
    else:
        px = None
    if xy_unit not in ("px", "nm"):
        raise bad(path, f"unknown xy_unit {xy_unit!r} (expected 'px' or 'nm')")
    if xy_unit == "px":
        need_px_size(path, None if px is None else float(px[0]), "DECODE positions are in pixels")
        scale = {"x": px[0], "y": px[1], "z": 1.0}
    else:
        scale = {"x": 1.0, "y": 1.0, "z": 1.0}
    swap = {"x": "y", "y": "x", "z": "z"}  # DECODE x (rows) is our y
    columns: dict[str, np.ndarray] = {}
    for axis in ("x", "y", "z"):
        ours = swap[axis]
        shift = PIXEL_CENTRE if xy_unit == "px" and axis != "z" else 0.0
        columns[ours] = (col[axis] + shift) * scale[axis]
        if f"{axis}_sig" in col and not np.isnan(col[f"{axis}_sig"]).all():
            columns[f"sigma_{ours}"] = col[f"{axis}_sig"] * scale[axis]
        if f"{axis}_cr" in col and not np.isnan(col[f"{axis}_cr"]).all():
            columns[f"crlb_{ours}"] = col[f"{axis}_cr"] * scale[axis] ** 2
    for field, canon in _SCALARS.items():
        if field in col and not np.isnan(col[field]).all():
            values = col[field]
            columns[canon] = np.rint(values).astype(np.int64) if canon in ("frame", "id", "channel") else values
    decode_meta = decode_meta if isinstance(decode_meta, dict) else {}
    units = decode_meta.get(UNITS_ATTR, {}) if isinstance(decode_meta.get(UNITS_ATTR), dict) else {}
    known = {"x", "y", "z", *(f"{a}_{k}" for a in "xyz" for k in ("sig", "cr")), *_SCALARS}
    extra = {name: (values, str(units.get(name, ""))) for name, values in col.items() if name not in known}
    for name in decode_meta.get(FILLER_ATTR, []) if isinstance(decode_meta.get(FILLER_ATTR), list) else []:
        columns.pop(name, None)
    table = _table(columns, extra, {}, str(decode_meta.get("version", "")), xy_unit, px)
    table.meta["source_format"] = "decode_csv"
    return table


def write_csv(table: LocTable, path: Path, px_size_nm: float | None = None) -> list[Path]:
    """DECODE's CSV layout (positions in px when a pixel size is known). Only DECODE's fields are written."""
    tmp_h5 = path.with_suffix(".tmp.h5")
    try:
        write(table, tmp_h5, px_size_nm=px_size_nm)
        with h5py.File(tmp_h5, "r") as h5:
            data = {name: h5["data"][name][()] for name in h5["data"] if h5["data"][name].shape is not None}
            meta = {k: (v.tolist() if isinstance(v, np.ndarray) else _decode_str(v)) for k, v in h5["meta"].attrs.items()}
            fillers = [f for f in str(h5.attrs.get(FILLER_ATTR, "")).split(",") if f]
    finally:
        tmp_h5.unlink(missing_ok=True)
    n = len(table)
    out: dict[str, np.ndarray] = {}
    xyz = data.pop("xyz")
    for axis, i in _CSV_AXES.items():
        out[axis] = xyz[:, i]
    for field in ("phot", "frame_ix", "id", "prob", "bg", "phot_cr", "phot_sig", "bg_cr", "bg_sig"):
        out[field] = data.get(field, np.full(n, np.nan))
    for key in ("xyz_cr", "xyz_sig"):
        block = data.get(key, np.full((n, 3), np.nan))
        for axis, i in _CSV_AXES.items():
            out[f"{axis}_{key[4:]}"] = block[:, i]
    # Columns DECODE has no field for follow DECODE's own; its CSV loader picks columns by name.
    covered = {"x", "y", "z", "sigma_x", "sigma_y", "sigma_z", "crlb_x", "crlb_y", "crlb_z",
               *(c for f, c in _SCALARS.items() if f != "code")}
    for name in table.columns:
        if name not in covered and name not in out:
            out[name] = np.asarray(table[name])
    bookkeeping = {"version": "0.10.0", UNITS_ATTR: extra_units(table), FILLER_ATTR: fillers}
    with open(path, "w", newline="") as fh:
        fh.write(f"{CSV_MAGIC}\n# {json.dumps(bookkeeping)}\n# {json.dumps(meta)}\n")
        fh.write(",".join(out) + "\n")
        for row in zip(*out.values(), strict=True):
            fh.write(",".join("" if (isinstance(v, float | np.floating) and np.isnan(v)) else
                              (str(int(v)) if isinstance(v, np.integer) else repr(float(v))) for v in row) + "\n")
    return [path]
