"""Device selection: CUDA through CuPy when present, else the NumPy CPU twin. CuPy is imported lazily."""

from __future__ import annotations

import functools
from typing import Any


@functools.cache
def cuda_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    try:
        import cupy

        return int(cupy.cuda.runtime.getDeviceCount()) > 0
    except Exception:
        return False


def resolve_backend(backend: str | None = "auto") -> str:
    """'auto' → 'cuda' when a device is usable, else 'cpu'; 'cuda' without a device raises ValueError."""
    backend = (backend or "auto").lower()
    if backend not in {"auto", "cpu", "cuda"}:
        raise ValueError(f"backend must be auto, cpu or cuda, not {backend!r}")
    if backend == "auto":
        return "cuda" if cuda_available() else "cpu"
    if backend == "cuda" and not cuda_available():
        raise ValueError("backend 'cuda' asked for but CuPy or a CUDA device is not available")
    return backend


def array_module(backend: str) -> Any:
    """numpy for 'cpu', cupy for 'cuda'."""
    if backend == "cuda":
        import cupy

        return cupy
    import numpy

    return numpy
