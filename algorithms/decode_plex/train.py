"""Training on samples simulated on the fly: AdamW, gradient clipping, LR schedule, checkpoints, resume.

Every step draws a fresh batch (seeded by ``seed`` and the step number, so a resumed run sees exactly
the batches an uninterrupted one would); validation uses one fixed set drawn once. A checkpoint
(``checkpoint.pt``) is written atomically at the end of every epoch; :func:`train` with ``resume=True``
continues from it. The result is one model file (``model.pt``) holding the weights, the resolved
configs, the calibration's sha256, the code version and the detection threshold chosen on held-out samples
(:mod:`algorithms.decode_plex.detection`); :func:`load_model` reads it back.

The sample source is any ``sampler(batch_size, seed)`` returning an object with ``frames`` (B, T, C, H,
W) photons, ``aux``, ``targets`` (:class:`~algorithms.decode_plex.loss.Targets`) and ``truth`` (LocTable,
frame = sample index); the CLI uses :func:`algorithms.decode_plex.samples.sample_batch` (the simulation engine).
"""

from __future__ import annotations

import math
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from algorithms.cli import atomic_path, progress
from algorithms.decode_plex.detection import calibrate
from algorithms.decode_plex.loss import LossConfig, decode_plex_loss
from algorithms.decode_plex.model import DecodePlexNet, ModelConfig, select_device
from algorithms.decode_plex.postprocess import extract
from algorithms.evaluation import evaluate
from algorithms.io.table import LocTable

MODEL_FORMAT = "locus.decode_plex.model/2"  # 2: trained on algorithms.simulation (1: the old stand-in)


class TrainingDiverged(RuntimeError):
    """The loss or the gradient became non-finite or exploded; the message says what to change."""


@dataclass
class TrainConfig:
    epochs: int = 20
    steps_per_epoch: int = 100
    batch_size: int = 16
    lr: float = 3e-4
    weight_decay: float = 1e-4
    grad_clip: float = 1.0  # max global gradient norm
    schedule: str = "plateau"  # plateau (halve on a validation-loss plateau, as the paper) | cosine | constant
    plateau_patience: int = 3
    warmup_steps: int = 100  # linear LR warm-up: Adam's first steps can saturate the probability head
    val_samples: int = 64
    prob_threshold: float = 0.5
    seed: int = 0
    divergence_margin: float = 100.0  # a step's loss above the best so far by 100·max(1, |best|) is "blown up";
    divergence_patience: int = 20  # abort after this many blown-up steps in a row (single spikes happen)
    amp: bool = True  # bfloat16 autocast on CUDA only
    device: str | None = None  # None: CUDA if present, else CPU
    loss: LossConfig = field(default_factory=LossConfig)

    def __post_init__(self) -> None:
        if isinstance(self.loss, dict):
            self.loss = LossConfig(**self.loss)
        if self.schedule not in ("plateau", "cosine", "constant"):
            raise ValueError("schedule must be plateau, cosine or constant")
        if self.epochs < 1 or self.steps_per_epoch < 1 or self.batch_size < 1:
            raise ValueError("epochs, steps_per_epoch and batch_size must be ≥ 1")
        if self.warmup_steps < 0:
            raise ValueError("warmup_steps must be ≥ 0")


def finite_or_none(value: Any) -> Any:
    """NaN/inf → None, recursively: progress lines and JSON files must be strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite_or_none(v) for v in value]
    return value


def step_seed(seed: int, step: int) -> int:
    return (seed * 1_000_003 + step + 1) % (2**62)


VALIDATION_SEED_OFFSET = 2**40


def code_version() -> str:
    """The git commit of this checkout, or ``LOCUS_CODE_VERSION``, or "unknown"."""
    env = os.environ.get("LOCUS_CODE_VERSION")
    if env:
        return env
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def save_atomic(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _make_scheduler(opt: torch.optim.Optimizer, tc: TrainConfig):
    if tc.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=tc.plateau_patience)
    if tc.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=tc.epochs * tc.steps_per_epoch,
                                                          eta_min=tc.lr * 0.02)
    return None


def validate(net: DecodePlexNet, val: Any, tc: TrainConfig, device: torch.device) -> dict[str, float]:
    """Validation loss and detection/localization metrics on the fixed validation set."""
    net.eval()
    cfg = net.cfg
    tables, losses = [], []
    with torch.no_grad():
        n = val.frames.shape[0]
        for start in range(0, n, tc.batch_size):
            sl = slice(start, min(n, start + tc.batch_size))
            sub = val.targets.rows(sl).to(device)
            out = net(net.prepare(val.frames[sl].to(device)), val.aux[sl].to(device))
            losses.append(decode_plex_loss(out, sub, cfg, tc.loss)[1]["total"] * (sl.stop - sl.start))
            tables.append(extract(out, cfg, tc.prob_threshold, frame_offset=start))
    net.train()
    pred = LocTable({k: np.concatenate([t[k] for t in tables]) for k in tables[0].columns})
    m = evaluate(val.truth, pred)
    keep = ("jaccard", "rmse_lat", "rmse_ax", "efficiency_lat", "efficiency_vol", "precision", "recall")
    out = {k: float(m[k]) for k in keep if k in m}
    out["loss"] = sum(losses) / n
    return out


def train(
    model_cfg: ModelConfig,
    tc: TrainConfig,
    sampler: Callable[[int, int], Any],
    outputs: Path,
    resume: bool = False,
    extra: dict[str, Any] | None = None,
    report: Callable[..., None] = progress,
    calibration_samplers: dict[float, Callable[[int, int], Any]] | None = None,
) -> dict[str, Any]:
    """Train and write ``model.pt`` (+ ``checkpoint.pt`` each epoch) into ``outputs``; returns the model file.

    ``extra`` is stored in the model file as is (simulation parameters, calibration sha256, camera).
    ``calibration_samplers`` (density → sampler) choose the detection threshold; by default ``sampler``.
    Raises :class:`TrainingDiverged` when the loss or gradients blow up.
    """
    outputs = Path(outputs)
    device = select_device(tc.device)
    torch.manual_seed(tc.seed)
    net = DecodePlexNet(model_cfg).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    sched = _make_scheduler(opt, tc)
    use_amp = tc.amp and device.type == "cuda"
    start_epoch, history, best = 0, [], math.inf
    ckpt_path = outputs / "checkpoint.pt"
    if resume and ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=False)
        if ckpt["model_config"] != model_cfg.to_dict():
            raise ValueError("checkpoint was written for another model configuration; use a fresh --outputs")
        net.load_state_dict(ckpt["weights"])
        opt.load_state_dict(ckpt["optimizer"])
        if sched is not None and ckpt.get("scheduler") is not None:
            sched.load_state_dict(ckpt["scheduler"])
        start_epoch, history, best = ckpt["epoch"], ckpt["history"], ckpt["best_loss"]

    val = sampler(tc.val_samples, VALIDATION_SEED_OFFSET + tc.seed)
    t0 = time.monotonic()
    best_step = math.inf  # lowest step loss of this run: catches a blow-up inside the first epoch too
    blown = 0  # consecutive blown-up steps
    for epoch in range(start_epoch, tc.epochs):
        net.train()
        sums: dict[str, float] = {}
        for s in range(tc.steps_per_epoch):
            step = epoch * tc.steps_per_epoch + s
            batch = sampler(tc.batch_size, step_seed(tc.seed, step))
            frames, aux = batch.frames.to(device), batch.aux.to(device)
            targets = batch.targets.to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                out = net(net.prepare(frames), aux)
            out = {k: v.float() for k, v in out.items()}
            loss, parts = decode_plex_loss(out, targets, model_cfg, tc.loss)
            ref = min(best, best_step)
            high = math.isfinite(ref) and parts["total"] > ref + tc.divergence_margin * max(1.0, abs(ref))
            blown = blown + 1 if high else 0
            if not math.isfinite(parts["total"]) or blown >= max(1, tc.divergence_patience):
                raise TrainingDiverged(
                    f"training diverged at epoch {epoch} step {s}: loss {parts['total']:.4g} "
                    f"(best so far {ref:.4g}, {blown} step(s) in a row far above it); lower the learning rate "
                    f"(now {opt.param_groups[0]['lr']:.3g}) or check the photon/background ranges of the simulation"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(net.parameters(), tc.grad_clip)
            if not torch.isfinite(norm):
                raise TrainingDiverged(f"gradient became non-finite at epoch {epoch} step {s}; lower the learning rate")
            best_step = min(best_step, parts["total"])
            warm = min(1.0, (step + 1) / tc.warmup_steps) if tc.warmup_steps else 1.0
            lrs = [g["lr"] for g in opt.param_groups]
            for g in opt.param_groups:  # scaled for this step only: the schedulers never see the factor
                g["lr"] *= warm
            opt.step()
            for g, lr in zip(opt.param_groups, lrs, strict=True):
                g["lr"] = lr
            if tc.schedule == "cosine":
                sched.step()
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v / tc.steps_per_epoch
        metrics = validate(net, val, tc, device)
        if tc.schedule == "plateau":
            sched.step(metrics["loss"])
        best = min(best, sums["total"])
        record = {"epoch": epoch + 1, "train": sums, "val": metrics, "lr": opt.param_groups[0]["lr"],
                  "elapsed_s": round(time.monotonic() - t0, 2)}
        history.append(record)
        report((epoch + 1) / tc.epochs, "train", epoch=epoch + 1, metrics=finite_or_none({
            "loss": round(sums["total"], 4), **{f"val_{k}": round(v, 4) for k, v in metrics.items()},
            "lr": record["lr"]}))
        save_atomic({"weights": net.state_dict(), "optimizer": opt.state_dict(),
                     "scheduler": None if sched is None else sched.state_dict(), "epoch": epoch + 1,
                     "history": history, "best_loss": best, "model_config": model_cfg.to_dict()}, ckpt_path)
    # The detection threshold the model is fitted with, chosen on samples no step or validation saw.
    detection = calibrate(net, calibration_samplers or {0.0: sampler}, device, samples=max(tc.val_samples, 64),
                          seed=tc.seed, batch_size=tc.batch_size)
    report(1.0, "calibrate", metrics={"prob_threshold": detection["prob_threshold"], "calibration_jaccard": max(
        p["jaccard"] for p in detection["curve"])})
    model_file = {
        "format": MODEL_FORMAT,
        "detection": detection,
        "weights": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "model_config": model_cfg.to_dict(),
        "train_config": asdict(tc),
        "history": history,
        "code_version": code_version(),
        **(extra or {}),
    }
    save_atomic(model_file, outputs / "model.pt")
    return model_file


def load_model(path: Path, device: torch.device | None = None) -> tuple[DecodePlexNet, dict[str, Any]]:
    """The network (eval mode) and the whole model file; ValueError when it is not a model file."""
    try:
        # weights_only: a model file is user input, and unpickling arbitrary objects would run its code on the
        # worker. Model files hold only tensors, dicts, lists and numbers, which this loader allows.
        blob = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds on a foreign file
        raise ValueError(f"{path} is not a DECODE-Plex model file ({type(exc).__name__})") from None
    if isinstance(blob, dict) and blob.get("format") == "locus.decode_plex.model/1":
        raise ValueError(f"{path} was trained on the retired stand-in simulator; train it again")
    if not isinstance(blob, dict) or blob.get("format") != MODEL_FORMAT:
        raise ValueError(f"{path} is not a DECODE-Plex model file")
    net = DecodePlexNet(ModelConfig.from_dict(blob["model_config"]))
    net.load_state_dict(blob["weights"])
    net.eval()
    if device is not None:
        net.to(device)
    return net, blob


def plot_history(history: list[dict[str, Any]], path: Path) -> None:
    """Loss and validation metrics per epoch as one PNG (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    axes[0].plot(ep, [h["train"]["total"] for h in history], label="train")
    axes[0].plot(ep, [h["val"]["loss"] for h in history], label="validation")
    axes[0].set(xlabel="epoch", ylabel="loss")
    axes[0].legend()
    axes[1].plot(ep, [h["val"].get("jaccard", float("nan")) for h in history], label="JI")
    axes[1].plot(ep, [h["val"].get("efficiency_lat", float("nan")) for h in history], label="efficiency (lat)")
    axes[1].set(xlabel="epoch", ylim=(0, 1))
    axes[1].legend()
    axes[2].plot(ep, [h["val"].get("rmse_lat", float("nan")) for h in history], label="lateral")
    if any("rmse_ax" in h["val"] for h in history):
        axes[2].plot(ep, [h["val"].get("rmse_ax", float("nan")) for h in history], label="axial")
    axes[2].set(xlabel="epoch", ylabel="RMSE (nm)")
    axes[2].legend()
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
