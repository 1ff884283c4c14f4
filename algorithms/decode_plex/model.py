"""The DECODE-Plex network: per-frame shared U-Net, union U-Net, bounded per-pixel output heads.

Input
    ``frames``: ``(B, T, C, H, W)`` float32, photons already divided by the model's ``input_scale``
    (design §6 frames, one temporal window of ``T`` = 1 or 3 frames centred on the predicted frame).
    ``aux``: ``(B, A, H, W)`` transformation indicator maps (``A = 2·(C-1)``: per non-reference channel
    the x and y displacement, in pixels / 10, from the reference channel to that channel; see
    :func:`algorithms.decode_plex.samples.aux_maps`). Single-channel models have ``A = 0``.

Stages
    1. *shared* U-Net, applied to every (frame, channel) slice: input = the slice (1 map) + the indicator
       maps + a one-hot of the channel (so one set of weights serves all channels yet knows which it
       sees). ``shared_per_channel=True`` instead gives each channel its own U-Net (as in the
       DECODE-Plex paper), shared over the frames of the window.
    2. *union* U-Net over the concatenated ``T·C`` feature maps + the indicator maps.
    3. heads, each conv3×3-ELU-conv1×1 on the union features.

Outputs (dict, all ``(B, n, H, W)``, every one bounded)
    ``prob``      n = K codes         sigmoid → (0, 1)      detection probability (``prob_logit`` too)
    ``photons``   n = P               sigmoid → (0, 1)      × ``photon_scale`` = photons
    ``offset``    n = 2 (+1 if 3D)    tanh → (-1, 1)        x, y sub-pixel offset from the pixel centre
                                                            in px; z × ``z_scale_nm`` = nm from focus
    ``sigma``     n = P + 2 (+1)      sigmoid·3 + 0.01      σ of photons, x, y (, z) in the same
                                                            normalised units as the means
    ``bg``        n = C               sigmoid → (0, 1)      × ``bg_scale`` = photons/px per channel
    P = C photon outputs (multicolor) or one linked photon output (single-channel, biplane).

Sizes (``DecodePlexNet.n_parameters()``; biplane C=2, T=3 / single C=1, T=1):
    ``features=48, depth=2`` (default) 2.33 M / 2.22 M parameters; ``features=64, depth=3`` (the paper's
    width and depth, two convs per stage where the paper has three) 15.8 M / 15.6 M;
    ``features=16, depth=2`` (tests) 0.26 M / 0.25 M. H and W must be divisible by ``2**depth``; pad otherwise
    (:func:`pad_to_multiple`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - torch convention
from torch import nn

MODES = ("single", "biplane", "multicolor")


@dataclass
class ModelConfig:
    """Everything that defines a network and the meaning of its outputs."""

    mode: str = "single"  # single | biplane | multicolor
    channels: int = 1
    window: int = 1  # 1 or 3 frames
    n_codes: int = 1  # detection maps; colors are assigned from photon ratios (postprocess), so 1
    three_d: bool = True
    features: int = 48
    depth: int = 2
    shared_per_channel: bool = False  # False: one U-Net for all channels; True: one per channel
    # Scaling between network units and physical units (derived from the simulation parameters).
    input_scale: float = 100.0  # photons: frames are divided by this before the network
    input_offset: float = 0.0  # photons subtracted before scaling (e.g. the mean background)
    photon_scale: float = 10000.0  # photons
    z_scale_nm: float = 700.0  # nm: z output of ±1 ↔ ±z_scale_nm
    bg_scale: float = 200.0  # photons / px
    px_size_nm: tuple[float, float] = (100.0, 100.0)  # (x, y)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {self.mode!r}")
        if self.window not in (1, 3):
            raise ValueError("window must be 1 or 3 frames")
        if self.mode == "single" and self.channels != 1:
            raise ValueError("single-channel mode has channels=1")
        if self.mode != "single" and self.channels < 2:
            raise ValueError(f"{self.mode} mode needs at least 2 channels")
        if self.depth < 1 or self.features < 4:
            raise ValueError("depth must be ≥ 1 and features ≥ 4")
        self.px_size_nm = tuple(float(v) for v in self.px_size_nm)  # type: ignore[assignment]

    @property
    def n_photons(self) -> int:
        """Photon outputs: one per channel in multicolor mode, one linked count otherwise."""
        return self.channels if self.mode == "multicolor" else 1

    @property
    def n_aux(self) -> int:
        return 2 * (self.channels - 1)

    @property
    def n_dims(self) -> int:
        """Per-emitter quantities the mixture models: photons…, x, y (, z)."""
        return self.n_photons + 2 + int(self.three_d)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["px_size_nm"] = list(self.px_size_nm)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        d = dict(d)
        if "px_size_nm" in d:
            d["px_size_nm"] = tuple(d["px_size_nm"])
        return cls(**d)


def _block(cin: int, cout: int, n_conv: int = 2) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(n_conv):
        layers += [nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1), nn.ELU(inplace=True)]
    return nn.Sequential(*layers)


class UNet(nn.Module):
    """A small 2D U-Net: ``depth`` down/up stages, features doubling per stage, ELU, skip connections."""

    def __init__(self, cin: int, features: int, depth: int) -> None:
        super().__init__()
        widths = [features * 2**i for i in range(depth + 1)]
        self.inc = _block(cin, widths[0])
        self.down = nn.ModuleList(_block(widths[i], widths[i + 1]) for i in range(depth))
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in reversed(range(depth))
        )
        self.merge = nn.ModuleList(_block(2 * widths[i], widths[i]) for i in reversed(range(depth)))
        self.out_channels = features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.inc(x)]
        for down in self.down:
            skips.append(down(F.max_pool2d(skips[-1], 2)))
        y = skips.pop()
        for up, merge in zip(self.up, self.merge, strict=True):
            y = merge(torch.cat([up(y), skips.pop()], dim=1))
        return y


class _Head(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(cin, cin, 3, padding=1), nn.ELU(inplace=True), nn.Conv2d(cin, cout, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


SIGMA_MIN, SIGMA_MAX = 0.01, 3.0


class DecodePlexNet(nn.Module):
    """Per-frame shared U-Net → union U-Net → bounded heads (see the module docstring)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c, f = cfg.channels, cfg.features
        shared_in = 1 + cfg.n_aux + (c if c > 1 and not cfg.shared_per_channel else 0)
        n_shared = c if cfg.shared_per_channel else 1
        self.shared = nn.ModuleList(UNet(shared_in, f, cfg.depth) for _ in range(n_shared))
        self.union = UNet(cfg.window * c * f + cfg.n_aux, f, cfg.depth)
        self.head_prob = _Head(f, cfg.n_codes)
        self.head_photons = _Head(f, cfg.n_photons)
        self.head_offset = _Head(f, 2 + int(cfg.three_d))
        self.head_sigma = _Head(f, cfg.n_dims)
        self.head_bg = _Head(f, c)
        with torch.no_grad():  # start with few detections: sigmoid(-4) ≈ 0.02 per pixel
            self.head_prob.net[-1].bias.fill_(-4.0)

    def forward(self, frames: torch.Tensor, aux: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        b, t, c, h, w = frames.shape
        if (t, c) != (cfg.window, cfg.channels):
            raise ValueError(f"model expects window {cfg.window} × {cfg.channels} channels, got {t} × {c}")
        m = 2**cfg.depth
        if h % m or w % m:
            raise ValueError(f"frame height and width must be multiples of {m} (pad_to_multiple)")
        if aux is None:
            aux = frames.new_zeros(b, cfg.n_aux, h, w)
        feats = []
        for ti in range(t):
            for ci in range(c):
                parts = [frames[:, ti, ci : ci + 1], aux]
                if cfg.shared_per_channel:
                    net = self.shared[ci]
                else:
                    net = self.shared[0]
                    if c > 1:
                        onehot = frames.new_zeros(b, c, h, w)
                        onehot[:, ci] = 1.0
                        parts.append(onehot)
                feats.append(net(torch.cat(parts, dim=1)))
        u = self.union(torch.cat([*feats, aux], dim=1))
        logit = self.head_prob(u)
        return {
            "prob_logit": logit,
            "prob": torch.sigmoid(logit),
            "photons": torch.sigmoid(self.head_photons(u)),
            "offset": torch.tanh(self.head_offset(u)),
            "sigma": torch.sigmoid(self.head_sigma(u)) * SIGMA_MAX + SIGMA_MIN,
            "bg": torch.sigmoid(self.head_bg(u)),
        }

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def prepare(self, frames_photons: torch.Tensor) -> torch.Tensor:
        """Physical frames (photons) → network input units."""
        return (frames_photons - self.cfg.input_offset) / self.cfg.input_scale


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Edge-pad the last two axes at the bottom/right up to a multiple; returns the original (H, W)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        lead = x.shape[:-2]
        flat = F.pad(x.reshape(1, -1, h, w), (0, pw, 0, ph), mode="replicate")
        x = flat.reshape(*lead, h + ph, w + pw)
    return x, (h, w)


def set_cpu_threads(threads: int | None = None) -> int:
    """Set torch's CPU threads and answer how many: ``threads``, or by default every core this process may use
    but one (at least one). torch's own default, all cores, leaves none for the worker's other threads and the
    simulator; with 2 threads on a busy 2-core box a training step ran ~10× slower than with 1 (issue 20)."""
    import os

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    n = int(threads) if threads else max(1, usable - 1)
    torch.set_num_threads(n)
    return n


def select_device(prefer: str | None = None) -> torch.device:
    """CUDA if present (or asked for and present), else CPU."""
    if prefer == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")
