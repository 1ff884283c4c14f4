"""Small helpers shared by the table readers and writers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from algorithms.cli import BadInput


def bad(path: Path | str, problem: str) -> BadInput:
    """A one-line input error naming the file and the problem."""
    return BadInput(f"{Path(path).name}: {problem}")


def need_px_size(path: Path | str, px_size_nm: float | None, why: str) -> float:
    """The pixel size (nm) a conversion needs; a missing or non-positive one is the user's to give."""
    if px_size_nm is None:
        # Said for both ways in: the job form's field and the command line's flag.
        raise bad(path, f"{why}; its pixel size is unknown: give the camera pixel size (Camera pixel size "
                        "(nm) in the job's form, px_size_nm in its parameters, --px-size NM on the command line)")
    px = float(px_size_nm)
    if not np.isfinite(px) or px <= 0:
        raise bad(path, f"pixel size must be a positive number of nm, got {px_size_nm!r}")
    return px


def json_safe(value: Any) -> Any:
    """Metadata made JSON-serialisable (numpy scalars and arrays become Python values)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def extra_units(table: Any) -> dict[str, str]:
    """Units of the non-canonical columns, for formats that have nowhere else to keep them."""
    from algorithms.io.table import UNITS

    return {name: table.unit(name) for name in table.columns if name not in UNITS and table.unit(name)}


def image_size_px(meta: dict[str, Any], x_px: np.ndarray, y_px: np.ndarray) -> tuple[int, int]:
    """(width, height) in camera pixels: from metadata when known, else the smallest box holding the data."""
    width, height = meta.get("width_px"), meta.get("height_px")
    if width and height:
        return int(width), int(height)
    if len(x_px) == 0:
        return 1, 1
    return int(np.ceil(np.nanmax(x_px) + 0.5)), int(np.ceil(np.nanmax(y_px) + 0.5))
