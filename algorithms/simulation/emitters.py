"""Emitters: structures (where fluorophores sit), continuous-time blinking (when they shine) and flux.

Blinking: a fluorophore switches on once at ``t0`` (frames, continuous) for an on-time ``~ Exponential(τ)``;
in frame ``f`` (the interval ``[f, f + 1)``) it emits ``flux × overlap([t0, t0 + t_on], [f, f + 1))``
photons. With ``density`` emitters per µm² per frame, ``Poisson(density · area · T / (τ + 1))`` fluorophores
are drawn for ``T`` frames, so that on average ``density · area`` of them are on in a frame (an on-time
of mean τ touches τ + 1 frames on average). Start times are uniform over ``[-3τ, T)`` (with the count
scaled to match) so the first frames are already in steady state. Ids are kept across frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Fluorophores:
    """Static fluorophores: positions in nm (x along columns), dye index, and switching times in frames."""

    x_nm: np.ndarray
    y_nm: np.ndarray
    z_nm: np.ndarray
    dye: np.ndarray
    t0: np.ndarray
    t_on: np.ndarray
    flux: np.ndarray  # photons per full frame on, (N,) or (N, C) per channel

    def __len__(self) -> int:
        return len(self.x_nm)


@dataclass
class FrameEmitters:
    """Emitter-frames: one row per fluorophore visible in a frame (photons > 0)."""

    frame: np.ndarray
    id: np.ndarray
    x_nm: np.ndarray
    y_nm: np.ndarray
    z_nm: np.ndarray
    photons: np.ndarray  # (M,) or (M, C)
    dye: np.ndarray

    def __len__(self) -> int:
        return len(self.frame)


# ------------------------------------------------------------------------------------------------ structures


def uniform_positions(
    n: int, extent_nm: tuple[float, float], z_range_nm: tuple[float, float], rng: Any
) -> tuple:
    """``n`` positions uniform in ``[0, W) × [0, H) × [z0, z1]`` with ``extent_nm = (W_nm, H_nm)``."""
    w, h = extent_nm
    return rng.uniform(0, w, n), rng.uniform(0, h, n), rng.uniform(z_range_nm[0], z_range_nm[1], n)


def filament_positions(
    n: int,
    extent_nm: tuple[float, float],
    z_range_nm: tuple[float, float],
    rng: Any,
    n_filaments: int = 10,
    persistence_nm: float = 5000.0,
    step_nm: float = 20.0,
    width_nm: float = 12.5,
) -> tuple:
    """``n`` positions on ``n_filaments`` microtubule-like worm-like chains (persistence length
    ``persistence_nm``) crossing the field, z varying smoothly within ``z_range_nm``, jittered by a
    Gaussian of ``width_nm`` (antibody linkage)."""
    w, h = extent_nm
    length = 2.0 * (w + h)
    steps = max(2, int(length / step_nm))
    pts = []
    for _ in range(max(1, n_filaments)):
        p0 = rng.uniform([0, 0], [w, h])
        angle = rng.uniform(0, 2 * np.pi)
        dtheta = rng.normal(0.0, np.sqrt(2.0 * step_nm / persistence_nm), steps)
        theta = angle + np.cumsum(dtheta)
        xy = p0 + np.cumsum(np.stack([np.cos(theta), np.sin(theta)], 1) * step_nm, axis=0)
        zc = 0.5 * (z_range_nm[0] + z_range_nm[1]) + 0.5 * (z_range_nm[1] - z_range_nm[0]) * np.sin(
            np.linspace(0, rng.uniform(0.5, 3.0) * np.pi, steps) + rng.uniform(0, 2 * np.pi)
        )
        pts.append(np.column_stack([xy, zc]))
    allp = np.concatenate(pts)
    inside = (allp[:, 0] >= 0) & (allp[:, 0] < w) & (allp[:, 1] >= 0) & (allp[:, 1] < h)
    allp = allp[inside] if inside.any() else allp
    pick = allp[rng.integers(0, len(allp), n)]
    jitter = rng.normal(0.0, width_nm, (n, 3))
    z = np.clip(pick[:, 2] + jitter[:, 2], z_range_nm[0], z_range_nm[1])
    return np.clip(pick[:, 0] + jitter[:, 0], 0, w - 1e-6), np.clip(pick[:, 1] + jitter[:, 1], 0, h - 1e-6), z


# ---------------------------------------------------------------------------------------------------- flux


def draw_flux(n: int, spec: dict[str, Any], rng: Any, n_channels: int = 1) -> np.ndarray:
    """Photons per frame when fully on. ``spec``: ``{"dist": "uniform", "low", "high"}``,
    ``{"dist": "normal", "mean", "std"}`` (clipped at 1 photon) or ``{"dist": "fixed", "value"}``;
    ``value``/``low``/``high``/``mean`` may be per-channel lists (independent channels, shape (n, C))."""
    dist = spec.get("dist", "uniform")

    def arr(key: str, default: float) -> np.ndarray:
        v = np.asarray(spec.get(key, default), dtype=np.float64)
        if np.any(v < 0):
            raise ValueError(f"flux {key} must be >= 0 photons, not {spec.get(key)}")
        return v

    if dist == "uniform":
        low, high = arr("low", 1000.0), arr("high", 5000.0)
        if np.any(high < low):
            raise ValueError("flux high must be >= low")
        shape = (n,) + np.broadcast(low, high).shape
        f = rng.uniform(0.0, 1.0, shape) * (high - low) + low
    elif dist == "normal":
        mean, std = arr("mean", 3000.0), arr("std", 500.0)
        shape = (n,) + np.broadcast(mean, std).shape
        f = np.clip(rng.normal(0.0, 1.0, shape) * std + mean, 1.0, None)
    elif dist == "fixed":
        v = arr("value", 3000.0)
        f = np.broadcast_to(v, (n,) + v.shape).astype(np.float64).copy()
    else:
        raise ValueError(f"flux dist must be uniform, normal or fixed, not {dist!r}")
    if f.ndim == 2 and f.shape[1] not in (1, n_channels):
        raise ValueError(f"per-channel flux has {f.shape[1]} values but there are {n_channels} channels")
    return f[:, 0] if f.ndim == 2 and f.shape[1] == 1 else f


# ------------------------------------------------------------------------------------------------ blinking


def sample_fluorophores(
    n_frames: int,
    extent_nm: tuple[float, float],
    rng: Any,
    density_per_um2: float | None = None,
    mean_per_frame: float | None = None,
    on_time_frames: float | list[float] = 2.0,
    z_range_nm: tuple[float, float] = (-500.0, 500.0),
    structure: str | dict[str, Any] = "uniform",
    flux: dict[str, Any] | None = None,
    n_dyes: int = 1,
    n_channels: int = 1,
    positions_nm: np.ndarray | None = None,
) -> Fluorophores:
    """Draw the fluorophores of a movie: count, positions, dye, start times, on-times and flux.

    Give either ``density_per_um2`` (emitters on per µm² per frame) or ``mean_per_frame``. ``positions_nm``
    (an (N, 2|3) array, structure 'positions') places fluorophores at user positions instead of counting.
    ``on_time_frames`` may give each dye its own mean on-time (one value per dye); each dye then keeps an
    equal share of the emitters on per frame.
    """
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, not {n_frames}")
    if not np.isscalar(on_time_frames):
        return _per_dye_on_times(n_frames, extent_nm, rng, density_per_um2, mean_per_frame, list(on_time_frames),
                                 z_range_nm, structure, flux, n_dyes, n_channels, positions_nm)
    if not on_time_frames > 0:
        raise ValueError(f"on_time_frames must be positive, not {on_time_frames}")
    w, h = extent_nm
    area_um2 = w * h * 1e-6
    if mean_per_frame is None:
        if density_per_um2 is None:
            raise ValueError("give density_per_um2 or mean_per_frame")
        mean_per_frame = density_per_um2 * area_um2
    if mean_per_frame < 0:
        raise ValueError(f"emitter density must be >= 0, not {mean_per_frame}")
    tau = float(on_time_frames)
    burn = 3.0 * tau
    kind = structure if isinstance(structure, str) else structure.get("kind", "uniform")
    opts = {} if isinstance(structure, str) else {k: v for k, v in structure.items() if k != "kind"}
    if kind == "positions" or positions_nm is not None:
        pos = np.asarray(
            positions_nm if positions_nm is not None else opts.get("positions_nm"), dtype=np.float64
        )
        if pos.ndim != 2 or pos.shape[1] not in (2, 3):
            raise ValueError("positions_nm must be an (N, 2) or (N, 3) array of nm")
        n = len(pos)
        x, y = pos[:, 0], pos[:, 1]
        z = pos[:, 2] if pos.shape[1] == 3 else np.zeros(n)
    else:
        n = int(rng.poisson(mean_per_frame * (n_frames + burn) / (tau + 1.0)))
        if kind == "uniform":
            x, y, z = uniform_positions(n, extent_nm, z_range_nm, rng)
        elif kind == "filaments":
            x, y, z = filament_positions(n, extent_nm, z_range_nm, rng, **opts)
        else:
            raise ValueError(f"structure must be uniform, filaments or positions, not {kind!r}")
    t0 = rng.uniform(-burn, n_frames, n)
    t_on = rng.exponential(tau, n)
    dye = rng.integers(0, max(1, n_dyes), n)
    f = draw_flux(n, flux or {}, rng, n_channels)
    return Fluorophores(x, y, z, dye, t0, t_on, f)


def _per_dye_on_times(n_frames: int, extent_nm: tuple[float, float], rng: Any, density_per_um2: float | None,
                      mean_per_frame: float | None, taus: list[float], z_range_nm: tuple[float, float],
                      structure: str | dict[str, Any], flux: dict[str, Any] | None, n_dyes: int, n_channels: int,
                      positions_nm: np.ndarray | None) -> Fluorophores:
    """:func:`sample_fluorophores` with a mean on-time per dye: each dye drawn as its own population (its
    share of the density), then merged; at fixed positions each site's dye is drawn and its on-time follows."""
    if len(taus) != max(1, n_dyes) or not all(t > 0 for t in taus):
        raise ValueError(f"on_time_frames needs one positive value per dye ({max(1, n_dyes)}), not {taus}")
    kind = structure if isinstance(structure, str) else structure.get("kind", "uniform")
    if kind == "positions" or positions_nm is not None:
        fl = sample_fluorophores(n_frames, extent_nm, rng, density_per_um2, mean_per_frame, 1.0, z_range_nm,
                                 structure, flux, n_dyes, n_channels, positions_nm)
        fl.t_on = rng.exponential(np.asarray(taus)[fl.dye])
        return fl
    share = None if mean_per_frame is None else mean_per_frame / len(taus)
    dens = None if density_per_um2 is None else density_per_um2 / len(taus)
    parts = [sample_fluorophores(n_frames, extent_nm, rng, dens, share, tau, z_range_nm, structure, flux, 1,
                                 n_channels) for tau in taus]
    for d, part in enumerate(parts):
        part.dye[:] = d
    return Fluorophores(*(np.concatenate([getattr(p, name) for p in parts])
                          for name in ("x_nm", "y_nm", "z_nm", "dye", "t0", "t_on", "flux")))


def frame_emitters(fl: Fluorophores, n_frames: int) -> FrameEmitters:
    """Expand fluorophores into emitter-frames with photons = flux × on-time fraction (vectorised)."""
    t1 = fl.t0 + fl.t_on
    first = np.clip(np.floor(fl.t0), 0, n_frames).astype(np.int64)
    last = np.clip(np.ceil(t1), 0, n_frames).astype(np.int64)  # exclusive
    counts = np.maximum(last - first, 0)
    idx = np.repeat(np.arange(len(fl)), counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    frame = first[idx] + offsets
    frac = np.clip(np.minimum(t1[idx], frame + 1.0) - np.maximum(fl.t0[idx], frame), 0.0, 1.0)
    flux = fl.flux[idx]
    photons = flux * (frac[:, None] if flux.ndim == 2 else frac)
    keep = frac > 0
    order = np.lexsort((idx[keep], frame[keep]))
    sel = np.flatnonzero(keep)[order]
    return FrameEmitters(
        frame[sel],
        idx[sel],
        fl.x_nm[idx[sel]],
        fl.y_nm[idx[sel]],
        fl.z_nm[idx[sel]],
        photons[sel],
        fl.dye[idx[sel]],
    )
