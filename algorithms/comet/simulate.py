"""Seeded drift simulator: blinking binding sites seen through a drifting stage, with known drift.

Ground truth for the drift tests and the benchmark. Units are nm and 0-based frames (design §6).
Each binding site blinks: on-events start uniformly in time, last a geometric number of frames, and every
on-frame yields one localization with its own photon count; the localization precision scales as
1/sqrt(photons). The stage drift d(frame) is added to every localization of that frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from algorithms.io.table import LocTable

DRIFT_KINDS = ("none", "constant", "linear", "random_walk", "sinusoid", "step")


def simulate_drift(
    n_frames: int,
    kind: str = "random_walk",
    amplitude_nm: float = 100.0,
    dims: int = 2,
    seed: int = 0,
    smooth_frames: float = 400.0,
    periods: float = 2.0,
) -> np.ndarray:
    """Drift table (n_frames, dims) in nm with drift[0] = 0, except kind "constant" (a fixed offset).

    kind: "none"; "constant" (every frame shifted by the same vector: zero relative drift); "linear"
    (constant velocity, `amplitude_nm` reached at the last frame); "random_walk" (Gaussian steps smoothed
    over `smooth_frames`, scaled so its largest excursion is `amplitude_nm`); "sinusoid" (`periods`
    sine periods of amplitude `amplitude_nm`/2 plus a linear ramp to `amplitude_nm`/2); "step"
    (`amplitude_nm` jump half-way, for robustness checks). z (dims == 3) gets half the lateral amplitude.
    """
    if kind not in DRIFT_KINDS:
        raise ValueError(f"unknown drift kind {kind!r}; one of {', '.join(DRIFT_KINDS)}")
    rng = np.random.default_rng(seed)
    t = np.arange(n_frames, dtype=np.float64)
    scale = np.array([1.0, 1.0, 0.5][:dims]) * amplitude_nm
    direction = rng.normal(size=dims)
    direction /= np.linalg.norm(direction)
    if kind == "none":
        drift = np.zeros((n_frames, dims))
    elif kind == "constant":
        drift = np.tile(direction * scale, (n_frames, 1))
    elif kind == "linear":
        drift = np.outer(t / max(n_frames - 1, 1), direction * scale)
    elif kind == "random_walk":
        from scipy.ndimage import gaussian_filter1d

        steps = rng.normal(size=(n_frames, dims))
        walk = gaussian_filter1d(np.cumsum(steps, axis=0), smooth_frames, axis=0, mode="nearest")
        walk -= walk[0]
        walk /= np.abs(walk).max(axis=0, keepdims=True) + 1e-12
        drift = walk * scale
    elif kind == "sinusoid":
        phase = rng.uniform(0, 2 * np.pi, size=dims)
        u = t[:, None] / max(n_frames - 1, 1)
        drift = 0.5 * scale * (np.sin(2 * np.pi * periods * u + phase) - np.sin(phase)) + 0.5 * scale * u
    else:  # step
        drift = np.zeros((n_frames, dims))
        drift[n_frames // 2 :] = direction * scale
    return drift


@dataclass
class SimulatedDrift:
    """A simulated acquisition: the drifted table, the true drift per frame (nm) and the true sites."""

    table: LocTable
    drift: np.ndarray  # (n_frames, D) nm, added to the localizations of each frame
    sites: np.ndarray  # (n_sites, D) nm
    site_of: np.ndarray  # (N,) index of the site each localization came from, -1 for spurious ones


def simulate_localizations(
    n_locs: int = 100_000,
    n_frames: int = 10_000,
    n_sites: int | None = None,
    field_nm: float = 20_000.0,
    dims: int = 2,
    precision_nm: float = 8.0,
    z_precision_factor: float = 2.5,
    z_range_nm: float = 600.0,
    mean_on_frames: float = 2.5,
    photons_median: float = 2000.0,
    photons_spread: float = 0.4,
    spurious_fraction: float = 0.02,
    drift: np.ndarray | None = None,
    drift_kind: str = "random_walk",
    drift_amplitude_nm: float = 100.0,
    seed: int = 0,
) -> SimulatedDrift:
    """Simulate about `n_locs` localizations of blinking sites over `n_frames` frames with known drift.

    `precision_nm` is the lateral precision (1 s.d.) of a localization with `photons_median` photons;
    photons are log-normal (`photons_spread` in log units), so precision varies per localization as
    sqrt(photons_median / photons); z precision is `z_precision_factor` times the lateral one. Sites lie
    uniformly in a square of `field_nm` (and within ±`z_range_nm`/2 in z). `drift`, when given, is the
    (n_frames, dims) table to apply; otherwise one of kind `drift_kind` is made with the same seed.
    """
    rng = np.random.default_rng(seed)
    if n_sites is None:
        n_sites = max(1, n_locs // 40)
    if drift is None:
        drift = simulate_drift(n_frames, drift_kind, drift_amplitude_nm, dims, seed=seed + 1)
    drift = np.asarray(drift, dtype=np.float64)
    if drift.shape != (n_frames, dims):
        raise ValueError(f"drift must have shape {(n_frames, dims)}, got {drift.shape}")

    sites = rng.uniform(0, field_nm, size=(n_sites, dims))
    if dims == 3:
        sites[:, 2] = rng.uniform(-z_range_nm / 2, z_range_nm / 2, size=n_sites)

    n_true = int(round(n_locs * (1 - spurious_fraction)))
    n_events = max(1, int(round(n_true / mean_on_frames)))
    ev_site = rng.integers(0, n_sites, size=n_events)
    ev_start = rng.integers(0, n_frames, size=n_events)
    ev_len = rng.geometric(1.0 / mean_on_frames, size=n_events)
    loc_event = np.repeat(np.arange(n_events), ev_len)
    offset = np.arange(len(loc_event)) - np.repeat(np.cumsum(ev_len) - ev_len, ev_len)
    frame = ev_start[loc_event] + offset
    keep = frame < n_frames
    site_of = ev_site[loc_event][keep]
    frame = frame[keep]

    n_spurious = int(round(n_locs * spurious_fraction))
    frame = np.concatenate([frame, rng.integers(0, n_frames, size=n_spurious)])
    true_pos = np.concatenate([sites[site_of], rng.uniform(0, field_nm, size=(n_spurious, dims))])
    if dims == 3 and n_spurious:
        true_pos[-n_spurious:, 2] = rng.uniform(-z_range_nm / 2, z_range_nm / 2, size=n_spurious)
    site_of = np.concatenate([site_of, np.full(n_spurious, -1)])

    n = len(frame)
    photons = photons_median * np.exp(rng.normal(0.0, photons_spread, size=n))
    sigma_xy = precision_nm * np.sqrt(photons_median / photons)
    sigma = np.repeat(sigma_xy[:, None], dims, axis=1)
    if dims == 3:
        sigma[:, 2] *= z_precision_factor
    pos = true_pos + drift[frame] + rng.normal(size=(n, dims)) * sigma

    order = np.argsort(frame, kind="stable")
    cols = {"frame": frame, "x": pos[:, 0], "y": pos[:, 1], "sigma_x": sigma[:, 0], "sigma_y": sigma[:, 1]}
    if dims == 3:
        cols["z"] = pos[:, 2]
        cols["sigma_z"] = sigma[:, 2]
    cols["photons"] = photons
    cols = {k: v[order] for k, v in cols.items()}
    meta = {"source": "algorithms.comet.simulate", "seed": seed, "n_frames": n_frames}
    return SimulatedDrift(LocTable(cols, meta), drift, sites, site_of[order])


def drift_rmse(estimate: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-axis RMSE (nm) between two drift tables after removing each one's mean (the gauge)."""
    est = estimate - estimate.mean(axis=0)
    tru = truth - truth.mean(axis=0)
    return np.sqrt(np.mean((est - tru) ** 2, axis=0))
