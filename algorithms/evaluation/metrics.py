"""Detection, localization, photon and color metrics of a prediction against ground truth.

Conventions (SMLM challenge 2016, Sage et al. 2019; DECODE-Plex for color):

- ``jaccard = TP / (TP + FP + FN)``, ``precision = TP / (TP + FP)``, ``recall = TP / (TP + FN)``.
- ``rmse_lat = sqrt(mean(dx² + dy²))`` (so per-axis jitter σ gives σ·√2), ``rmse_ax = sqrt(mean(dz²))``,
  ``rmse_vol = sqrt(mean(dx² + dy² + dz²))``, all in nm over the true positives.
- efficiency ``E = 1 - sqrt((1 - JI)² + α² · RMSE²)`` with α = 0.01 nm⁻¹ laterally and 0.005 nm⁻¹ axially;
  in 3D ``efficiency_vol`` is the mean of the lateral and axial efficiencies (the challenge's
  "3D efficiency"); in 2D it is the lateral one.
- ``photon_rmse = sqrt(mean((N_pred - N_true)²))`` over true positives having `photons` in both tables.
- color (column ``code``; −1 = rejected; the truth's may be ``dye``, as the simulator calls it):
  ``color_accuracy = TP with the right code / TP``,
  ``rejection_rate = TP with code −1 / TP``, ``color_accuracy_assigned`` = right / not rejected.
- when the truth carries ``crlb_x``/``crlb_y``(/``crlb_z``) in nm (1 s.d.), ``rmse_lat_over_crlb =
  rmse_lat / sqrt(mean(crlb_x² + crlb_y²))`` over the same pairs (and ``rmse_ax_over_crlb``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from algorithms.evaluation.matching import AXIAL_NM, LATERAL_NM, Matches, match
from algorithms.io.table import LocTable

ALPHA_LATERAL = 1e-2  # 1/nm
ALPHA_AXIAL = 0.5e-2  # 1/nm


def efficiency(jaccard: float, rmse_nm: float, alpha: float) -> float:
    """SMLM challenge efficiency of a Jaccard index (fraction) and an RMSE (nm)."""
    return float(1.0 - np.sqrt((1.0 - jaccard) ** 2 + alpha**2 * rmse_nm**2))


def _rms(values: np.ndarray) -> float:
    return float(np.sqrt(np.mean(values))) if len(values) else float("nan")


def metrics_from_matches(truth: LocTable, pred: LocTable, m: Matches) -> dict[str, Any]:
    """Every metric this module defines, as a flat JSON-ready dict (NaN where undefined)."""
    tp, fp, fn = m.tp, m.fp, m.fn
    denom = tp + fp + fn
    out: dict[str, Any] = {
        "tp": tp, "fp": fp, "fn": fn,
        "jaccard": tp / denom if denom else 1.0,
        "precision": tp / (tp + fp) if tp + fp else float("nan"),
        "recall": tp / (tp + fn) if tp + fn else float("nan"),
    }
    t, p = m.truth, m.pred
    dx = pred["x"][p] - truth["x"][t]
    dy = pred["y"][p] - truth["y"][t]
    lat2 = dx * dx + dy * dy
    out["rmse_lat"] = _rms(lat2)
    out["bias_x"] = float(np.mean(dx)) if tp else float("nan")
    out["bias_y"] = float(np.mean(dy)) if tp else float("nan")
    three_d = truth.is_3d and pred.is_3d
    if three_d:
        dz = pred["z"][p] - truth["z"][t]
        out["rmse_ax"] = _rms(dz * dz)
        out["rmse_vol"] = _rms(lat2 + dz * dz)
        out["bias_z"] = float(np.mean(dz)) if tp else float("nan")
    ji = out["jaccard"]
    if tp:
        out["efficiency_lat"] = efficiency(ji, out["rmse_lat"], ALPHA_LATERAL)
        if three_d:
            out["efficiency_ax"] = efficiency(ji, out["rmse_ax"], ALPHA_AXIAL)
            out["efficiency_vol"] = 0.5 * (out["efficiency_lat"] + out["efficiency_ax"])
        else:
            out["efficiency_vol"] = out["efficiency_lat"]
    if "photons" in truth and "photons" in pred:
        dn = pred["photons"][p] - truth["photons"][t]
        out["photon_rmse"] = _rms(dn * dn)
    true_colour = "code" if "code" in truth else "dye" if "dye" in truth else None  # the simulator writes dye
    if true_colour and "code" in pred:
        tc = np.asarray(truth[true_colour][t]).astype(np.int64)
        pc = np.asarray(pred["code"][p]).astype(np.int64)
        rejected = pc < 0
        right = (pc == tc) & ~rejected
        out["color_accuracy"] = float(right.sum() / tp) if tp else float("nan")
        out["rejection_rate"] = float(rejected.sum() / tp) if tp else float("nan")
        n_assigned = int((~rejected).sum())
        out["color_accuracy_assigned"] = float(right.sum() / n_assigned) if n_assigned else float("nan")
    if "crlb_x" in truth and "crlb_y" in truth and tp:
        crlb_lat = _rms(truth["crlb_x"][t] ** 2 + truth["crlb_y"][t] ** 2)
        out["rmse_lat_over_crlb"] = out["rmse_lat"] / crlb_lat if crlb_lat > 0 else float("nan")
        if three_d and "crlb_z" in truth:
            crlb_ax = _rms(truth["crlb_z"][t] ** 2)
            out["rmse_ax_over_crlb"] = out["rmse_ax"] / crlb_ax if crlb_ax > 0 else float("nan")
    return out


def evaluate(
    truth: LocTable,
    pred: LocTable,
    method: str = "hungarian",
    lateral_nm: float = LATERAL_NM,
    axial_nm: float = AXIAL_NM,
) -> dict[str, Any]:
    """Match `pred` to `truth` and compute every metric (see the module docstring)."""
    m = match(truth, pred, method=method, lateral_nm=lateral_nm, axial_nm=axial_nm)
    out = metrics_from_matches(truth, pred, m)
    out["method"] = method
    return out
