"""COMET-style drift estimation: maximise the Gaussian overlap of localization pairs across time.

Pipeline (each "lever" can be switched off in `CometParams` to measure it):

1. blink merging: localizations of one molecule in consecutive frames become one, precision-weighted;
2. coarse pre-pass: windows registered to their neighbours by the peak of the histogram of pair
   displacements (a cross-correlation of point sets, AIM-like), chained into a coarse drift, so the
   fine pass only needs a small pair radius;
3. fine pass: pairs within a radius (KD-tree), cost -Σ exp(-½ |r_ij|²/s_ij²) with
   s_ij² = σ_i² + σ_j² + σ_anneal² (precision-weighted kernel), σ_anneal annealed from coarse to fine,
   pairs pruned at each level, pairs closer than `min_pair_dt_frames` in time skipped, drift as a
   clamped cubic B-spline over frames (or per-window vectors), the gauge pinned (drift 0 at frame 0),
   L-BFGS-B with the analytic gradient;
4. split-half precision: the fine pass repeated on two random halves; half their difference is the
   precision estimate reported with the result.

All positions are nm, frames 0-based. The pair cost + gradient lives in `compute.pair_overlap`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
from scipy import sparse
from scipy.interpolate import BSpline
from scipy.linalg import cho_factor, cho_solve, solve_triangular
from scipy.optimize import minimize
from scipy.spatial import cKDTree

from compute.pair_overlap import PairSetCPU, PairSetCUDA, cuda_available

Progress = Callable[[float, str], None]


@dataclass
class CometParams:
    """Parameters of the estimator (nm and frames). `None` means "chosen from the data"."""

    model: str = "spline"  # "spline" (cubic B-spline over frames) or "windows" (one vector per window)
    knot_frames: float | None = None  # knot spacing / window length in frames
    merge_blinks: bool = True
    merge_radius_nm: float | None = None  # default: 3 × median lateral precision
    merge_gap_frames: int = 1
    precision_weighted: bool = True
    default_sigma_nm: float = 10.0  # lateral precision when the table has no sigma columns
    default_sigma_z_nm: float = 25.0
    prepass: bool = True
    prepass_windows: int | None = None
    prepass_max_lag: int = 2  # windows registered to neighbours up to this many windows away
    max_drift_nm: float = 300.0  # search radius of the pre-pass, or of the fine pass without pre-pass
    fine_radius_nm: float | None = None
    anneal_nm: list[float] | None = None  # additive kernel widths, coarse to fine
    skip_same_window: bool = True
    min_pair_dt_frames: float | None = None  # default: half a knot spacing when skip_same_window
    max_pairs_per_loc: int | None = 4  # pair budget: keep each localization's first k (random) pairs
    prune: bool = True
    prune_k: float = 4.0  # pairs beyond prune_k kernel widths are dropped before each level
    smoothness: float = 0.0  # windows model: penalty on squared differences of neighbouring windows
    optimizer: str = "newton"  # "newton" (curvature rebuilt each step, CPU) or "lbfgs" (L-BFGS-B, whitened)
    max_iter: int = 200  # L-BFGS-B iterations of the last level (earlier levels get a quarter)
    tol_nm: float = 0.005  # stop a level when no control point moves more than this in one iteration
    split_half: bool = True
    backend: str = "auto"  # "cpu", "cuda" or "auto"
    seed: int = 0

    @classmethod
    def from_dict(cls, params: dict[str, Any]) -> CometParams:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(params) - known)
        if unknown:
            raise ValueError(f"unknown parameter(s): {', '.join(unknown)}")
        p = cls(**params)
        p.validate()
        return p

    def validate(self) -> None:
        if self.model not in ("spline", "windows"):
            raise ValueError("model must be 'spline' or 'windows'")
        if self.optimizer not in ("newton", "lbfgs"):
            raise ValueError("optimizer must be 'newton' or 'lbfgs'")
        if self.backend not in ("cpu", "cuda", "auto"):
            raise ValueError("backend must be 'cpu', 'cuda' or 'auto'")
        if self.prepass_max_lag < 1:
            raise ValueError("prepass_max_lag must be at least 1")
        for name in ("knot_frames", "merge_radius_nm", "fine_radius_nm", "max_drift_nm", "default_sigma_nm"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise ValueError(f"{name} must be positive")


@dataclass
class DriftResult:
    """Estimated drift per frame (n_frames, D) in nm, drift[0] = 0; subtract it to correct."""

    drift: np.ndarray
    precision_nm: np.ndarray | None = None  # (D,) split-half estimate of the drift error (RMS, nm)
    band: np.ndarray | None = None  # (n_frames, D) |d_A - d_B| / 2, smoothed, nm
    coarse: np.ndarray | None = None  # (n_frames, D) pre-pass drift, nm
    timings: dict[str, float] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        out = {"timings_s": {k: round(v, 4) for k, v in self.timings.items()}, "stats": self.stats}
        if self.precision_nm is not None:
            out["split_half_precision_nm"] = [round(float(v), 4) for v in self.precision_nm]
        return out


# ---------------------------------------------------------------- blink merging


def _near_in_next_frames(
    frame: np.ndarray, xy: np.ndarray, radius_nm: float, gap_frames: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (a, b) with frame[b] - frame[a] in 1..gap_frames and lateral distance ≤ radius_nm.

    Localizations are hashed into (frame, cell row, cell column) keys on a grid of `radius_nm` cells;
    in key order, the three neighbouring cells of one row in frame f + g are one contiguous key range
    [key + shift - 1, key + shift + 1], and the shifted keys stay sorted, so each (g, row offset) is
    one cache-friendly searchsorted of the sorted keys into themselves: no tree, no same-frame pairs.
    """
    n = len(frame)
    empty = np.zeros(0, dtype=np.intp)
    if n < 2:
        return empty, empty
    cx = np.floor((xy[:, 0] - xy[:, 0].min()) / radius_nm).astype(np.int64) + 1
    cy = np.floor((xy[:, 1] - xy[:, 1].min()) / radius_nm).astype(np.int64) + 1
    nx, ny = int(cx.max()) + 2, int(cy.max()) + 2  # a free column/row on each side: no wrap-around
    f = frame.astype(np.int64) - int(frame.min())
    if (int(f.max()) + gap_frames + 1) * ny * nx >= 2**62:  # keys would overflow: use a tree
        pts = np.column_stack([xy, f * radius_nm])
        pairs = cKDTree(pts).query_pairs(radius_nm * np.sqrt(1.0 + gap_frames**2), output_type="ndarray")
        a, b = pairs[:, 0], pairs[:, 1]
        df = np.abs(f[a] - f[b])
        ok = (df >= 1) & (df <= gap_frames) & (((xy[a] - xy[b]) ** 2).sum(1) <= radius_nm**2)
        return a[ok], b[ok]
    key = (f * ny + cy) * nx + cx
    order = np.argsort(key, kind="stable")
    skey = key[order]
    out_a, out_b = [], []
    for g in range(1, gap_frames + 1):
        for dy in (-1, 0, 1):
            shift = g * ny * nx + dy * nx
            lo = np.searchsorted(skey, skey + (shift - 1), side="left")
            hi = np.searchsorted(skey, skey + (shift + 1), side="right")
            count = hi - lo
            total = int(count.sum())
            if total == 0:
                continue
            src = np.repeat(np.arange(n), count)
            start = np.repeat(lo - np.cumsum(count) + count, count)
            dst = start + np.arange(total)
            out_a.append(order[src])
            out_b.append(order[dst])
    if not out_a:
        return empty, empty
    a, b = np.concatenate(out_a), np.concatenate(out_b)
    ok = ((xy[a] - xy[b]) ** 2).sum(1) <= radius_nm**2
    return a[ok], b[ok]


def merge_blinks(
    frame: np.ndarray, pos: np.ndarray, var: np.ndarray, radius_nm: float, gap_frames: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Merge localizations within `radius_nm` (lateral) in frames at most `gap_frames` apart.

    Returns (frame, pos, var, label): merged time (rounded mean frame), precision-weighted mean position,
    combined variance, and for each input localization the index of its merged localization.
    """
    from scipy.sparse.csgraph import connected_components

    n = len(frame)
    a, b = _near_in_next_frames(frame, pos[:, :2], radius_nm, gap_frames)
    graph = sparse.coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(n, n))
    n_groups, label = connected_components(graph, directed=False)
    w = 1.0 / var
    wsum = np.stack([np.bincount(label, w[:, d], n_groups) for d in range(pos.shape[1])], axis=1)
    psum = np.stack([np.bincount(label, w[:, d] * pos[:, d], n_groups) for d in range(pos.shape[1])], axis=1)
    count = np.bincount(label, minlength=n_groups)
    fmean = np.bincount(label, frame.astype(np.float64), n_groups) / count
    return np.rint(fmean).astype(np.int64), psum / wsum, 1.0 / wsum, label


# ---------------------------------------------------------------- coarse pre-pass


def _displacement_peak(diff: np.ndarray, sigma_nm: float, radius_nm: float) -> np.ndarray | None:
    """Mode of a cloud of displacement vectors (P, D): histogram peak, then mean-shift refinement."""
    if len(diff) < 3:
        return None
    from scipy.ndimage import gaussian_filter

    lat = diff[:, :2]
    bin_nm = max(sigma_nm / 2.0, radius_nm / 200.0)
    nb = int(np.ceil(2 * radius_nm / bin_nm))
    # 2D histogram by one bincount (histogram2d's searchsorted per axis is several times slower)
    cell = np.floor((lat + radius_nm) / bin_nm).astype(np.intp)
    inside = ((cell >= 0) & (cell < nb)).all(axis=1)
    hist = np.bincount(cell[inside, 0] * nb + cell[inside, 1], minlength=nb * nb).reshape(nb, nb)
    hist = gaussian_filter(hist.astype(np.float64), sigma_nm / bin_nm)
    ix, iy = np.unravel_index(np.argmax(hist), hist.shape)
    c = (np.array([ix, iy]) + 0.5) * bin_nm - radius_nm
    # mean-shift refinement on the vectors near the peak only (the window moves by less than 2σ)
    near = np.flatnonzero(((lat - c) ** 2).sum(1) <= (4.0 * sigma_nm + bin_nm) ** 2)
    lat_near = lat[near]
    for _ in range(5):
        sel_near = ((lat_near - c) ** 2).sum(1) <= (2.0 * sigma_nm) ** 2
        if not sel_near.any():
            return None
        c = lat_near[sel_near].mean(axis=0)
    sel = near[sel_near]
    if diff.shape[1] == 2:
        return c
    z = diff[sel, 2]
    sz = 2.5 * sigma_nm
    hz, ez = np.histogram(z, bins=max(8, int(2 * radius_nm / sz)), range=(-radius_nm, radius_nm))
    k = np.argmax(gaussian_filter(hz.astype(float), 1.0))
    cz = (ez[k] + ez[k + 1]) / 2
    for _ in range(5):
        s = np.abs(z - cz) <= 2.0 * sz
        if not s.any():
            break
        cz = z[s].mean()
    return np.array([c[0], c[1], cz])


def coarse_drift(
    tidx: np.ndarray,
    pos: np.ndarray,
    n_times: int,
    n_windows: int,
    radius_nm: float,
    sigma_nm: float,
    max_lag: int = 2,
) -> tuple[np.ndarray, float]:
    """Coarse drift (n_times, D) from window-to-window registration (lags 1..max_lag, least squares).

    Also returns the RMS lateral change between neighbouring windows (nm): drift within a window is of
    that order, so it sets how wide the fine pass's first kernel must be.
    """
    d = pos.shape[1]
    edges = np.linspace(0, n_times, n_windows + 1)
    win = np.clip(np.searchsorted(edges, tidx, side="right") - 1, 0, n_windows - 1)
    order = np.argsort(win, kind="stable")
    bounds = np.searchsorted(win[order], np.arange(n_windows + 1))
    members = [order[bounds[w] : bounds[w + 1]] for w in range(n_windows)]
    trees = [cKDTree(pos[m, :2]) if len(m) else None for m in members]
    centres = np.array([tidx[m].mean() if len(m) else (edges[w] + edges[w + 1]) / 2 for w, m in enumerate(members)])

    # lag-1 chain first (a prediction for longer lags), then all lags in one least-squares solve
    shifts = np.zeros((n_windows, d))
    rows: list[tuple[int, int, np.ndarray, float]] = []
    for lag in range(1, max_lag + 1):
        # longer lags start from the lag-1 chain's prediction: what is left is the chain's error (a few
        # nm), so a search radius of a few dozen nm does, and costs a fraction of the full one
        r_lag = radius_nm if lag == 1 else min(radius_nm, max(8.0 * sigma_nm, 50.0))
        for w in range(n_windows - lag):
            a, b = members[w], members[w + lag]
            if trees[w] is None or trees[w + lag] is None:
                continue
            if lag == 1:
                pred, pa, tree_a = np.zeros(d), pos[a], trees[w]
            else:
                pred = shifts[w + lag] - shifts[w]
                pa = pos[a] + pred  # move window a onto b's predicted place
                tree_a = cKDTree(pa[:, :2])
            sdm = tree_a.sparse_distance_matrix(trees[w + lag], r_lag, output_type="ndarray")
            if len(sdm) < 3:
                continue
            diff = pos[b[sdm["j"]]] - pa[sdm["i"]]
            peak = _displacement_peak(diff, sigma_nm, r_lag)
            if peak is None:
                continue
            rows.append((w, w + lag, peak + pred, 1.0 / lag))
        if lag == 1:
            for w, v, s, _ in rows:
                shifts[v] = shifts[w] + s
    if rows:
        # shift[v] - shift[w] = s for every measured pair; shift[0] = 0 pins the gauge
        m = len(rows)
        a_mat = sparse.lil_matrix((m + 1, n_windows))
        rhs = np.zeros((m + 1, d))
        for k, (w, v, s, wt) in enumerate(rows):
            a_mat[k, v], a_mat[k, w] = wt, -wt
            rhs[k] = s * wt
        a_mat[m, 0] = 1.0
        a_csr = a_mat.tocsr()
        for ax in range(d):
            shifts[:, ax] = sparse.linalg.lsqr(a_csr, rhs[:, ax], atol=1e-12, btol=1e-12)[0]
    t = np.arange(n_times, dtype=np.float64)
    step = float(np.sqrt(np.mean(np.diff(shifts[:, :2], axis=0) ** 2))) if n_windows > 1 else 0.0
    return np.stack([np.interp(t, centres, shifts[:, ax]) for ax in range(d)], axis=1), step


# ---------------------------------------------------------------- drift model


def drift_basis(n_times: int, model: str, knot_frames: float) -> sparse.csr_matrix:
    """Sparse (n_times, K) matrix B with drift = B @ C; column 0 is the only one non-zero at frame 0."""
    t = np.arange(n_times, dtype=np.float64)
    if model == "windows":
        k = max(1, int(np.ceil(n_times / knot_frames)))
        col = np.minimum((t / knot_frames).astype(np.int64), k - 1)
        return sparse.csr_matrix((np.ones(n_times), (np.arange(n_times), col)), shape=(n_times, k))
    n_int = max(1, int(round((n_times - 1) / knot_frames)))
    inner = np.linspace(0, max(n_times - 1, 1), n_int + 1)
    knots = np.concatenate([[inner[0]] * 3, inner, [inner[-1]] * 3])
    return BSpline.design_matrix(np.clip(t, inner[0], inner[-1]), knots, 3).tocsr()


# ---------------------------------------------------------------- fine pass


def _pair_search(pos: np.ndarray, var: np.ndarray, tidx: np.ndarray, radius: float,
                 min_dt: float) -> tuple[np.ndarray, np.ndarray]:
    """Candidate pairs: within `radius` laterally (and the matching z radius), at least `min_dt` apart."""
    tree = cKDTree(pos[:, :2])
    pairs = tree.query_pairs(radius, output_type="ndarray")
    i, j = pairs[:, 0], pairs[:, 1]
    keep = np.abs(tidx[i] - tidx[j]) >= max(min_dt, 1)
    if pos.shape[1] == 3:
        zr = radius * np.sqrt(np.median(var[:, 2]) / np.median(var[:, 0]))
        keep &= np.abs(pos[i, 2] - pos[j, 2]) <= zr
    return i[keep], j[keep]


def _pair_budget(i: np.ndarray, j: np.ndarray, n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Thin the pairs to about k per localization, at random, independently of their residuals.

    A molecule seen m times gives m²/2 pairs, but its localizations' offsets from the common centre are
    pinned down by a few partners each. Each side of a pair keeps it with probability k / (its number of
    pairs): a localization with d ≤ k pairs keeps them all, one with more keeps about k of its own choice
    (plus those its partners chose). Two bincounts and two uniform draws: linear in the pair count,
    where ranking each localization's pairs took two sorts of the whole list.
    """
    deg = np.bincount(i, minlength=n) + np.bincount(j, minlength=n)
    rate = np.minimum(1.0, k / np.maximum(deg, 1))
    rng = np.random.default_rng(seed)
    keep = rng.random(len(i)) < rate[i]
    keep |= rng.random(len(i)) < rate[j]
    return i[keep], j[keep]


def _time_bins(basis, ti, tj, n_times):
    """Bin count and each pair's flat (bin of ti, bin of tj) index for `_curvature` (fixed per level)."""
    nb = int(min(n_times, 4 * basis.shape[1]))
    return nb, ((ti * nb) // n_times) * nb + (tj * nb) // n_times


def _curvature(basis, ti, tj, h, n_times, lam, scale, bins=None):
    """Gauss-Newton-like curvature (D, K, K) of the cost in the control points, per axis.

    h: (P, D) curvature weights of the pairs along r. Times are binned at 4 bins per control point
    (the basis is smooth on that scale), so the (bins × bins) pair-weight matrix W is one bincount and
    H = Bᵀ (diag(W 1) - W) B with B the (sparse) basis at the bin centres. `bins`: `_time_bins`' answer,
    when the same pairs are used again.
    """
    k = basis.shape[1]
    nb, flat = bins if bins is not None else _time_bins(basis, ti, tj, n_times)
    centres = np.minimum(((np.arange(nb) + 0.5) * n_times / nb).astype(np.int64), n_times - 1)
    bb = basis[centres].tocsc()
    out = []
    for a in range(h.shape[1]):
        w = np.bincount(flat, h[:, a], nb * nb).reshape(nb, nb)
        w = w + w.T
        wb = np.asarray((bb.T @ w.T).T)  # W @ B, dense (nb, k)
        hess = (bb.T @ (w.sum(1)[:, None] * bb.toarray())) - np.asarray(bb.T @ wb)
        hess = np.asarray(hess) * scale
        if lam:
            dm = np.diff(np.eye(k), axis=0)
            hess += 2 * lam * dm.T @ dm
        out.append(hess)
    return np.stack(out)


def _preconditioner(basis, ti, tj, h, n_times, lam, scale):
    """Cholesky factors (D, K, K) of `_curvature` (with a small ridge for the global-shift null mode)."""
    hess = _curvature(basis, ti, tj, h, n_times, lam, scale)
    k = hess.shape[1]
    return np.stack([np.linalg.cholesky(hh + 1e-6 * max(np.trace(hh) / k, 1e-300) * np.eye(k)) for hh in hess])


def _newton_exact(ps, basis, bt, ti, tj, coef, n_times, lam, scale, max_iter, tol_nm, trust_nm):
    """Newton with the curvature rebuilt at every iterate from the same pass over the pairs.

    Each iterate costs one evaluation when its step is accepted (the trial point's cost, gradient and
    curvature are reused as the next iterate's). Returns (coef, iterations, evaluations).
    """
    k, d = coef.shape
    dm = np.diff(np.eye(k), axis=0) if lam else None

    def evaluate(c):
        f, g_t, h = ps.cost_grad(basis @ c, curvature=True)
        g = bt @ g_t
        if lam:
            dc = np.diff(c, axis=0)
            f += lam * float((dc * dc).sum()) / scale
            g += 2 * lam * (dm.T @ dc) / scale
        return f * scale, g * scale, h

    f, g, h = evaluate(coef)
    nfev, nit = 1, 0
    bins = _time_bins(basis, ti, tj, n_times)
    for nit in range(1, max_iter + 1):  # noqa: B007
        hess = _curvature(basis, ti, tj, h, n_times, lam, scale, bins)
        step = np.empty_like(coef)
        for a in range(d):
            ha = hess[a] + 1e-3 * max(np.trace(hess[a]) / k, 1e-300) * np.eye(k)
            # Cholesky, not np.linalg.solve: the latter's threaded LU is very slow on a busy machine
            step[:, a] = -cho_solve(cho_factor(ha, lower=True, check_finite=False), g[:, a], check_finite=False)
        slope = float((g * step).sum())
        big = float(np.abs(step).max())
        if big > trust_nm:  # poorly constrained control points (few pairs) would take wild steps
            step *= trust_nm / big
            slope = float((g * step).sum())
        if slope >= 0:  # not a descent direction (should not happen with a PSD curvature): gradient step
            step = -g / max(np.abs(np.diagonal(hess, axis1=1, axis2=2)).max(), 1e-300)
            slope = float((g * step).sum())
        t = 1.0
        while True:
            f_new, g_new, h_new = evaluate(coef + t * step)
            nfev += 1
            if f_new <= f + 1e-4 * t * slope or t < 1e-3:
                break
            t *= 0.5
        coef = coef + t * step
        f, g, h = f_new, g_new, h_new
        if float(np.abs(t * step).max()) < tol_nm:
            break
    return coef, nit, nfev


def _make_pairs(backend, pos, var, tidx, i, j, anneal_var, n_times):
    if backend == "cuda":
        return PairSetCUDA(pos, var, tidx, i, j, anneal_var, n_times)
    return PairSetCPU.build(pos, var, tidx, i, j, anneal_var, n_times)


def fine_pass(
    pos: np.ndarray,
    var: np.ndarray,
    tidx: np.ndarray,
    n_times: int,
    basis: sparse.csr_matrix,
    anneal_nm: list[float],
    radius_nm: float,
    min_dt: float,
    p: CometParams,
    backend: str,
    stats: dict[str, Any] | None = None,
    progress: Progress | None = None,
    candidates: tuple[np.ndarray, np.ndarray] | None = None,
    coef0: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Drift table (n_times, D) minimising the pair cost, pinned to drift(0) = 0.

    Also returns the control points (before pinning) and the candidate pairs before the pair budget,
    so that a pass on a subset of the localizations (split-half) can reuse both: `candidates` skips the
    pair search, `coef0` starts from a known solution.
    """
    d = pos.shape[1]
    k = basis.shape[1]
    bt = basis.T.tocsr()
    t0 = time.perf_counter()
    if candidates is None:
        candidates = _pair_search(pos, var, tidx, radius_nm, min_dt)
    i, j = candidates
    if p.max_pairs_per_loc:
        i, j = _pair_budget(i, j, len(pos), p.max_pairs_per_loc, p.seed)
    if stats is not None:
        stats["pairs"] = int(len(i))
        stats["pair_search_s"] = round(time.perf_counter() - t0, 4)
    coef = np.zeros((k, d)) if coef0 is None else np.array(coef0, dtype=np.float64)
    if len(i) == 0:
        drift = basis @ coef
        return drift - drift[0], coef, candidates
    lam = p.smoothness if p.model == "windows" else 0.0
    levels = []
    ti_all, tj_all = tidx[i], tidx[j]
    ps = None
    for level, s_a in enumerate(anneal_nm):
        anneal = np.full(d, float(s_a) ** 2)
        if d == 3:
            anneal[2] *= np.median(var[:, 2]) / np.median(var[:, 0])
        if ps is None:
            ps = _make_pairs(backend, pos, var, tidx, i, j, anneal, n_times)
        else:
            ps.set_anneal(anneal)
            if p.prune:
                # pairs beyond prune_k kernel widths add nothing: rebuild without them when that
                # saves at least a fifth of the work
                drift_t = basis @ coef
                if isinstance(ps, PairSetCPU):
                    keep = ps.scaled_distance2(drift_t) <= p.prune_k**2
                else:
                    r = (pos[i] - pos[j]) - (drift_t[ti_all] - drift_t[tj_all])
                    keep = ((r * r) / (var[i] + var[j] + anneal)).sum(1) <= p.prune_k**2
                if keep.mean() < 0.8:
                    i, j, ti_all, tj_all = i[keep], j[keep], ti_all[keep], tj_all[keep]
                    ps = _make_pairs(backend, pos, var, tidx, i, j, anneal, n_times)
        scale = 1.0 / max(len(i), 1)
        # Newton needs per-pair curvature, which only the CPU pair set returns; the GPU uses L-BFGS-B
        exact_newton = p.optimizer == "newton" and isinstance(ps, PairSetCPU)
        chol = None
        if not exact_newton:  # a fixed preconditioner from the curvature at the level's start
            drift_t = basis @ coef
            r = (pos[i] - pos[j]) - (drift_t[ti_all] - drift_t[tj_all])
            inv_s2 = 1.0 / (var[i] + var[j] + anneal)
            r2s = r * r * inv_s2
            h = np.exp(-0.5 * r2s.sum(1))[:, None] * inv_s2 * np.clip(1.0 - r2s, 0.0, None)
            chol = _preconditioner(basis, ti_all, tj_all, h, n_times, lam, scale)

        # All control points are free: the cost is invariant to a global shift, and pinning one point
        # inside the optimiser would leave the "everything else moves together" mode with a curvature
        # K times smaller than the others (slow L-BFGS). The gauge is fixed exactly afterwards.
        # The optimiser works in whitened coordinates u_a = R_aᵀ c_a (H_a ≈ R_a R_aᵀ, Gauss-Newton
        # curvature per axis), where the Hessian is close to the identity: a handful of iterations.
        def to_coef(u, chol=chol):
            u = u.reshape(d, k)
            return np.stack([solve_triangular(chol[a], u[a], lower=True, trans="T") for a in range(d)], 1)

        def fun(u, ps=ps, scale=scale, chol=chol):
            c = to_coef(u)
            f, g_t = ps.cost_grad(basis @ c)
            g = bt @ g_t
            if lam:
                dc = np.diff(c, axis=0)
                f += lam * float((dc * dc).sum()) / scale
                gp = np.zeros_like(c)
                gp[1:] += 2 * lam * dc / scale
                gp[:-1] -= 2 * lam * dc / scale
                g += gp
            g *= scale
            gu = np.stack([solve_triangular(chol[a], g[:, a], lower=True) for a in range(d)])
            return f * scale, gu.ravel()

        last = level == len(anneal_nm) - 1
        state = {"c": coef.copy(), "nit": 0}

        def stop_when_still(xk, state=state):
            # converged when no control point moved more than tol_nm in one iteration
            c = to_coef(xk)
            state["nit"] += 1
            moved = float(np.abs(c - state["c"]).max()) if c.size else 0.0
            state["c"] = c
            if moved < p.tol_nm:
                raise StopIteration

        max_iter = p.max_iter if last else max(5, p.max_iter // 4)
        # intermediate levels only hand over to a narrower kernel: a tenth of its width is close enough
        tol = p.tol_nm if last else max(10 * p.tol_nm, 0.1 * float(s_a))
        if exact_newton:
            trust = max(float(s_a), 2.0 * float(np.sqrt(np.median(var[:, 0]))))
            coef, nit, nfev = _newton_exact(ps, basis, bt, ti_all, tj_all, coef, n_times, lam, scale,
                                            max_iter, tol, trust)
            state["nit"] = nit
        else:
            u0 = np.stack([chol[a].T @ coef[:, a] for a in range(d)]).ravel()
            res = minimize(fun, u0, jac=True, method="L-BFGS-B", callback=stop_when_still,
                           options={"maxiter": max_iter, "ftol": 1e-15, "gtol": 1e-15, "maxcor": 20})
            coef, nfev = to_coef(res.x), res.nfev
        levels.append({"anneal_nm": float(s_a), "pairs": int(len(i)), "iterations": int(state["nit"]),
                       "evaluations": int(nfev)})
        if progress is not None:
            progress((level + 1) / len(anneal_nm), "fine")
    if stats is not None:
        stats["levels"] = levels
    drift = basis @ coef
    return drift - drift[0], coef, candidates


# ---------------------------------------------------------------- top level


def _resolve_backend(name: str) -> str:
    if name == "auto":
        return "cuda" if cuda_available() else "cpu"
    if name == "cuda" and not cuda_available():
        raise RuntimeError("backend 'cuda' asked for, but no CUDA device is available")
    return name


def estimate_drift(
    frame: np.ndarray,
    pos: np.ndarray,
    sigma: np.ndarray | None = None,
    params: CometParams | None = None,
    progress: Progress | None = None,
) -> DriftResult:
    """Estimate the drift of localizations (frame 0-based, pos (N, D) nm, sigma (N, D) nm or None).

    Returns the drift per frame for frames 0..max(frame), pinned to 0 at frame 0.
    """
    p = params or CometParams()
    p.validate()
    backend = _resolve_backend(p.backend)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    frame = np.asarray(frame, dtype=np.int64)
    pos = np.asarray(pos, dtype=np.float64)
    d = pos.shape[1]
    n_times = int(frame.max()) + 1
    if sigma is None:
        sigma = np.tile(np.array([p.default_sigma_nm, p.default_sigma_nm, p.default_sigma_z_nm][:d]), (len(pos), 1))
    var = np.asarray(sigma, dtype=np.float64) ** 2
    sig_med = float(np.sqrt(np.median(var[:, 0])))
    stats: dict[str, Any] = {"localizations": int(len(pos)), "backend": backend, "dims": d}

    def report(frac: float, stage: str) -> None:
        if progress is not None:
            progress(frac, stage)

    # 1. blink merging
    t0 = time.perf_counter()
    if p.merge_blinks:
        radius = p.merge_radius_nm or 3.0 * sig_med
        tidx, mpos, mvar, _ = merge_blinks(frame, pos, var, radius, p.merge_gap_frames)
    else:
        tidx, mpos, mvar = frame, pos, var
    stats["merged_localizations"] = int(len(mpos))
    timings["merge"] = time.perf_counter() - t0
    report(0.1, "merge")
    if not p.precision_weighted:
        mvar = np.tile(np.median(mvar, axis=0), (len(mvar), 1))

    # drift model resolution: about 1000 merged localizations per knot interval, 5..400 intervals
    knot = p.knot_frames or n_times / float(np.clip(len(mpos) / 1000.0, 5, 400))
    knot = max(float(knot), 1.0)
    basis = drift_basis(n_times, p.model, knot)
    stats["knot_frames"] = round(knot, 3)
    stats["control_points"] = int(basis.shape[1])
    min_dt = p.min_pair_dt_frames if p.min_pair_dt_frames is not None else (knot / 2 if p.skip_same_window else 1)

    # 2. coarse pre-pass
    t0 = time.perf_counter()
    coarse = np.zeros((n_times, d))
    if p.prepass:
        n_win = p.prepass_windows or int(np.clip(len(mpos) / 2500, 8, 60))
        coarse, coarse_step = coarse_drift(tidx, mpos, n_times, n_win, p.max_drift_nm, sig_med, p.prepass_max_lag)
        stats["prepass_windows"] = n_win
        stats["prepass_step_nm"] = round(coarse_step, 3)
        # Project onto the drift model: the interpolated coarse drift has kinks at window centres that
        # a cubic spline residual could not undo; in the model's span, coarse + fine stays in it too.
        btb = (basis.T @ basis).toarray()
        coef0 = np.linalg.solve(btb + 1e-9 * np.trace(btb) / len(btb) * np.eye(len(btb)), basis.T @ coarse)
        coarse = basis @ coef0
        coarse -= coarse[0]
        sig_p90 = float(np.sqrt(np.percentile(mvar[:, 0], 90)))
        if p.anneal_nm is not None:
            anneal = list(p.anneal_nm)
        else:  # start at the drift change between windows (what the pre-pass cannot see), then refine
            start = float(np.clip(coarse_step, 4.0, p.max_drift_nm / 3))
            anneal = [start, start / 2.5, 0.0] if start > 10 else [start, 0.0]
        radius = p.fine_radius_nm or p.prune_k * np.sqrt(2 * sig_p90**2 + anneal[0] ** 2)
    else:
        anneal = p.anneal_nm if p.anneal_nm is not None else [p.max_drift_nm / 3, 48.0, 24.0, 12.0, 6.0, 3.0, 0.0]
        radius = p.fine_radius_nm or p.max_drift_nm
    stats["fine_radius_nm"] = round(float(radius), 3)
    stats["anneal_nm"] = [round(float(a), 3) for a in anneal]
    timings["prepass"] = time.perf_counter() - t0
    report(0.2, "prepass")

    # 3. fine pass on the coarse-corrected positions
    t0 = time.perf_counter()
    cpos = mpos - coarse[tidx]
    fine, fine_coef, candidates = fine_pass(cpos, mvar, tidx, n_times, basis, anneal, radius, min_dt, p,
                                            backend, stats, (lambda f, s: report(0.2 + 0.5 * f, s)) if progress
                                            else None)
    drift = coarse + fine
    drift -= drift[0]
    timings["fine"] = time.perf_counter() - t0

    # 4. split-half precision: each half's own optimum of the finest level, found from the full estimate
    # (the same basin; Newton converges to the half's optimum whatever the start) on the full pass's
    # candidate pairs whose both members are in the half, with the pair budget drawn again per half
    result = DriftResult(drift=drift, coarse=coarse, stats=stats)
    if p.split_half and len(mpos) >= 20:
        t0 = time.perf_counter()
        rng = np.random.default_rng(p.seed)
        half = rng.random(len(mpos)) < 0.5
        halves = []
        cand_i, cand_j = candidates
        # the halves' difference is ~the full estimate's error (tenths of a nm): 0.02 nm steps are converged
        p_half = replace(p, tol_nm=max(p.tol_nm, 0.02))
        for sel in (half, ~half):
            renumber = np.cumsum(sel) - 1
            both = sel[cand_i] & sel[cand_j]
            sub = (renumber[cand_i[both]], renumber[cand_j[both]])
            halves.append(fine_pass(cpos[sel], mvar[sel], tidx[sel], n_times, basis, anneal[-1:], radius, min_dt,
                                    p_half, backend, candidates=sub, coef0=fine_coef)[0])
        diff = (halves[0] - halves[1]) / 2.0
        diff -= diff.mean(axis=0)
        # each half has twice the variance of the full estimate: half the difference has the full one's
        result.precision_nm = np.sqrt(np.mean(diff**2, axis=0))
        from scipy.ndimage import uniform_filter1d

        result.band = np.sqrt(uniform_filter1d(diff**2, size=max(3, int(knot)), axis=0, mode="nearest"))
        timings["split_half"] = time.perf_counter() - t0
    report(1.0, "done")
    timings["total"] = time.perf_counter() - t_start
    result.timings = timings
    stats["params"] = asdict(p)
    return result


def correct(frame: np.ndarray, pos: np.ndarray, drift: np.ndarray) -> np.ndarray:
    """Positions (N, D) nm with the drift of their frame removed."""
    return pos - drift[np.asarray(frame, dtype=np.int64)]
