"""The canonical localization table (design §6): columns in nm, frame 0-based, x along columns, y along rows.

Readers of other formats convert into this type; writers convert out of it. Nothing else in `algorithms/`
deals with pixels-vs-nm or 1-based frames.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Canonical column names and their units. Other columns are allowed and kept as they are.
UNITS: dict[str, str] = {
    "frame": "frame (0-based)",
    "x": "nm", "y": "nm", "z": "nm",
    "sigma_x": "nm", "sigma_y": "nm", "sigma_z": "nm",  # localization precision (1 s.d.)
    "photons": "photons", "bg": "photons/px", "prob": "1",
    "channel": "index", "id": "index",
    # Written by several formats; kept canonical so conversions between them need no renaming.
    "psf_sigma_x": "nm", "psf_sigma_y": "nm",  # fitted PSF width (1 s.d.)
    "photons_sigma": "photons", "bg_sigma": "photons/px",  # uncertainty of photons / bg (1 s.d.)
}
REQUIRED = ("frame", "x", "y")
_INT_COLUMNS = {"frame", "channel", "id"}


@dataclass
class LocTable:
    """Localizations as named equal-length 1-D numpy columns plus metadata (px_size_nm, source, ...)."""

    columns: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = [c for c in REQUIRED if c not in self.columns]
        if missing:
            raise ValueError(f"localization table lacks column(s) {', '.join(missing)}")
        lengths = {name: len(np.atleast_1d(col)) for name, col in self.columns.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"columns differ in length: {lengths}")
        self.columns = {
            name: np.asarray(col, dtype=np.int64 if name in _INT_COLUMNS else np.asarray(col).dtype).ravel()
            for name, col in self.columns.items()
        }

    def __len__(self) -> int:
        return len(self.columns["frame"])

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def __contains__(self, name: str) -> bool:
        return name in self.columns

    @property
    def is_3d(self) -> bool:
        return "z" in self.columns

    def select(self, mask: np.ndarray) -> LocTable:
        """Rows where `mask` is true (boolean mask or index array), same metadata."""
        return LocTable({k: v[mask] for k, v in self.columns.items()}, dict(self.meta))

    def with_columns(self, **columns: np.ndarray) -> LocTable:
        """A copy with columns added or replaced."""
        return LocTable({**self.columns, **columns}, dict(self.meta))

    def unit(self, name: str) -> str:
        """Unit of a column: canonical ones from UNITS, others from `meta["units"]` ('' when unknown)."""
        if name in UNITS:
            return UNITS[name]
        return str(self.meta.get("units", {}).get(name, ""))

    @classmethod
    def from_arrays(cls, meta: dict[str, Any] | None = None, **columns: Any) -> LocTable:
        return cls({k: np.asarray(v) for k, v in columns.items()}, dict(meta or {}))
