"""The DECODE-Plex training loss: count term + Gaussian-mixture localization term + background MSE.

For one sample, code k, per-pixel detection probabilities p_i, and the E_k true emitters u_e of code k:

- **count**: the number of detections is a Poisson-binomial sum of the p_i, approximated by a Gaussian
  with mean Σp_i and variance Σp_i(1-p_i); ``L_count = -log N(E_k | Σp, Σp(1-p) + var_floor)``.
- **localization**: every pixel i proposes a Gaussian with means μ_i (photons…, x, y, z) and diagonal
  σ_i; the mixture weights are w_i = p_i / Σ_j p_j; ``L_loc = -Σ_e log Σ_i w_i N(u_e | μ_i, σ_i²)``.
  x and y are in pixels (pixel j spans [j, j+1), so its centre is j + 0.5, plus the predicted offset),
  photons / ``photon_scale``, z / ``z_scale_nm`` — the network's own units.
- **background**: mean squared error of the predicted background (/ ``bg_scale``) per pixel, summed
  over channels, times ``bg_weight``.

The sample's loss is the sum of the three; the batch loss is the mean over samples.

**Frames without emitters** (our choice, ``empty_frames="penalise"``, the default): they keep the
count term, so the network is pushed to put no probability mass where there is nothing (false
positives in empty frames are otherwise never penalised). That is only safe because the variance has a
floor (``var_floor``, 0.05): without it -log N(0 | m, m) → -∞ as m → 0, an unbounded reward. The
original DECODE-Plex gives such frames no count penalty; ``empty_frames="ignore"`` reproduces that.
Frames without emitters contribute nothing to the localization term in either case.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from algorithms.decode_plex.model import ModelConfig

LOG_2PI = math.log(2 * math.pi)


@dataclass
class Targets:
    """Ground truth of one batch, padded to the largest emitter count E.

    ``xy_px`` (B, E, 2): x (columns), y (rows) in pixels, pixel j spanning [j, j+1);
    ``z_nm`` (B, E) or None; ``photons`` (B, E, P) photons (P = model's ``n_photons``);
    ``mask`` (B, E) bool, true for real emitters; ``code`` (B, E) long (0 unless n_codes > 1);
    ``bg`` (B, C, H, W) photons/px or None.
    """

    xy_px: torch.Tensor
    photons: torch.Tensor
    mask: torch.Tensor
    z_nm: torch.Tensor | None = None
    code: torch.Tensor | None = None
    bg: torch.Tensor | None = None

    def rows(self, sl: slice) -> Targets:
        """The targets of samples ``sl``."""

        def cut(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t[sl]

        return Targets(self.xy_px[sl], self.photons[sl], self.mask[sl], cut(self.z_nm), cut(self.code), cut(self.bg))

    def to(self, device: torch.device) -> Targets:
        def mv(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device)

        return Targets(self.xy_px.to(device), self.photons.to(device), self.mask.to(device),
                       mv(self.z_nm), mv(self.code), mv(self.bg))


@dataclass
class LossConfig:
    empty_frames: str = "penalise"  # penalise | ignore (see the module docstring)
    var_floor: float = 0.05
    bg_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.empty_frames not in ("penalise", "ignore"):
            raise ValueError("empty_frames must be 'penalise' or 'ignore'")


def pixel_means(out: dict[str, torch.Tensor], cfg: ModelConfig) -> torch.Tensor:
    """(B, D, H, W) per-pixel means in network units: photons…, x px, y px (, z)."""
    photons, offset = out["photons"], out["offset"]
    b, _, h, w = offset.shape
    ys = torch.arange(h, dtype=offset.dtype, device=offset.device).view(1, h, 1) + 0.5
    xs = torch.arange(w, dtype=offset.dtype, device=offset.device).view(1, 1, w) + 0.5
    parts = [photons, offset[:, 0:1] + xs, offset[:, 1:2] + ys]
    if cfg.three_d:
        parts.append(offset[:, 2:3])
    return torch.cat(parts, dim=1)


def target_vectors(t: Targets, cfg: ModelConfig) -> torch.Tensor:
    """(B, E, D) emitter vectors in network units, matching :func:`pixel_means`."""
    parts = [t.photons / cfg.photon_scale, t.xy_px]
    if cfg.three_d:
        if t.z_nm is None:
            raise ValueError("a 3D model needs z targets")
        parts.append((t.z_nm / cfg.z_scale_nm).unsqueeze(-1))
    return torch.cat(parts, dim=-1)


def decode_plex_loss(
    out: dict[str, torch.Tensor], targets: Targets, cfg: ModelConfig, loss_cfg: LossConfig | None = None
) -> tuple[torch.Tensor, dict[str, float]]:
    """Batch loss (scalar tensor) and its parts as floats (count, loc, bg, total)."""
    lc = loss_cfg or LossConfig()
    prob = out["prob"]  # (B, K, H, W)
    b, k, h, w = prob.shape
    p = prob.reshape(b, k, h * w)
    mask = targets.mask.bool()
    code = targets.code if targets.code is not None and k > 1 else torch.zeros_like(mask, dtype=torch.long)
    # one-hot (B, E, K) of the code of each real emitter
    member = torch.nn.functional.one_hot(code.clamp(min=0), k).to(p.dtype) * mask.unsqueeze(-1).to(p.dtype)

    # count term
    n_true = member.sum(dim=1)  # (B, K)
    mean = p.sum(-1)
    var = (p * (1 - p)).sum(-1) + lc.var_floor
    count = 0.5 * (LOG_2PI + torch.log(var)) + (n_true - mean) ** 2 / (2 * var)
    if lc.empty_frames == "ignore":
        count = count * (n_true > 0).to(count.dtype)
    count = count.sum(-1)  # (B,)

    # mixture term
    mu = pixel_means(out, cfg).reshape(b, -1, h * w)  # (B, D, N)
    sig = out["sigma"].reshape(b, -1, h * w)
    u = target_vectors(targets, cfg)  # (B, E, D)
    z = (u.unsqueeze(-1) - mu.unsqueeze(1)) / sig.unsqueeze(1)  # (B, E, D, N)
    log_n = (-0.5 * z * z - torch.log(sig).unsqueeze(1) - 0.5 * LOG_2PI).sum(2)  # (B, E, N)
    log_w = torch.log(p.clamp(min=1e-12)) - torch.log(p.sum(-1, keepdim=True).clamp(min=1e-12))  # (B, K, N)
    log_w_e = torch.einsum("bek,bkn->ben", member, log_w)  # pick each emitter's code's weights
    log_mix = torch.logsumexp(log_w_e + log_n, dim=-1)  # (B, E)
    loc = -(log_mix * mask.to(log_mix.dtype)).sum(-1)

    # background term
    if targets.bg is not None:
        err = out["bg"] - targets.bg / cfg.bg_scale
        bg = lc.bg_weight * (err * err).mean(dim=(2, 3)).sum(1)
    else:
        bg = torch.zeros_like(loc)

    total = (count + loc + bg).mean()
    parts = {name: float(v.detach().mean()) for name, v in (("count", count), ("loc", loc), ("bg", bg), ("total", total))}
    return total, parts
