"""SMAP localization files (`*_sml.mat`): MATLAB struct `saveloc` with `saveloc.loc.<field>` columns.

SMAP writes MATLAB v7.3 (HDF5 with a 512-byte MATLAB header; columns stored as (1, N) datasets) by
default and v7 (MAT 5 format) for small files; v7.3 is read with h5py, v7 with scipy.io. Columns used:

* `frame` **1-based** -> our `frame` - 1
* `xnm`, `ynm`, `znm` (nm; x along image columns) -> `x`, `y`, `z`
* `xnmerr`, `ynmerr`, `znmerr` or `zerr` (nm, 1 s.d.) -> `sigma_x`, `sigma_y`, `sigma_z`
* `phot`, `photerr`, `bg`, `channel`, `PSFxnm`, `PSFynm` -> `photons`, `photons_sigma`, `bg`, `channel`,
  `psf_sigma_x`, `psf_sigma_y`

Every other field (`xpix`, `locprecnm`, `LLrel`, `filenumber`, ...) is kept under its own name. The pixel
size comes from `saveloc.file(1).info.cam_pixelsize_um` (µm, one value or [x, y]).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from algorithms.io._common import bad, extra_units
from algorithms.io.table import UNITS, LocTable

SUFFIXES = (".mat",)
FIELD_MAP = {
    "frame": "frame", "xnm": "x", "ynm": "y", "znm": "z", "xnmerr": "sigma_x", "ynmerr": "sigma_y",
    "znmerr": "sigma_z", "phot": "photons", "photerr": "photons_sigma", "bg": "bg", "channel": "channel",
    "PSFxnm": "psf_sigma_x", "PSFynm": "psf_sigma_y",
}
_TO_SMAP = {canon: field for field, canon in FIELD_MAP.items()}
_KNOWN_UNITS = {"xpix": "px", "ypix": "px", "xpixerr": "px", "ypixerr": "px", "PSFxpix": "px", "PSFypix": "px",
                "locprecnm": "nm", "locprecznm": "nm", "zerr": "nm", "filenumber": "index"}
_V73_HEADER = b"MATLAB 7.3 MAT-file"
UNITS_ATTR = "locus_units"  # JSON units of extra columns; SMAP itself reads only saveloc


def is_v73(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(len(_V73_HEADER)) == _V73_HEADER


def _from_fields(path: Path, fields: dict[str, np.ndarray], info: dict[str, Any]) -> LocTable:
    missing = [f for f in ("frame", "xnm", "ynm") if f not in fields]
    if missing:
        raise bad(path, f"saveloc.loc lacks field(s) {', '.join(missing)}")
    n = len(fields["frame"])
    columns: dict[str, np.ndarray] = {}
    units: dict[str, str] = {}
    for name, values in fields.items():
        values = np.asarray(values).ravel()
        if len(values) != n:
            continue  # SMAP sometimes leaves an empty placeholder field
        canon = FIELD_MAP.get(name, name)
        if name == "zerr" and "znmerr" not in fields:
            canon = "sigma_z"
        if canon == "frame":
            values = np.rint(values).astype(np.int64) - 1
        columns[canon] = values
        if canon == name and canon not in UNITS:
            units[name] = _KNOWN_UNITS.get(name, "")
    meta: dict[str, Any] = {"source_format": "smap", "units": units, "smap_field_order": list(fields)}
    px = np.asarray(info.get("cam_pixelsize_um", []), dtype=np.float64).ravel()
    if px.size:
        meta["px_size_nm"] = float(px[0]) * 1000.0
        meta["px_size_xy_nm"] = [float(px[0]) * 1000.0, float(px[-1]) * 1000.0]
    for key, meta_key in (("Width", "width_px"), ("Height", "height_px"), ("numberOfFrames", "n_frames")):
        value = np.asarray(info.get(key, []), dtype=np.float64).ravel()
        if value.size:
            meta[meta_key] = int(value[0])
    return LocTable(columns, meta)


def _read_v73(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    with h5py.File(path, "r") as h5:
        if "saveloc" not in h5 or "loc" not in h5["saveloc"]:
            raise bad(path, "MAT file has no saveloc.loc (not an SMAP _sml.mat)")
        loc = h5["saveloc/loc"]
        fields = {name: loc[name][()].ravel() for name in loc
                  if isinstance(loc[name], h5py.Dataset) and loc[name].attrs.get("MATLAB_empty", 0) == 0
                  and loc[name].dtype.kind in "fiub"}
        info: dict[str, Any] = {}
        if "file" in h5["saveloc"] and "info" in h5["saveloc/file"]:
            group = h5["saveloc/file/info"]
            if isinstance(group, h5py.Group):
                for key in ("cam_pixelsize_um", "Width", "Height", "numberOfFrames"):
                    if key in group and group[key].dtype.kind in "fiu":
                        info[key] = group[key][()]
            else:  # struct array: references to one group per file
                ref = group[()].ravel()[0]
                sub = h5[ref]
                for key in ("cam_pixelsize_um", "Width", "Height", "numberOfFrames"):
                    if key in sub:
                        info[key] = sub[key][()]
    return fields, info


def _read_v7(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    import scipy.io

    mat = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False, variable_names=["saveloc"])
    if "saveloc" not in mat or not hasattr(mat["saveloc"], "loc"):
        raise bad(path, "MAT file has no saveloc.loc (not an SMAP _sml.mat)")
    saveloc = mat["saveloc"]
    loc = saveloc.loc
    fields = {name: np.atleast_1d(getattr(loc, name)) for name in loc._fieldnames}
    fields = {k: v for k, v in fields.items() if v.dtype.kind in "fiub"}
    info: dict[str, Any] = {}
    file = getattr(saveloc, "file", None)
    if file is not None:
        file = np.atleast_1d(file)[0]
        inf = getattr(file, "info", None)
        if inf is not None:
            for key in ("cam_pixelsize_um", "Width", "Height", "numberOfFrames"):
                if hasattr(inf, key):
                    info[key] = getattr(inf, key)
    return fields, info


def _stored_units(path: Path, v73: bool) -> dict[str, str]:
    try:
        if v73:
            with h5py.File(path, "r") as h5:
                text = h5.attrs.get(UNITS_ATTR, "{}")
        else:
            import scipy.io

            mat = scipy.io.loadmat(path, squeeze_me=True, variable_names=[UNITS_ATTR])
            text = str(mat.get(UNITS_ATTR, "{}"))
        return {str(k): str(v) for k, v in json.loads(text).items()}
    except (ValueError, OSError, AttributeError):
        return {}


def read(path: Path, px_size_nm: float | None = None) -> LocTable:
    v73 = is_v73(path)
    fields, info = _read_v73(path) if v73 else _read_v7(path)
    table = _from_fields(path, fields, info)
    stored = _stored_units(path, v73)
    table.meta["units"].update({k: v for k, v in stored.items() if k in table.columns})
    if px_size_nm is not None:
        table.meta["px_size_nm"] = float(px_size_nm)
        table.meta["px_size_xy_nm"] = [float(px_size_nm)] * 2
    return table


def to_fields(table: LocTable) -> dict[str, np.ndarray]:
    """SMAP's loc fields as double column vectors (frame back to 1-based)."""
    fields: dict[str, np.ndarray] = {}
    names = dict(_TO_SMAP)
    if "zerr" in table.meta.get("smap_field_order", ()):
        names["sigma_z"] = "zerr"  # keep the name the source file used
    for canon, column in table.columns.items():
        name = names.get(canon, canon)
        values = np.asarray(column)
        if canon == "frame":
            values = values + 1
        fields[name] = values.astype(np.float32 if values.dtype == np.float32 else np.float64).reshape(-1, 1)
    return fields


def _info(table: LocTable) -> dict[str, Any]:
    px = table.meta.get("px_size_xy_nm") or ([table.meta["px_size_nm"]] * 2 if table.meta.get("px_size_nm")
                                              else None)
    info: dict[str, Any] = {}
    if px:
        info["cam_pixelsize_um"] = np.array([[px[0] / 1000.0, px[1] / 1000.0]])
    for meta_key, key in (("width_px", "Width"), ("height_px", "Height"), ("n_frames", "numberOfFrames")):
        if table.meta.get(meta_key):
            info[key] = float(table.meta[meta_key])
    if "Width" in info and "Height" in info:
        info["roi"] = np.array([[0.0, 0.0, info["Width"], info["Height"]]])  # x, y, width, height (px)
    return info


def write(table: LocTable, path: Path, px_size_nm: float | None = None, v73: bool = False) -> list[Path]:
    """Write an `_sml.mat` SMAP opens: MAT v7 (MAT 5 format) by default, v7.3 (HDF5) with `v73=True`."""
    if px_size_nm is not None:
        table = LocTable(dict(table.columns), {**table.meta, "px_size_nm": float(px_size_nm),
                                               "px_size_xy_nm": [float(px_size_nm)] * 2})
    fields = to_fields(table)
    info = _info(table)
    units = json.dumps(extra_units(table))
    if v73:
        _write_v73(path, fields, info)
        with h5py.File(path, "r+") as h5:
            h5.attrs[UNITS_ATTR] = units
        return [path]
    import scipy.io

    saveloc = {"loc": fields, "file": {"info": info, "name": ""}, "fileformat": {"name": "sml"}}
    scipy.io.savemat(path, {"saveloc": saveloc, "fileformat": {"name": "sml"}, UNITS_ATTR: units}, do_compression=True,
                     oned_as="column")
    return [path]


def _mat_attrs(obj: h5py.HLObject, matlab_class: str) -> None:
    obj.attrs["MATLAB_class"] = np.bytes_(matlab_class)


def _write_v73(path: Path, fields: dict[str, np.ndarray], info: dict[str, Any]) -> None:
    """MATLAB v7.3 layout: HDF5 with a 512-byte user block holding the MAT header, (1, N) datasets."""
    with h5py.File(path, "w", userblock_size=512) as h5:
        saveloc = h5.create_group("saveloc")
        _mat_attrs(saveloc, "struct")
        loc = saveloc.create_group("loc")
        _mat_attrs(loc, "struct")
        for name, values in fields.items():
            ds = loc.create_dataset(name, data=values.reshape(1, -1))
            _mat_attrs(ds, "single" if values.dtype == np.float32 else "double")
        file = saveloc.create_group("file")
        _mat_attrs(file, "struct")
        inf = file.create_group("info")
        _mat_attrs(inf, "struct")
        for key, value in info.items():
            _mat_attrs(inf.create_dataset(key, data=np.atleast_2d(np.asarray(value, dtype=np.float64)).T),
                       "double")
        fmt = h5.create_group("fileformat")
        _mat_attrs(fmt, "struct")
        name = fmt.create_dataset("name", data=np.frombuffer("sml".encode("utf-16-le"), np.uint16).reshape(-1, 1))
        _mat_attrs(name, "char")
        name.attrs["MATLAB_int_decode"] = np.int32(2)
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created by: Locus HDF5 schema 1.00 ."
    block = header.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM"
    with open(path, "r+b") as fh:
        fh.write(block.ljust(512, b"\x00"))
