"""From per-pixel network outputs to a localization table; filters, de-biasing, color assignment.

- :func:`extract`: spatial integration — a candidate is a pixel whose probability is the maximum of
  its 3×3 neighbourhood; its *integrated* probability is the 3×3 sum (clipped to 1), which collects
  the mass a hard case spreads over neighbours. Candidates with integrated probability ≥
  ``prob_threshold`` become localizations at pixel centre + predicted offset (design §6 table: nm,
  0-based frames, x along columns; pixel j spans [j, j+1)·px, so its centre is (j + 0.5)·px), by
  default averaged over the 3×3 neighbourhood with weights probability / σ² (:func:`neighbourhood_positions`).
- :func:`filter_table`: probability and σ filters.
- :func:`debias`: sub-pixel histogram equalisation per z slab (default 50 nm), each localization's
  weight in the histogram being 1/σ² (precise ones define the histogram). It assumes uniform true sub-pixel
  positions, so ``fit`` runs it only where :func:`pixel_locked_bias` finds a bias that is the same all over
  the field (``debias: "auto"``, the default).
- :func:`assign_colors`: photon-ratio likelihood per dye, posterior with a flat prior, rejection
  (code −1) below ``min_posterior`` (0.9); :func:`find_dye_ratios` finds the ratios by expectation-maximisation.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - torch convention

from algorithms.decode_plex.model import ModelConfig
from algorithms.io.table import LocTable


def integrated_probability(prob: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(is local maximum, 3×3 summed probability) for probabilities (N, K, H, W)."""
    is_max = prob >= F.max_pool2d(prob, 3, stride=1, padding=1)
    # Two adjacent maxima are necessarily equal: keep only the first in raster order (no double detections).
    _, _, h, w = prob.shape
    order = torch.arange(h * w, dtype=prob.dtype, device=prob.device).view(1, 1, h, w)
    neg = torch.where(is_max, -order, torch.full_like(prob, -float(h * w + 1)))
    is_max &= -F.max_pool2d(neg, 3, stride=1, padding=1) == order
    summed = F.avg_pool2d(prob, 3, stride=1, padding=1, count_include_pad=True) * 9.0
    return is_max, summed.clamp(max=1.0)


def neighbourhood_positions(out: dict[str, torch.Tensor], n_ph: int) -> torch.Tensor:
    """(N, 2, H, W) x, y (px) per pixel: the average of the 3×3 neighbourhood's predicted positions
    (pixel centre + offset), each weighted by its probability / σ² on that axis.

    Several pixels around an emitter predict its position with independent-ish errors; averaging them
    with their own precisions is less noisy than the one peak pixel's offset and, being a weighted mean
    of unbiased estimates, adds no bias.
    """
    off, sig, prob = out["offset"].float(), out["sigma"].float(), out["prob"].float().sum(1, keepdim=True)
    _, _, h, w = off.shape
    xs = torch.arange(w, dtype=off.dtype, device=off.device).view(1, 1, w) + 0.5
    ys = torch.arange(h, dtype=off.dtype, device=off.device).view(1, h, 1) + 0.5
    pos = torch.stack([off[:, 0] + xs, off[:, 1] + ys], dim=1)
    wgt = prob / sig[:, n_ph : n_ph + 2].clamp(min=1e-3) ** 2
    num = F.avg_pool2d(pos * wgt, 3, stride=1, padding=1)
    den = F.avg_pool2d(wgt, 3, stride=1, padding=1).clamp(min=1e-12)
    return num / den


def extract(
    out: dict[str, torch.Tensor], cfg: ModelConfig, prob_threshold: float = 0.5, frame_offset: int = 0,
    position: str = "weighted",
) -> LocTable:
    """Localizations of a batch of outputs; output sample n is frame ``frame_offset + n``.

    ``position``: ``"weighted"`` (default) takes x, y from :func:`neighbourhood_positions`; ``"peak"`` takes
    the peak pixel's own offset.
    """
    if position not in ("weighted", "peak"):
        raise ValueError("position must be 'weighted' or 'peak'")
    with torch.no_grad():
        is_max, p_int = integrated_probability(out["prob"].float())
        det = is_max & (p_int >= prob_threshold)
        n_idx, k_idx, i_idx, j_idx = torch.nonzero(det, as_tuple=True)

        def at(name: str) -> np.ndarray:
            return out[name][n_idx, :, i_idx, j_idx].float().cpu().numpy()  # (M, n)

        px_x, px_y = cfg.px_size_nm
        off, sig = at("offset"), at("sigma")
        n_ph = cfg.n_photons
        ph = at("photons") * cfg.photon_scale
        if position == "weighted":
            xy = neighbourhood_positions(out, n_ph)[n_idx, :, i_idx, j_idx].cpu().numpy()
        else:
            xy = np.stack([j_idx.cpu().numpy() + 0.5 + off[:, 0], i_idx.cpu().numpy() + 0.5 + off[:, 1]], axis=1)
        cols: dict[str, Any] = {
            "frame": (n_idx + frame_offset).cpu().numpy(),
            "x": xy[:, 0] * px_x,
            "y": xy[:, 1] * px_y,
            "photons": ph.sum(1),
            "prob": p_int[n_idx, k_idx, i_idx, j_idx].cpu().numpy(),
            "sigma_x": sig[:, n_ph] * px_x,
            "sigma_y": sig[:, n_ph + 1] * px_y,
        }
        if cfg.n_codes > 1:
            cols["code"] = k_idx.cpu().numpy()
        if cfg.three_d:
            cols["z"] = off[:, 2] * cfg.z_scale_nm
            cols["sigma_z"] = sig[:, n_ph + 2] * cfg.z_scale_nm
        if n_ph > 1:
            for c in range(n_ph):
                cols[f"photons_{c}"] = ph[:, c]
                cols[f"sigma_photons_{c}"] = sig[:, c] * cfg.photon_scale
        else:
            cols["sigma_photons"] = sig[:, 0] * cfg.photon_scale
        bg = at("bg") * cfg.bg_scale
        cols["bg"] = bg[:, 0]
        for c in range(1, bg.shape[1]):
            cols[f"bg_{c}"] = bg[:, c]
    return LocTable.from_arrays({"px_size_nm": list(cfg.px_size_nm)}, **cols)


def filter_table(table: LocTable, min_prob: float = 0.0, max_sigma_nm: float | None = None) -> LocTable:
    """Rows with prob ≥ ``min_prob`` and, if given, lateral σ (max of x, y) ≤ ``max_sigma_nm``."""
    keep = np.ones(len(table), bool)
    if "prob" in table:
        keep &= table["prob"] >= min_prob
    if max_sigma_nm is not None and "sigma_x" in table:
        keep &= np.maximum(table["sigma_x"], table["sigma_y"]) <= max_sigma_nm
    return table.select(keep)


def _equalise(frac: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Map sub-pixel positions in [0, 1) through their weighted empirical CDF (mid-point rule)."""
    order = np.argsort(frac, kind="stable")
    w = weight[order]
    cdf = (np.cumsum(w) - 0.5 * w) / w.sum()
    out = np.empty_like(frac)
    out[order] = cdf
    return out


def debias(
    table: LocTable, px_size_nm: tuple[float, float], z_step_nm: float = 50.0, min_count: int = 50
) -> LocTable:
    """Equalise the sub-pixel x and y histograms within z slabs of ``z_step_nm`` (all at once in 2D).

    Slabs with fewer than ``min_count`` localizations are left as they are. Adds ``meta["debiased"]``.
    """
    if len(table) == 0:
        return table.with_columns()
    groups = np.floor(table["z"] / z_step_nm).astype(np.int64) if table.is_3d else np.zeros(len(table), np.int64)
    new = {}
    for axis, px in (("x", px_size_nm[0]), ("y", px_size_nm[1])):
        pos = table[axis] / px
        base = np.floor(pos)
        frac = pos - base
        sig = table[f"sigma_{axis}"] if f"sigma_{axis}" in table else np.ones(len(table))
        weight = 1.0 / np.maximum(np.asarray(sig, float), 1e-6) ** 2
        out = frac.copy()
        for g in np.unique(groups):
            sel = groups == g
            if sel.sum() >= min_count:
                out[sel] = _equalise(frac[sel], weight[sel])
        new[axis] = (base + out) * px
    result = table.with_columns(**new)
    result.meta["debiased"] = {"z_step_nm": z_step_nm, "min_count": min_count}
    return result


def pixel_locked_bias(table: LocTable, px_size_nm: tuple[float, float], tiles: int = 4, min_per_tile: int = 50,
                      min_tiles: int = 6, harmonics: int = 2, t_threshold: float = 4.5,
                      min_amplitude: float = 0.1) -> dict[str, Any]:
    """Whether the sub-pixel positions depart from uniform *the same way all over the field*.

    De-biasing assumes true sub-pixel positions are uniform. A few dozen emitters, each localized many times,
    are not: their sub-pixel histogram has peaks that equalising would shift by up to half a pixel. A
    pixel-locked bias of the estimator, by contrast, is the same in every part of the image. So the field is
    cut into ``tiles`` × ``tiles`` parts; in each part with ≥ ``min_per_tile`` localizations the first
    ``harmonics`` Fourier coefficients of the sub-pixel positions (mean cos 2πkf, mean sin 2πkf; 0 for a
    uniform f) are measured, and a coefficient counts as bias when its mean over the parts is ``t_threshold``
    standard errors (of that mean, from the spread between parts) away from 0 and the density modulation it
    implies (2·|c_k|) is at least ``min_amplitude``. Fewer than ``min_tiles`` such parts: not tested.
    Answers ``{"tested", "biased", "tiles", "axes": {axis: {"t": [...], "amplitude": [...]}}, "reason"}``.
    """
    n = len(table)
    result: dict[str, Any] = {"tested": False, "biased": False, "tiles": 0, "axes": {}}
    if n == 0:
        return {**result, "reason": "no localizations"}
    edges = {axis: np.linspace(table[axis].min(), table[axis].max() + 1e-9, tiles + 1) for axis in ("x", "y")}
    tile = (np.clip(np.searchsorted(edges["x"], table["x"], side="right") - 1, 0, tiles - 1) * tiles
            + np.clip(np.searchsorted(edges["y"], table["y"], side="right") - 1, 0, tiles - 1))
    counts = np.bincount(tile, minlength=tiles * tiles)
    used = np.flatnonzero(counts >= min_per_tile)
    result["tiles"] = int(len(used))
    if len(used) < min_tiles:
        return {**result, "reason": f"{len(used)} parts of the field hold ≥ {min_per_tile} localizations; "
                                    f"the test needs {min_tiles}"}
    result["tested"] = True
    for axis, px in (("x", px_size_nm[0]), ("y", px_size_nm[1])):
        frac = (table[axis] / px) % 1.0
        t_values, amplitudes = [], []
        for k in range(1, harmonics + 1):
            coeff = np.array([[np.mean(np.cos(2 * np.pi * k * frac[tile == i])),
                               np.mean(np.sin(2 * np.pi * k * frac[tile == i]))] for i in used])  # (tiles, 2)
            mean = coeff.mean(axis=0)
            se = coeff.std(axis=0, ddof=1) / np.sqrt(len(used))
            t = mean / np.maximum(se, 1e-12)
            amplitude = 2.0 * float(np.hypot(*mean))
            t_values += [float(v) for v in t]
            amplitudes.append(amplitude)
            if amplitude >= min_amplitude and np.abs(t).max() >= t_threshold:
                result["biased"] = True
        result["axes"][axis] = {"t": t_values, "amplitude": amplitudes}
    return result


def dye_fractions(ratios: list[float]) -> np.ndarray:
    """Per-dye channel fractions (n_dyes, 2) from ratios N(channel 1) / N(channel 0)."""
    r = np.asarray(ratios, float)
    return np.stack([1 / (1 + r), r / (1 + r)], axis=1)


def assign_colors(
    photons: np.ndarray, sigma: np.ndarray, fractions: np.ndarray, min_posterior: float = 0.9
) -> tuple[np.ndarray, np.ndarray]:
    """Color code (−1 = rejected) and posterior of each localization.

    ``photons``, ``sigma`` (M, C): predicted photons per channel and their σ; ``fractions`` (D, C): each
    dye's expected share of the photons per channel. For dye d the total N is its weighted
    least-squares fit, and the likelihood is Π_c N(photons_c | f_dc·N, σ_c²); the posterior uses a flat
    prior over dyes.
    """
    photons = np.asarray(photons, float)
    if len(photons) == 0:
        return np.zeros(0, np.int64), np.zeros(0)
    post = _posteriors(photons, np.maximum(np.asarray(sigma, float), 1e-6), np.asarray(fractions, float))
    best = post.argmax(1)
    p_best = post[np.arange(len(best)), best]
    return np.where(p_best >= min_posterior, best, -1).astype(np.int64), p_best


def find_dye_ratios(photons: np.ndarray, n_dyes: int, sigma: np.ndarray | None = None, min_photons: float = 0.0,
                    iterations: int = 100, min_separation: float = 0.1) -> list[float]:
    """Ratios N(channel 1) / N(channel 0) of ``n_dyes`` dyes, largest first, by expectation-maximisation.

    The model is the one :func:`assign_colors` uses: each localization is one dye whose photons split by that
    dye's fractions, with the given σ per channel (shot noise √N when ``sigma`` is None). Start: the
    localizations sorted by log ratio and cut into ``n_dyes`` equal groups; then each step weighs every
    localization by its posterior per dye and sets a dye's ratio to Σ w·N₁ / Σ w·N₀ (bright localizations,
    whose ratios are precise, count most). A histogram's highest peaks, the earlier method, missed a dye in
    9–43 % of sets of 20–50 localizations; see bench/README.md (DECODE-Plex, dye ratios).
    Raises ValueError when there are too few usable localizations or the dyes do not separate (two ratios
    within ``min_separation`` in log): pass the ratios explicitly then.
    """
    photons = np.asarray(photons, float)
    ok = (photons > 0).all(1) & (photons.sum(1) >= min_photons)
    if ok.sum() < 2 * n_dyes:
        raise ValueError("too few localizations with positive photons in both channels to find dye ratios")
    p = photons[ok]
    s = np.sqrt(np.maximum(p, 1.0)) if sigma is None else np.maximum(np.asarray(sigma, float)[ok], 1e-6)
    groups = np.array_split(np.argsort(p[:, 1] / p[:, 0]), n_dyes)
    ratios = np.array([p[g, 1].sum() / p[g, 0].sum() for g in groups])
    for _ in range(iterations):
        weights = _posteriors(p, s, dye_fractions(list(ratios)))
        new = np.array([max((w * p[:, 1]).sum(), 1e-12) / max((w * p[:, 0]).sum(), 1e-12) for w in weights.T])
        converged = np.allclose(new, ratios, rtol=1e-6)
        ratios = new
        if converged:
            break
    ratios = np.sort(ratios)[::-1]
    logs = np.log(ratios)
    if n_dyes > 1 and np.min(-np.diff(logs)) < min_separation:
        raise ValueError(f"the photon ratios do not separate into {n_dyes} dyes (closest estimates "
                         f"{', '.join(f'{r:.3g}' for r in ratios)}); give dye_ratios")
    return [float(r) for r in ratios]


def _posteriors(photons: np.ndarray, sigma: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """(M, D) posterior of each dye for each localization (flat prior), as in :func:`assign_colors`."""
    s2 = sigma**2
    n_fit = ((photons[:, None, :] * fractions[None] / s2[:, None, :]).sum(-1)
             / (fractions[None] ** 2 / s2[:, None, :]).sum(-1))
    resid = photons[:, None, :] - fractions[None] * n_fit[..., None]
    loglik = -0.5 * (resid**2 / s2[:, None, :]).sum(-1)
    loglik -= loglik.max(1, keepdims=True)
    post = np.exp(loglik)
    return post / post.sum(1, keepdims=True)


def color_table(
    table: LocTable, dye_ratios: list[float] | None = None, n_dyes: int = 2, min_posterior: float = 0.9
) -> LocTable:
    """Add ``code`` (−1 = rejected) and ``color_posterior`` from the photons per channel and their σ: those
    measured in the frames (``photometry_0/1``, :mod:`~algorithms.decode_plex.photometry`) when the table has
    them, else the network's own (``photons_0/1``). ``meta["color_photons"]`` says which."""
    source = "photometry" if "photometry_0" in table and "photometry_1" in table else "network"
    if source == "photometry":
        photons = np.column_stack([table["photometry_0"], table["photometry_1"]])
        sigma = np.column_stack([table["photometry_sigma_0"], table["photometry_sigma_1"]])
        bad = ~np.isfinite(photons).all(1) | ~np.isfinite(sigma).all(1)
        photons, sigma = np.where(bad[:, None], 0.0, photons), np.where(bad[:, None], 1e9, sigma)  # rejected
    else:
        photons = np.column_stack([table["photons_0"], table["photons_1"]])
        sigma = np.column_stack([table["sigma_photons_0"], table["sigma_photons_1"]])
    ratios = list(dye_ratios) if dye_ratios else find_dye_ratios(photons, n_dyes, sigma)
    code, post = assign_colors(photons, sigma, dye_fractions(ratios), min_posterior)
    result = table.with_columns(code=code, color_posterior=post)
    result.meta["dye_ratios"] = ratios
    result.meta["color_photons"] = source
    return result
