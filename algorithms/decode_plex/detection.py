"""The detection threshold, chosen on held-out simulated data at the end of training and stored in the model.

A fixed threshold of 0.5 on the integrated probability is right for no model in particular: a model that has
seen little empty background passes dim false positives at 0.5 (~0.08 per frame at low density, probabilities
0.51–0.77, issue 20), one that is cautious loses dim emitters. So after training, the network localizes a
calibration set drawn from the training distribution with seeds no training step or validation used;
precision, recall and the Jaccard index are measured at every threshold of :data:`THRESHOLDS`, and the highest
threshold whose Jaccard index is within one standard error of the best goes into the model file as
``detection``: near its top the curve is flat within the sampling noise, and of equally good thresholds the
higher one passes fewer false positives on the empty background that low-density data has more of. ``fit`` uses it unless a threshold is given. Benchmark movies are never used for this.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from algorithms.decode_plex.model import DecodePlexNet
from algorithms.decode_plex.postprocess import extract
from algorithms.evaluation import evaluate
from algorithms.io.table import LocTable

THRESHOLDS = tuple(round(float(t), 2) for t in np.arange(0.2, 0.951, 0.05))
CALIBRATION_SEED_OFFSET = 2**41  # apart from every training step's seed and the validation set's (2**40)
DEFAULT_THRESHOLD = 0.5  # for models trained before the threshold was calibrated


def localize_set(net: DecodePlexNet, data: Any, device: torch.device, batch_size: int = 16,
                 prob_threshold: float = THRESHOLDS[0]) -> LocTable:
    """Localizations of every sample of a simulated set (frame = sample index), down to ``prob_threshold``."""
    net.eval()
    tables = []
    with torch.no_grad():
        n = data.frames.shape[0]
        for start in range(0, n, batch_size):
            sl = slice(start, min(n, start + batch_size))
            out = net(net.prepare(data.frames[sl].to(device)), data.aux[sl].to(device))
            tables.append(extract({k: v.float() for k, v in out.items()}, net.cfg, prob_threshold,
                                  frame_offset=start))
    return LocTable({k: np.concatenate([t[k] for t in tables]) for k in tables[0].columns})


def detection_curve(truth: LocTable, pred: LocTable, thresholds: tuple[float, ...] = THRESHOLDS) -> list[dict]:
    """Precision, recall, Jaccard index and lateral RMSE (nm) of ``pred`` kept at each threshold."""
    curve = []
    for t in thresholds:
        m = evaluate(truth, pred.select(pred["prob"] >= t))
        curve.append({"threshold": t, **{k: float(m[k]) for k in ("precision", "recall", "jaccard", "rmse_lat")
                                         if k in m}, **{k: int(m[k]) for k in ("tp", "fp", "fn")}})
    return curve


def choose(curve: list[dict]) -> float:
    """The highest threshold whose Jaccard index is within one standard error of the best one's, the error
    being the binomial one of the best point, sqrt(J(1 − J) / (TP + FP + FN))."""
    top = max(curve, key=lambda point: point["jaccard"])
    n = max(1, top["tp"] + top["fp"] + top["fn"])
    tolerance = float(np.sqrt(top["jaccard"] * (1 - top["jaccard"]) / n))
    return max(point["threshold"] for point in curve if point["jaccard"] >= top["jaccard"] - tolerance - 1e-12)


def calibrate(net: DecodePlexNet, sampler: Callable[[int, int], Any], device: torch.device, samples: int = 64,
              seed: int = 0, batch_size: int = 16) -> dict[str, Any]:
    """Choose the detection threshold on ``samples`` fresh samples of ``sampler``: ``{"prob_threshold",
    "curve", "samples", "seed"}``, what the model file keeps under ``detection``."""
    data = sampler(samples, CALIBRATION_SEED_OFFSET + seed)
    curve = detection_curve(data.truth, localize_set(net, data, device, batch_size))
    return {"prob_threshold": choose(curve), "curve": curve, "samples": int(samples), "seed": int(seed)}


def model_threshold(blob: dict[str, Any]) -> tuple[float, str]:
    """(threshold, where it comes from) for a model file: its calibrated one, else the old fixed 0.5."""
    chosen = (blob.get("detection") or {}).get("prob_threshold")
    return (float(chosen), "model") if chosen is not None else (DEFAULT_THRESHOLD, "default")


def plot_curve(detection: dict[str, Any], path: Path) -> None:
    """Precision, recall and Jaccard index against the threshold, the chosen one marked (PNG, atomic)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from algorithms.cli import atomic_path

    curve = detection["curve"]
    t = [p["threshold"] for p in curve]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for key in ("precision", "recall", "jaccard"):
        ax.plot(t, [p[key] for p in curve], marker=".", label=key)
    ax.axvline(detection["prob_threshold"], color="k", ls="--", label=f"chosen {detection['prob_threshold']:.2f}")
    ax.set(xlabel="detection threshold (integrated probability)", ylim=(0, 1.02),
           title=f"held-out simulated samples ({detection['samples']})")
    ax.legend(loc="lower left")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
