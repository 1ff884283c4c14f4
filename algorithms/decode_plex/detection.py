"""The detection threshold, chosen on held-out simulated data at the end of training and stored in the model.

A fixed threshold of 0.5 on the integrated probability is right for no model in particular: a model that has
seen little empty background passes dim false positives at 0.5 (~0.08 per frame at low density, probabilities
0.51–0.77, issue 20), one that is cautious loses dim emitters. So after training, the network localizes
calibration sets drawn from the training simulation at a tenth, three tenths and all of its emitter density,
with seeds no training step or validation used; precision, recall and the Jaccard index are measured at every
threshold of :data:`THRESHOLDS`, and the threshold with the highest Jaccard index averaged over the densities
goes into the model file as ``detection`` with the curves (the training outputs plot them). ``fit`` uses it unless a threshold is given. Benchmark movies are never used for this.
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
DENSITY_FACTORS = (0.1, 0.3, 1.0)  # calibration densities, as fractions of the training density


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
    """The threshold of the highest Jaccard index (of equal ones, the highest threshold)."""
    best = max(point["jaccard"] for point in curve)
    return max(point["threshold"] for point in curve if point["jaccard"] >= best - 1e-12)


def calibrate(net: DecodePlexNet, samplers: dict[float, Callable[[int, int], Any]], device: torch.device,
              samples: int = 64, seed: int = 0, batch_size: int = 16) -> dict[str, Any]:
    """Choose the detection threshold on ``samples`` fresh samples from each sampler (keyed by its emitter
    density, /µm²): the threshold of the highest Jaccard index averaged over them. ``{"prob_threshold",
    "curve" (the averages), "curves" (per density), "samples", "seed"}``, what the model file keeps."""
    curves = {}
    for density, sampler in samplers.items():
        data = sampler(samples, CALIBRATION_SEED_OFFSET + seed)
        curves[f"{density:g}"] = detection_curve(data.truth, localize_set(net, data, device, batch_size))
    mean = [{"threshold": t, **{k: float(np.mean([c[i][k] for c in curves.values()]))
                                 for k in ("precision", "recall", "jaccard")}}
            for i, t in enumerate(THRESHOLDS)]
    return {"prob_threshold": choose(mean), "curve": mean, "curves": curves, "samples": int(samples),
            "seed": int(seed)}


def density_samplers(sim: Any, sampler: Callable[..., Any], calibration: Any = None) -> dict[float, Callable]:
    """Samplers of the training simulation at :data:`DENSITY_FACTORS` of its density: a movie's density is not
    known in advance, and at low density false positives on empty background weigh more (a threshold chosen at
    the training density alone, 0.35 for the bundled model, cost it JI 0.931 → 0.924 at 0.15 µm⁻²)."""
    import dataclasses

    out = {}
    for factor in DENSITY_FACTORS:
        config = dataclasses.replace(sim, density_per_um2=sim.density_per_um2 * factor)
        out[config.density_per_um2] = lambda b, s, c=config: sampler(c, b, s, calibration)
    return out


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
        ax.plot(t, [p[key] for p in curve], marker=".", label=f"{key} (mean)")
    for density, points in (detection.get("curves") or {}).items():
        ax.plot(t, [p["jaccard"] for p in points], lw=0.8, ls=":", label=f"jaccard at {density} µm⁻²")
    ax.axvline(detection["prob_threshold"], color="k", ls="--", label=f"chosen {detection['prob_threshold']:.2f}")
    ax.set(xlabel="detection threshold (integrated probability)", ylim=(0, 1.02),
           title=f"held-out simulated samples ({detection['samples']} per density)")
    ax.legend(loc="lower left", fontsize=7)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
