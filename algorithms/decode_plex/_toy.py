"""A tiny Gaussian-PSF frame generator — a STAND-IN for tests until the simulation engine is wired in.

It exists so the network, loss, post-processing and training loop can be checked against known
emitters now. It is deliberately simple and will be replaced by ``algorithms.simulation`` (spline
PSFs, camera models, photophysics, CRLB; its own issue): do not build on it outside tests/benchmarks.

What it draws, per sample (all on the reference channel's pixel grid; pixel j spans [j, j+1) px):
- a Poisson number of emitters (mean ``emitters_per_frame``) uniform in the frame (``margin_px`` from
  the edges), photons uniform in ``photons``, z uniform in ``z_range_nm`` (3D) or 0;
- an astigmatic integrated Gaussian PSF: σx = σ0·sqrt(1 + ((z - c)/d)²), σy = σ0·sqrt(1 + ((z + c)/d)²);
- channels: channel c is shifted by ``shifts_px[c]``; biplane: photons split by ``biplane_fractions``
  and channel c focused at ``biplane_focus_nm[c]``; multicolor: the emitter's dye ``code`` sets the
  photon ratio channel-1 / channel-0 (``dye_ratios``), or photons are drawn independently per channel
  when ``dye_ratios`` is empty (training, as in the paper);
- window 3: each emitter of the centre frame is also on in each neighbour frame with probability
  ``p_neighbour`` (same place, fresh photons), plus independent neighbour-only emitters;
- uniform background per channel drawn in ``bg``; Poisson shot noise; frames in photons.
Targets are the centre frame's emitters with ≥ ``min_target_photons`` (summed over channels); dimmer
ones are drawn but not targets (as the paper does).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from algorithms.decode_plex.loss import Targets
from algorithms.decode_plex.model import ChannelTransform, ModelConfig, indicator_maps
from algorithms.io.table import LocTable


@dataclass
class ToyConfig:
    height: int = 32
    width: int = 32
    mode: str = "single"
    channels: int = 1
    window: int = 1
    three_d: bool = False
    px_size_nm: float = 100.0
    emitters_per_frame: float = 3.0
    photons: tuple[float, float] = (1000.0, 5000.0)
    bg: tuple[float, float] = (20.0, 60.0)
    z_range_nm: tuple[float, float] = (-500.0, 500.0)
    sigma0_px: float = 1.0
    astig_c_nm: float = 300.0
    astig_d_nm: float = 400.0
    margin_px: float = 1.0
    shifts_px: list[tuple[float, float]] = field(default_factory=list)  # per channel, (0, 0) for ref
    biplane_fractions: list[float] = field(default_factory=lambda: [0.5, 0.5])
    biplane_focus_nm: list[float] = field(default_factory=lambda: [-250.0, 250.0])
    dye_ratios: list[float] = field(default_factory=list)  # multicolor: N(channel 1) / N(channel 0)
    p_neighbour: float = 0.5
    min_target_photons: float = 100.0

    def shift(self, c: int) -> tuple[float, float]:
        return tuple(self.shifts_px[c]) if c < len(self.shifts_px) else (0.0, 0.0)  # type: ignore[return-value]

    def transforms(self) -> list[ChannelTransform]:
        return [ChannelTransform(shift_px=np.asarray(self.shift(c), float)) for c in range(self.channels)]

    def model_config(self, **overrides) -> ModelConfig:
        """A model config whose scales are derived from these simulation parameters."""
        bg_hi, ph_hi = float(self.bg[1]), float(self.photons[1])
        kw = dict(
            mode=self.mode, channels=self.channels, window=self.window, three_d=self.three_d,
            input_offset=float(np.mean(self.bg)), input_scale=max(ph_hi / 20.0, 1.0),
            photon_scale=ph_hi * 1.2, bg_scale=bg_hi * 1.2,
            z_scale_nm=max(abs(self.z_range_nm[0]), abs(self.z_range_nm[1])) * 1.2 if self.three_d else 1.0,
            px_size_nm=(self.px_size_nm, self.px_size_nm),
        )
        kw.update(overrides)
        return ModelConfig(**kw)


def _pixel_integrals(centre: torch.Tensor, sigma: torch.Tensor, n: int) -> torch.Tensor:
    """(…, n) fraction of a 1D Gaussian falling into pixels [j, j+1)."""
    edges = torch.arange(n + 1, dtype=centre.dtype, device=centre.device)
    cdf = torch.erf((edges - centre.unsqueeze(-1)) / (math.sqrt(2.0) * sigma.unsqueeze(-1)))
    return 0.5 * (cdf[..., 1:] - cdf[..., :-1])


def render(cfg: ToyConfig, xy: torch.Tensor, z: torch.Tensor, photons: torch.Tensor, on: torch.Tensor) -> torch.Tensor:
    """Expected photons (N, H, W) of emitters (N, E) on one channel (xy already in that channel's px)."""
    sx = cfg.sigma0_px * torch.sqrt(1 + ((z - cfg.astig_c_nm) / cfg.astig_d_nm) ** 2)
    sy = cfg.sigma0_px * torch.sqrt(1 + ((z + cfg.astig_c_nm) / cfg.astig_d_nm) ** 2)
    ix = _pixel_integrals(xy[..., 0], sx, cfg.width)  # (N, E, W)
    iy = _pixel_integrals(xy[..., 1], sy, cfg.height)  # (N, E, H)
    w = photons * on.to(photons.dtype)
    return torch.einsum("ne,neh,new->nhw", w, iy, ix)


@dataclass
class ToyBatch:
    frames: torch.Tensor  # (B, T, C, H, W) photons
    aux: torch.Tensor  # (B, A, H, W)
    targets: Targets
    truth: LocTable  # the centre frames' target emitters, nm, frame = sample index


def sample_batch(cfg: ToyConfig, batch: int, seed: int) -> ToyBatch:
    """Draw `batch` independent samples; the same seed always gives the same batch."""
    g = torch.Generator().manual_seed(int(seed))
    b, t_len, c_len, h, w = batch, cfg.window, cfg.channels, cfg.height, cfg.width
    lam = cfg.emitters_per_frame
    e_max = max(1, int(math.ceil(lam + 5 * math.sqrt(lam) + 2)))

    def uniform(shape, lo, hi):
        return lo + (hi - lo) * torch.rand(shape, generator=g, dtype=torch.float64)

    def draw_set(n_mean):
        n = torch.poisson(torch.full((b,), float(n_mean), dtype=torch.float64), generator=g).clamp(max=e_max)
        on = torch.arange(e_max).unsqueeze(0) < n.unsqueeze(1)
        xy = torch.stack([uniform((b, e_max), cfg.margin_px, w - cfg.margin_px),
                          uniform((b, e_max), cfg.margin_px, h - cfg.margin_px)], dim=-1)
        z = uniform((b, e_max), *cfg.z_range_nm) if cfg.three_d else torch.zeros(b, e_max, dtype=torch.float64)
        ph = uniform((b, e_max), *cfg.photons)
        n_dyes = max(1, len(cfg.dye_ratios))
        code = torch.randint(0, n_dyes, (b, e_max), generator=g)
        return xy, z, ph, on, code

    centre = draw_set(lam)

    def channel_photons(ph: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        """(B, E, C) photons per channel."""
        if cfg.mode == "single":
            return ph.unsqueeze(-1)
        if cfg.mode == "biplane":
            return ph.unsqueeze(-1) * torch.tensor(cfg.biplane_fractions[:c_len], dtype=ph.dtype)
        if cfg.dye_ratios:
            r = torch.tensor(cfg.dye_ratios, dtype=ph.dtype)[code]
            return torch.stack([ph / (1 + r), ph * r / (1 + r)], dim=-1)
        return torch.stack([ph] + [uniform(ph.shape, *cfg.photons) for _ in range(c_len - 1)], dim=-1)

    frames = torch.zeros(b, t_len, c_len, h, w, dtype=torch.float64)
    bg = uniform((b, c_len), *cfg.bg)
    centre_t = t_len // 2
    for ti in range(t_len):
        if ti == centre_t:
            xy, z, ph, on, code = centre
        else:
            keep = torch.rand(b, e_max, generator=g, dtype=torch.float64) < cfg.p_neighbour
            other = draw_set(lam * (1 - cfg.p_neighbour))
            xy = torch.cat([centre[0], other[0]], 1)
            z = torch.cat([centre[1], other[1]], 1)
            ph = torch.cat([uniform((b, e_max), *cfg.photons), other[2]], 1)
            on = torch.cat([centre[3] & keep, other[3]], 1)
            code = torch.cat([centre[4], other[4]], 1)
        per_channel = channel_photons(ph, code)
        for ci in range(c_len):
            dx, dy = cfg.shift(ci)
            xy_c = xy + torch.tensor([dx, dy], dtype=xy.dtype)
            z_c = z - (cfg.biplane_focus_nm[ci] if cfg.mode == "biplane" else 0.0)
            frames[:, ti, ci] = render(cfg, xy_c, z_c, per_channel[..., ci], on)
    frames = frames + bg.view(b, 1, c_len, 1, 1)
    frames = torch.poisson(frames, generator=g).to(torch.float32)

    xy, z, ph, on, code = centre
    per_channel = channel_photons(ph, code)
    total = per_channel.sum(-1)
    target = on & (total >= cfg.min_target_photons)
    n_photon_out = c_len if cfg.mode == "multicolor" else 1
    target_ph = per_channel if n_photon_out > 1 else total.unsqueeze(-1)
    targets = Targets(
        xy_px=xy.float(), photons=target_ph.float(), mask=target,
        z_nm=z.float() if cfg.three_d else None, code=code,
        bg=bg.float().view(b, c_len, 1, 1).expand(b, c_len, h, w).contiguous(),
    )
    aux_np = indicator_maps(cfg.transforms(), (h, w))
    aux = torch.from_numpy(aux_np).unsqueeze(0).expand(b, -1, -1, -1).contiguous()

    bi, ei = torch.nonzero(target, as_tuple=True)
    cols = {
        "frame": bi.numpy(), "x": (xy[bi, ei, 0] * cfg.px_size_nm).numpy(),
        "y": (xy[bi, ei, 1] * cfg.px_size_nm).numpy(), "photons": total[bi, ei].numpy(),
        "code": code[bi, ei].numpy(),
    }
    if cfg.three_d:
        cols["z"] = z[bi, ei].numpy()
    for ci in range(c_len if c_len > 1 else 0):
        cols[f"photons_{ci}"] = per_channel[bi, ei, ci].numpy()
    truth = LocTable.from_arrays({"px_size_nm": cfg.px_size_nm, "source": "toy"}, **cols)
    return ToyBatch(frames, aux, targets, truth)
