"""Pairing predicted localizations with ground truth, frame by frame (SMLM challenge 2016 conventions).

Two localizations can pair when they are in the same frame, their lateral distance is below
`lateral_nm` (250 nm) and, when both tables carry `z`, their axial distance is below `axial_nm`
(500 nm). Candidate pairs for *all* frames are found at once with one k-d tree over
(x, y, frame · offset), so no Python loop runs over frames.

- ``greedy``: pairs are taken in order of increasing distance, each localization used at most once.
- ``hungarian``: within every connected group of candidate pairs, first the number of pairs is
  maximised, then the summed distance is minimised (``scipy.optimize.linear_sum_assignment`` with a
  prohibitive cost for pairs beyond the thresholds).

The distance is lateral in 2D and volumetric (sqrt(dx² + dy² + dz²)) in 3D.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from algorithms.io.table import LocTable

LATERAL_NM = 250.0
AXIAL_NM = 500.0
METHODS = ("greedy", "hungarian")


@dataclass
class Matches:
    """Index arrays into the truth and prediction tables: pairs, and who stayed unpaired."""

    truth: np.ndarray  # row index in the truth table of each pair
    pred: np.ndarray  # row index in the predicted table of each pair
    n_truth: int
    n_pred: int

    @property
    def tp(self) -> int:
        return len(self.truth)

    @property
    def fp(self) -> int:
        return self.n_pred - self.tp

    @property
    def fn(self) -> int:
        return self.n_truth - self.tp

    def unmatched_truth(self) -> np.ndarray:
        return np.setdiff1d(np.arange(self.n_truth), self.truth)

    def unmatched_pred(self) -> np.ndarray:
        return np.setdiff1d(np.arange(self.n_pred), self.pred)


def candidate_pairs(
    truth: LocTable, pred: LocTable, lateral_nm: float = LATERAL_NM, axial_nm: float = AXIAL_NM
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All (truth row, pred row, distance nm) within the thresholds and in the same frame."""
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
    if len(truth) == 0 or len(pred) == 0:
        return empty
    # Frames are pushed far apart along a third axis so one tree query never pairs across frames.
    xy_t = np.column_stack([truth["x"], truth["y"]]).astype(np.float64)
    xy_p = np.column_stack([pred["x"], pred["y"]]).astype(np.float64)
    span = max(np.ptp(np.concatenate([xy_t, xy_p]), axis=0).max(), 1.0)
    gap = 10.0 * (span + lateral_nm)
    a = np.column_stack([xy_t, truth["frame"] * gap])
    b = np.column_stack([xy_p, pred["frame"] * gap])
    sparse = cKDTree(a).sparse_distance_matrix(cKDTree(b), lateral_nm, output_type="coo_matrix")
    ti, pi = sparse.row.astype(np.int64), sparse.col.astype(np.int64)
    keep = truth["frame"][ti] == pred["frame"][pi]
    ti, pi = ti[keep], pi[keep]
    dx = truth["x"][ti] - pred["x"][pi]
    dy = truth["y"][ti] - pred["y"][pi]
    d2 = dx * dx + dy * dy
    keep = d2 < lateral_nm**2
    if truth.is_3d and pred.is_3d:
        dz = truth["z"][ti] - pred["z"][pi]
        keep &= np.abs(dz) < axial_nm
        d2 = d2 + dz * dz
    return ti[keep], pi[keep], np.sqrt(d2[keep])


def _greedy(ti: np.ndarray, pi: np.ndarray, dist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort((pi, ti, dist))  # ties broken by index: deterministic
    used_t: set[int] = set()
    used_p: set[int] = set()
    out_t, out_p = [], []
    for k in order:
        t, p = int(ti[k]), int(pi[k])
        if t in used_t or p in used_p:
            continue
        used_t.add(t)
        used_p.add(p)
        out_t.append(t)
        out_p.append(p)
    return np.asarray(out_t, np.int64), np.asarray(out_p, np.int64)


def _hungarian(
    ti: np.ndarray, pi: np.ndarray, dist: np.ndarray, n_truth: int, n_pred: int
) -> tuple[np.ndarray, np.ndarray]:
    if len(ti) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    # Connected groups of the bipartite candidate graph are independent assignment problems.
    n = n_truth + n_pred
    graph = coo_matrix((np.ones(len(ti)), (ti, n_truth + pi)), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    group = label[ti]
    order = np.argsort(group, kind="stable")
    ti, pi, dist, group = ti[order], pi[order], dist[order], group[order]
    bounds = np.flatnonzero(np.diff(group)) + 1
    out_t, out_p = [], []
    for sl_t, sl_p, sl_d in zip(np.split(ti, bounds), np.split(pi, bounds), np.split(dist, bounds), strict=True):
        if len(sl_t) == 1:
            out_t.append(sl_t)
            out_p.append(sl_p)
            continue
        rows, r_idx = np.unique(sl_t, return_inverse=True)
        cols, c_idx = np.unique(sl_p, return_inverse=True)
        # A missing pair costs more than any full set of real pairs: the pair count is maximised first.
        big = (sl_d.max() + 1.0) * (len(rows) + len(cols)) + 1.0
        cost = np.full((len(rows), len(cols)), big)
        cost[r_idx, c_idx] = sl_d
        r, c = linear_sum_assignment(cost)
        ok = cost[r, c] < big
        out_t.append(rows[r[ok]])
        out_p.append(cols[c[ok]])
    return np.concatenate(out_t).astype(np.int64), np.concatenate(out_p).astype(np.int64)


def match(
    truth: LocTable,
    pred: LocTable,
    method: str = "hungarian",
    lateral_nm: float = LATERAL_NM,
    axial_nm: float = AXIAL_NM,
) -> Matches:
    """Pair `pred` with `truth` (both in nm, 0-based frames); pairs are sorted by truth row."""
    if method not in METHODS:
        raise ValueError(f"matching method must be one of {METHODS}, not {method!r}")
    ti, pi, dist = candidate_pairs(truth, pred, lateral_nm, axial_nm)
    if method == "greedy":
        mt, mp = _greedy(ti, pi, dist)
    else:
        mt, mp = _hungarian(ti, pi, dist, len(truth), len(pred))
    order = np.argsort(mt, kind="stable")
    return Matches(mt[order], mp[order], len(truth), len(pred))
