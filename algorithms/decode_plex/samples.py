"""Training and validation samples drawn from the simulation engine (:mod:`algorithms.simulation`).

Each sample is its own short movie of ``window`` frames simulated by :func:`algorithms.simulation.render.simulate`
(blinking emitters, Gaussian PSF or the calibration's cubic splines, per-channel geometry transforms, the
camera model), so samples are independent and a window of 3 frames sees real blinking. The network input
is the movie converted back to photons with the camera's inverse — exactly what ``fit`` does with a
recorded movie — and the targets are the centre frame's emitters (x, y in reference-channel pixels, pixel
j spanning [j, j+1); z in nm; photons linked or per channel) with at least ``min_target_photons`` photons;
dimmer ones are rendered but not targets (as DECODE-Plex does). The background target is the simulated
background of the centre frame.

Modes: ``single`` (one channel), ``biplane`` (photons split by ``plane_ratios``, one linked photon target =
their sum), ``multicolor`` (per-channel photons: independent per channel for training when ``dye_ratios`` is
empty, as the paper trains; ratiometric by dye when ratios are given).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from algorithms.decode_plex.loss import Targets
from algorithms.decode_plex.model import ModelConfig
from algorithms.decode_plex.postprocess import dye_fractions
from algorithms.io.table import LocTable
from algorithms.simulation.geometry import ChannelGeometry, translation
from algorithms.simulation.render import SimulationConfig, simulate

INDICATOR_SCALE_PX = 10.0  # indicator maps are displacements / 10 px, so typical values are O(1)


@dataclass
class SampleConfig:
    """What one training sample looks like; units in the names, photons per pixel for backgrounds."""

    frame_size: tuple[int, int] = (32, 32)  # (H, W) px
    mode: str = "single"
    channels: int = 1
    window: int = 1
    three_d: bool = False
    px_size_nm: float = 100.0
    density_per_um2: float = 0.3  # emitters on per µm² per frame
    on_time_frames: float = 2.0
    photons: tuple[float, float] = (1000.0, 5000.0)  # flux per frame when fully on
    bg: tuple[float, float] = (10.0, 100.0)  # photons/px; simulate's default range too
    z_range_nm: tuple[float, float] = (-500.0, 500.0)  # 3D only
    psf: dict[str, Any] = field(default_factory=lambda: {"kind": "gaussian", "sigma_px": 1.2})
    camera: Any = "perfect"  # preset name or dict (algorithms.simulation.camera)
    transforms: list[list[list[float]]] | None = None  # 3 × 3 per channel, channel → reference, px
    shifts_px: list[tuple[float, float]] = field(default_factory=list)  # shortcut: channel k at ref + shift
    plane_ratios: list[float] = field(default_factory=lambda: [0.5, 0.5])  # biplane photon split
    focal_offsets_nm: list[float] = field(default_factory=list)  # biplane: each plane's focus (nm)
    dye_ratios: list[float] = field(default_factory=list)  # multicolor: N(channel 1) / N(channel 0)
    min_target_photons: float = 100.0

    def __post_init__(self) -> None:
        self.frame_size = tuple(int(v) for v in self.frame_size)  # type: ignore[assignment]
        self.photons = tuple(float(v) for v in self.photons)  # type: ignore[assignment]
        self.bg = tuple(float(v) for v in self.bg)  # type: ignore[assignment]
        self.z_range_nm = tuple(float(v) for v in self.z_range_nm)  # type: ignore[assignment]
        if self.window not in (1, 3):
            raise ValueError("window must be 1 or 3 frames")
        if self.mode == "biplane" and len(self.plane_ratios) != self.channels:
            raise ValueError(f"plane_ratios needs {self.channels} values")
        if self.transforms is not None and len(self.transforms) != self.channels:
            raise ValueError(f"{len(self.transforms)} transforms given for {self.channels} channels")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SampleConfig:
        return cls(**d)

    def channel_transforms(self) -> list[np.ndarray]:
        """Channel k → reference 3 × 3 matrices (from ``transforms``, or from ``shifts_px``)."""
        if self.transforms is not None:
            return [np.asarray(t, dtype=np.float64) for t in self.transforms]
        out = []
        for c in range(self.channels):
            dx, dy = self.shifts_px[c] if c < len(self.shifts_px) else (0.0, 0.0)
            out.append(translation(-float(dx), -float(dy)))
        return out

    def geometry(self) -> ChannelGeometry:
        return ChannelGeometry(self.channel_transforms())

    def model_config(self, **overrides: Any) -> ModelConfig:
        """A model config whose input/output scales are derived from these simulation parameters."""
        bg_hi, ph_hi = float(self.bg[1]), float(self.photons[1])
        z_max = max(abs(self.z_range_nm[0]), abs(self.z_range_nm[1]))
        kw: dict[str, Any] = dict(
            mode=self.mode, channels=self.channels, window=self.window, three_d=self.three_d,
            input_offset=float(np.mean(self.bg)), input_scale=max(ph_hi / 20.0, 1.0),
            photon_scale=ph_hi * 1.2, bg_scale=max(bg_hi * 1.2, 1.0),
            z_scale_nm=z_max * 1.2 if self.three_d and z_max > 0 else 1.0,
            px_size_nm=(self.px_size_nm, self.px_size_nm),
        )
        kw.update(overrides)
        return ModelConfig(**kw)

    def simulation_config(self, seed: int) -> SimulationConfig:
        """The simulation of one sample: a ``window``-frame movie."""
        psf = dict(self.psf)
        if self.three_d and psf.get("kind", "gaussian") == "gaussian":
            # z from astigmatism, or, with planes focused apart, from the defocus the planes differ by
            psf.setdefault("astig_gamma_nm", 0.0 if self.focal_offsets_nm else 300.0)
        n_dyes, model, transmission = 1, "independent", None
        if self.mode == "biplane":
            model = "biplane"
        elif self.mode == "multicolor" and self.dye_ratios:
            n_dyes, model = len(self.dye_ratios), "ratiometric"
            transmission = dye_fractions(self.dye_ratios).tolist()
        low, high = self.photons
        if model == "independent" and self.channels > 1:
            # One draw per channel: a single flux copied to every channel would show the network a ratio of 1 only.
            low, high = [low] * self.channels, [high] * self.channels
        return SimulationConfig(
            n_frames=self.window, frame_shape=self.frame_size, px_size_nm=self.px_size_nm,
            emitters_per_frame=None, density_per_um2=self.density_per_um2, on_time_frames=self.on_time_frames,
            z_range_nm=self.z_range_nm if self.three_d else (0.0, 0.0),
            flux={"dist": "uniform", "low": low, "high": high},
            n_channels=self.channels, n_dyes=n_dyes, photon_model=model, transmission=transmission,
            plane_ratios=list(self.plane_ratios) if self.mode == "biplane" else None,
            focal_offsets_nm=[float(v) for v in self.focal_offsets_nm] or None,
            background={"low": self.bg[0], "high": self.bg[1]}, camera=self.camera, psf=psf,
            transforms=self.channel_transforms(), seed=int(seed), backend="cpu",
        )


def aux_maps(geometry: ChannelGeometry, shape: tuple[int, int]) -> np.ndarray:
    """Transformation indicator maps ``(2·(C-1), H, W)``: per non-reference channel, where a reference pixel
    centre appears in that channel minus where it is (x then y, px) / :data:`INDICATOR_SCALE_PX`."""
    maps, _ = geometry.indicator_maps(shape, scale_px=INDICATOR_SCALE_PX)
    return np.ascontiguousarray(maps[1:].reshape(-1, *shape))


@dataclass
class SampleBatch:
    frames: torch.Tensor  # (B, T, C, H, W) photons (after the camera's inverse)
    aux: torch.Tensor  # (B, A, H, W)
    targets: Targets
    truth: LocTable  # the centre frames' target emitters, nm, frame = sample index


def _sample_seed(seed: int, b: int) -> int:
    return (int(seed) * 7919 + b * 104_729 + 17) % (2**63)


def sample_batch(cfg: SampleConfig, batch: int, seed: int, calibration: Any = None) -> SampleBatch:
    """``batch`` independent samples; the same seed always gives the same batch."""
    t_len, c_len = cfg.window, cfg.channels
    h, w = cfg.frame_size
    centre = t_len // 2
    frames = np.zeros((batch, t_len, c_len, h, w), np.float32)
    bgs = np.zeros((batch, c_len, h, w), np.float32)
    rows: list[dict[str, np.ndarray]] = []
    for b in range(batch):
        res = simulate(cfg.simulation_config(_sample_seed(seed, b)), calibration)
        frames[b] = np.asarray(res.frames_photons())
        bgs[b] = np.asarray(res.background[centre])
        t = res.truth
        sel = t["frame"] == centre
        rows.append({k: t[k][sel] for k in t.columns})
    n_ph = c_len if cfg.mode == "multicolor" else 1
    keep = [r["photons"] >= cfg.min_target_photons for r in rows]
    e_max = max(1, max(int(k.sum()) for k in keep))
    xy = torch.zeros(batch, e_max, 2)
    z = torch.zeros(batch, e_max)
    ph = torch.zeros(batch, e_max, n_ph)
    mask = torch.zeros(batch, e_max, dtype=torch.bool)
    code = torch.zeros(batch, e_max, dtype=torch.long)
    cols: dict[str, list[np.ndarray]] = {"frame": [], "x": [], "y": [], "z": [], "photons": [], "code": []}
    for c in range(c_len if c_len > 1 else 0):
        cols[f"photons_{c}"] = []
    for b, (r, k) in enumerate(zip(rows, keep, strict=True)):
        n = int(k.sum())
        xy[b, :n, 0] = torch.from_numpy(r["x"][k] / cfg.px_size_nm)
        xy[b, :n, 1] = torch.from_numpy(r["y"][k] / cfg.px_size_nm)
        z[b, :n] = torch.from_numpy(r["z"][k])
        per_ch = np.stack([r[f"photons_c{c}"][k] for c in range(c_len)], axis=1)
        ph[b, :n] = torch.from_numpy(per_ch if n_ph > 1 else r["photons"][k][:, None])
        mask[b, :n] = True
        code[b, :n] = torch.from_numpy(r["dye"][k])
        cols["frame"].append(np.full(n, b))
        for name in ("x", "y", "z", "photons"):
            cols[name].append(r[name][k])
        cols["code"].append(r["dye"][k])
        for c in range(c_len if c_len > 1 else 0):
            cols[f"photons_{c}"].append(per_ch[:, c])
    if not cfg.three_d:
        cols.pop("z")
    targets = Targets(xy_px=xy, photons=ph, mask=mask, z_nm=z if cfg.three_d else None, code=code,
                      bg=torch.from_numpy(bgs))
    aux_np = aux_maps(cfg.geometry(), (h, w))
    aux = torch.from_numpy(aux_np).unsqueeze(0).expand(batch, -1, -1, -1).contiguous()
    truth = LocTable.from_arrays({"px_size_nm": cfg.px_size_nm, "source": "simulation"},
                                 **{k: np.concatenate(v) for k, v in cols.items()})
    return SampleBatch(torch.from_numpy(frames), aux, targets, truth)

