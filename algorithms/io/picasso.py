"""Picasso localization files: HDF5 dataset `/locs` (structured array) plus a YAML file beside it.

Picasso stores x, y, their precisions `lpx`, `lpy` and the PSF widths `sx`, `sy` in **camera pixels**
(pixel centres at integer coordinates, 0-based; ours have the image corner at 0 nm, so x_nm = (x + 0.5)·px), `frame` 0-based, `photons` in photons, `bg` in photons per
pixel and, for 3D data, `z` in nm. The YAML file holds one document per processing step (simulate,
localize, render, ...).

**Which pixel size wins.** The documents can disagree: Picasso Simulate writes `Camera.Pixelsize` for the
simulated camera, and Picasso Localize writes `Pixelsize`, the value the user entered when localizing,
which Picasso Render then uses for scale bars and nm conversions. We take the `Pixelsize` of the *last*
document that has one (the most recent processing step); `Camera.Pixelsize` is used only when no document
has `Pixelsize`. An explicit `--px-size` overrides both. For Picasso's own test file this gives 130 nm
(Localize) over 160 nm (Simulate).

YAML is read with a small reader for the flat `key: value` documents Picasso writes (no PyYAML in
`algorithms/`); the original text is kept verbatim and written back unchanged, followed by one document of
ours, so a converted file still carries its history.
"""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from algorithms.io._common import bad, extra_units, image_size_px, need_px_size
from algorithms.io.table import LocTable

SUFFIXES = (".hdf5",)
# Picasso field -> (canonical name, scale: "px" means multiply by the pixel size)
FIELD_MAP = {
    "frame": ("frame", None), "x": ("x", "px"), "y": ("y", "px"),
    "photons": ("photons", None), "sx": ("psf_sigma_x", "px"), "sy": ("psf_sigma_y", "px"),
    "bg": ("bg", None), "lpx": ("sigma_x", "px"), "lpy": ("sigma_y", "px"), "z": ("z", None),
}
# Documented dtypes of Picasso Localize output (picasso.localize / picasso.gausslq / picasso.postprocess).
PICASSO_DTYPES = {
    "frame": "u4", "x": "f4", "y": "f4", "photons": "f4", "sx": "f4", "sy": "f4", "bg": "f4",
    "lpx": "f4", "lpy": "f4", "net_gradient": "f4", "likelihood": "f4", "iterations": "i4", "z": "f4",
}
PIXEL_CENTRE = 0.5  # where a pixel's centre lies in our nm convention, in pixels from its corner
_CANONICAL_TO_PICASSO = {canon: (field, scale) for field, (canon, scale) in FIELD_MAP.items()}
_DOC_SPLIT = re.compile(r"^---\s*$", re.MULTILINE)


def _scalar(text: str) -> Any:
    text = text.strip()
    if text in ("", "null", "~", "Null", "NULL"):
        return None
    if text in ("true", "True"):
        return True
    if text in ("false", "False"):
        return False
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return re.sub(r"\\(.)", r"\1", text[1:-1])
    if len(text) >= 2 and text[0] == text[-1] == "'":
        return text[1:-1].replace("''", "'")
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_yaml_documents(text: str) -> list[dict[str, Any]]:
    """Top-level `key: value` pairs of each YAML document; nested blocks are kept as raw text."""
    docs: list[dict[str, Any]] = []
    for chunk in _DOC_SPLIT.split(text):
        doc: dict[str, Any] = {}
        last = None
        for line in chunk.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if line[0] in " \t-" and last is not None:  # continuation of a block value
                doc[last] = (doc[last] or "") + ("\n" if doc[last] else "") + line
                continue
            key, sep, value = line.partition(":")
            if not sep:
                continue
            last = key.strip()
            doc[last] = _scalar(value)
        if doc:
            docs.append(doc)
    return docs


def _yaml_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | np.integer | np.floating):
        return repr(float(value)) if isinstance(value, float | np.floating) else str(int(value))
    text = str(value)
    if re.fullmatch(r"[A-Za-z0-9 _.,()/+-]*", text) and _scalar(text) == text:
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def dump_yaml_document(doc: dict[str, Any]) -> str:
    return "".join(f"{key}: {_yaml_value(value)}\n" for key, value in doc.items())


def pixel_size_from_documents(docs: list[dict[str, Any]]) -> float | None:
    """The pixel size (nm) Picasso's documents state; see the module docstring for which one wins."""
    for key in ("Pixelsize", "Camera.Pixelsize"):
        for doc in reversed(docs):
            value = doc.get(key)
            if isinstance(value, int | float) and value > 0:
                return float(value)
    return None


def yaml_path_for(path: Path) -> Path:
    return path.with_suffix(".yaml")


def sniff(h5: h5py.File) -> bool:
    locs = h5.get("locs")
    return isinstance(locs, h5py.Dataset) and locs.dtype.names is not None and "x" in locs.dtype.names


def read(path: Path, px_size_nm: float | None = None) -> LocTable:
    yaml_path = yaml_path_for(path)
    raw_yaml = yaml_path.read_text(errors="replace") if yaml_path.exists() else ""
    docs = parse_yaml_documents(raw_yaml)
    if px_size_nm is None:
        px_size_nm = pixel_size_from_documents(docs)
    with h5py.File(path, "r") as h5:
        if not sniff(h5):
            raise bad(path, "not a Picasso file (no structured /locs dataset)")
        locs = h5["locs"][...]
    names = locs.dtype.names or ()
    missing = [f for f in ("frame", "x", "y") if f not in names]
    if missing:
        raise bad(path, f"Picasso /locs lacks field(s) {', '.join(missing)}")
    why = f"Picasso positions are in camera pixels and {yaml_path.name} " + (
        "states no Pixelsize" if yaml_path.exists() else "is missing")
    px = need_px_size(path, px_size_nm, why)
    columns: dict[str, np.ndarray] = {}
    units: dict[str, str] = {}
    for name in names:
        values = locs[name]
        canon, scale = FIELD_MAP.get(name, (name, None))
        if scale == "px":
            values = values.astype(np.float64)
            if canon in ("x", "y"):
                values = values + PIXEL_CENTRE  # Picasso: pixel centres at integers; ours: at +0.5 px
            values = values * px
        columns[canon] = values
        if canon == name and name not in FIELD_MAP:
            units[name] = "px" if name in ("std_x", "std_y") else ""
    for doc in docs:
        if isinstance(doc.get("Locus units"), str):
            with contextlib.suppress(ValueError, AttributeError):
                units.update({k: str(v) for k, v in json.loads(doc["Locus units"]).items() if k in columns})
    first = docs[0] if docs else {}
    meta: dict[str, Any] = {
        "source_format": "picasso", "px_size_nm": px, "units": units,
        "picasso_yaml": raw_yaml, "picasso_dtypes": {n: locs.dtype[n].str for n in names},
    }
    for key, meta_key in (("Width", "width_px"), ("Height", "height_px"), ("Frames", "n_frames")):
        if isinstance(first.get(key), int):
            meta[meta_key] = first[key]
    return LocTable(columns, meta)


def to_records(table: LocTable, px_size_nm: float) -> np.ndarray:
    """The table as Picasso's structured array (pixel units, Picasso field names and dtypes)."""
    stored = table.meta.get("picasso_dtypes", {}) if table.meta.get("source_format") == "picasso" else {}
    fields: list[tuple[str, np.ndarray]] = []
    for canon, column in table.columns.items():
        field, scale = _CANONICAL_TO_PICASSO.get(canon, (canon, None))
        values = column / px_size_nm if scale == "px" else column
        if scale == "px" and canon in ("x", "y"):
            values = values - PIXEL_CENTRE
        dtype = stored.get(field) or PICASSO_DTYPES.get(field) or column.dtype.str
        fields.append((field, np.asarray(values).astype(dtype)))
    order = list(PICASSO_DTYPES)
    fields.sort(key=lambda f: order.index(f[0]) if f[0] in order else len(order))
    records = np.empty(len(table), dtype=[(name, values.dtype) for name, values in fields])
    for name, values in fields:
        records[name] = values
    return records


def write(table: LocTable, path: Path, px_size_nm: float | None = None) -> list[Path]:
    """Write `path` (.hdf5) and the YAML beside it; positions go back to camera pixels."""
    px = need_px_size(path, px_size_nm or table.meta.get("px_size_nm"),
                      "Picasso stores positions in camera pixels")
    records = to_records(table, px)
    with h5py.File(path, "w") as h5:
        h5.create_dataset("locs", data=records)
    history = table.meta.get("picasso_yaml", "") if table.meta.get("source_format") == "picasso" else ""
    ours: dict[str, Any] = {}
    if not history.strip():
        width, height = image_size_px(table.meta, records["x"], records["y"])
        n_frames = table.meta.get("n_frames") or (int(records["frame"].max()) + 1 if len(records) else 0)
        ours.update({"Byte Order": "<", "Data Type": "uint16", "Frames": int(n_frames),
                     "Height": height, "Width": width})
    ours.update({"Generated by": "Locus convert", "Pixelsize": px})
    units = extra_units(table)
    if units:  # units of the columns Picasso has no convention for, as one JSON string
        ours["Locus units"] = json.dumps(units)
    text = history.rstrip("\n")
    text = (text + "\n---\n" if text else "") + dump_yaml_document(ours)
    yaml_path = yaml_path_for(path)
    yaml_path.write_text(text)
    return [path, yaml_path]
