"""Make text from workers and users storable: PostgreSQL text and jsonb refuse NUL and lone surrogates.

Worker-reported data (progress, capabilities, logs, reasons) is cleaned rather than refused, so a job never
fails over a stray byte in its log; user-supplied params are checked and refused instead (`is_clean`).
"""

from __future__ import annotations

import math
from typing import Any

MAX_DEPTH = 20


def clean_text(text: str) -> str:
    """Drop NUL characters and replace lone surrogates with '?' (they cannot be encoded as UTF-8)."""
    return text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")


def clean_json(value: Any, depth: int = 0) -> Any:
    """`value` with every string (keys included) cleaned; anything nested deeper than MAX_DEPTH dropped."""
    if depth > MAX_DEPTH:
        return None
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_text(str(k)): clean_json(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [clean_json(v, depth + 1) for v in value]
    return value


def is_clean(value: Any) -> bool:
    return clean_json(value) == value


def non_finite_path(value: Any, path: str = "") -> str | None:
    """The dotted path of the first NaN or infinite number in `value` ('' for `value` itself), else None.

    JSON columns cannot hold them (PostgreSQL refuses, SQLite's check fails), and `1e999` parses as infinity.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return path
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = non_finite_path(item, f"{path}.{key}" if path else str(key))
        if found is not None:
            return found
    return None
