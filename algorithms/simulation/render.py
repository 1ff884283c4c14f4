"""Frame rendering: emitters × PSF into ``(T, H, W)`` frames, backgrounds, and the whole ``simulate`` pipeline
(emitters → per-channel photons → frames ``(T, C, H, W)`` → camera)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from algorithms.io.table import LocTable
from algorithms.simulation.camera import Camera, camera_from_params
from algorithms.simulation.emitters import FrameEmitters, frame_emitters, sample_fluorophores
from algorithms.simulation.geometry import ChannelGeometry, channel_photons
from algorithms.simulation.psf import GaussianPSF, SplinePSF, sample
from compute import spline as spline_kernels
from compute.device import array_module, resolve_backend


def render_psf(
    psf: Any,
    frame: np.ndarray,
    x_px: np.ndarray,
    y_px: np.ndarray,
    z_nm: np.ndarray,
    photons: np.ndarray,
    shape: tuple[int, int, int],
    backend: str = "cpu",
    out: Any = None,
) -> Any:
    """Accumulate ``photons × PSF`` into frames ``(T, H, W)`` float32 (device array on 'cuda')."""
    if isinstance(psf, SplinePSF):
        args = (psf.ref[:2], frame, y_px, x_px, psf.z_sp(z_nm), photons, shape)
        if backend == "cuda":
            return spline_kernels.render_frames_cuda(psf.device_coeff(), *args, out=out)
        return spline_kernels.render_frames_cpu(psf.coeff, *args, out=out)
    if backend == "cuda":
        raise ValueError("the CUDA renderer needs a spline PSF; use backend: cpu for a Gaussian PSF")
    t, h, w = shape
    out = np.zeros(shape, dtype=np.float32) if out is None else out
    flat = out.reshape(-1)
    for s in range(0, len(frame), 8192):
        e = slice(s, s + 8192)
        rois, r0, c0 = psf.rois(x_px[e], y_px[e], z_nm[e])
        n, rh, rw = rois.shape
        rr = r0[:, None, None] + np.arange(rh)[None, :, None]
        cc = c0[:, None, None] + np.arange(rw)[None, None, :]
        f = np.asarray(frame[e], dtype=np.int64)[:, None, None]
        ok = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w) & (f >= 0) & (f < t)
        idx = ((f * h + rr) * w + cc)[ok]
        vals = (rois * np.asarray(photons[e])[:, None, None])[ok]
        if idx.size:
            lo, hi = int(idx.min()), int(idx.max()) + 1
            flat[lo:hi] += np.bincount(idx - lo, weights=vals, minlength=hi - lo).astype(np.float32)
    return out


def smooth_field(shape: tuple[int, int], scale_px: float, rng: Any) -> np.ndarray:
    """A smooth random field on ``(H, W)`` in [-1, 1] (white noise low-passed at ``scale_px``)."""
    from scipy.ndimage import gaussian_filter

    f = gaussian_filter(rng.normal(size=shape), sigma=max(scale_px, 0.5), mode="wrap")
    f -= f.mean()
    m = np.abs(f).max()
    return f / m if m > 0 else f


def backgrounds(
    n_frames: int, n_channels: int, shape: tuple[int, int], spec: dict[str, Any], rng: Any
) -> np.ndarray:
    """Background photons per pixel ``(T, C, H, W)`` float32: a level per frame and channel, uniform in
    ``[low, high]`` (or ``value``), times ``1 + smooth_amplitude × field`` with a smooth spatial field per
    channel (``smooth_scale_px``)."""
    if "value" in spec:
        level = np.full((n_frames, n_channels), float(spec["value"]))
    else:
        low, high = float(spec.get("low", 10.0)), float(spec.get("high", 100.0))
        if high < low:
            raise ValueError("background high must be >= low")
        level = rng.uniform(low, high, (n_frames, n_channels))
    if np.any(level < 0):
        raise ValueError("background must be >= 0 photons/px")
    amp = float(spec.get("smooth_amplitude", 0.0))
    if not 0.0 <= amp < 1.0:
        raise ValueError(f"background smooth_amplitude must be in [0, 1), not {amp}")
    spatial = np.ones((n_channels, *shape))
    if amp > 0:
        scale = float(spec.get("smooth_scale_px", 16.0))
        spatial = np.stack([1.0 + amp * smooth_field(shape, scale, rng) for _ in range(n_channels)])
    return (level[:, :, None, None] * spatial[None]).astype(np.float32)


@dataclass
class SimulationConfig:
    """Everything a simulation needs; units in the names. ``from_dict`` rejects unknown keys."""

    n_frames: int = 100
    frame_shape: tuple[int, int] = (64, 64)  # (H, W) px
    px_size_nm: float = 100.0
    emitters_per_frame: float | None = 10.0
    density_per_um2: float | None = None
    on_time_frames: float | list[float] = 2.0  # mean on-time (frames), or one per dye
    z_range_nm: tuple[float, float] | None = None  # default: the PSF's range less 10 %
    structure: Any = "uniform"
    flux: dict[str, Any] = field(default_factory=lambda: {"dist": "uniform", "low": 1000.0, "high": 5000.0})
    n_channels: int = 1
    n_dyes: int = 1
    photon_model: str = "independent"
    transmission: list[list[float]] | None = None
    plane_ratios: list[float] | str | None = None  # biplane: numbers, or "psf" (from the PSF norms)
    focal_offsets_nm: list[float] | None = None  # per channel: the z its plane is focused on (biplane)
    background: dict[str, Any] = field(default_factory=lambda: {"low": 10.0, "high": 100.0})
    camera: Any = "perfect"
    psf: dict[str, Any] = field(default_factory=lambda: {"kind": "gaussian", "sigma_px": 1.2})
    transforms: list[Any] | None = None
    roi_offsets: list[tuple[int, int]] | None = None
    seed: int = 0
    backend: str = "auto"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SimulationConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown simulation parameter(s): {', '.join(sorted(unknown))}")
        cfg = cls(**d)
        cfg.frame_shape = tuple(int(v) for v in cfg.frame_shape)  # type: ignore[assignment]
        if len(cfg.frame_shape) != 2 or min(cfg.frame_shape) < 1:
            raise ValueError(f"frame_shape must be [H, W] of positive ints, not {d.get('frame_shape')}")
        if cfg.n_frames < 1 or cfg.n_channels < 1:
            raise ValueError("n_frames and n_channels must be >= 1")
        if not cfg.px_size_nm > 0:
            raise ValueError(f"px_size_nm must be positive, not {cfg.px_size_nm}")
        if cfg.focal_offsets_nm is not None and len(cfg.focal_offsets_nm) != cfg.n_channels:
            raise ValueError(f"focal_offsets_nm needs one value per channel ({cfg.n_channels})")
        return cfg


def make_psfs(cfg: SimulationConfig, calibration: Any = None) -> list[Any]:
    """One PSF per channel: the calibration's splines, or Gaussians from ``cfg.psf``."""
    if calibration is not None:
        psfs = list(calibration.psfs)
        if len(psfs) == 1 and cfg.n_channels > 1:
            psfs = psfs * cfg.n_channels
        if len(psfs) != cfg.n_channels:
            raise ValueError(f"the calibration has {len(psfs)} channels but n_channels is {cfg.n_channels}")
        return psfs
    spec = dict(cfg.psf)
    kind = spec.pop("kind", "gaussian")
    if kind != "gaussian":
        raise ValueError(f"psf kind {kind!r} needs a calibration file (spline PSFs come from --calibration)")
    return [GaussianPSF(**spec) for _ in range(cfg.n_channels)]


@dataclass
class SimulationResult:
    photons: Any  # (T, C, H, W) float32 expected photons (PSFs + background), NumPy or CuPy
    adu: Any  # (T, C, H, W) float32 noisy ADU
    truth: LocTable
    camera: Camera
    background: Any  # (T, C, H, W) float32
    geometry: ChannelGeometry

    def frames_photons(self) -> Any:
        """Frames in photons after the camera model's inverse (design §6), ``(T, C, H, W)`` float32."""
        return self.camera.inverse(self.adu)


def psf_norms(psfs: list[Any]) -> np.ndarray:
    """Sum of each channel's unit-photon PSF for an emitter at focus in the middle of a large window."""
    out = []
    for p in psfs:
        rh, rw = p.roi_shape
        size = (rh + 4, rw + 4)
        out.append(float(sample(p, [size[1] / 2], [size[0] / 2], [0.0], size)[0].sum()))
    return np.asarray(out)


def psf_norm_ratios(psfs: list[Any]) -> tuple[np.ndarray, list[Any]]:
    """Biplane: plane photon ratios ``norm_k / norm_0`` from the PSFs' norms, and the PSFs rescaled to unit
    norm, so an emitter's ``photons × ratio_k`` (recorded as ``photons_c<k>``) is what channel k detects."""
    norms = psf_norms(psfs)
    if np.any(norms <= 0):
        raise ValueError("a channel's PSF sums to zero or less at focus")
    scaled = []
    for p, n in zip(psfs, norms, strict=True):
        if isinstance(p, SplinePSF):
            scaled.append(SplinePSF(p.coeff / np.float32(n), p.ref, p.dz_nm, dict(p.meta)))
        else:
            scaled.append(p)  # Gaussians are normalised already
    return norms / norms[0], scaled


def simulate(cfg: SimulationConfig, calibration: Any = None, on_progress: Any = None) -> SimulationResult:
    """Run the pipeline. Emitters are drawn in the reference channel (channel 0) and mapped into each channel
    through ``cfg.transforms`` (channel k → reference, sensor px); the ground truth is in reference nm."""
    rng = np.random.default_rng(cfg.seed)
    backend = resolve_backend(cfg.backend)
    camera = camera_from_params(cfg.camera)  # fail on impossible settings before any work
    psfs = make_psfs(cfg, calibration)
    if backend == "cuda" and not all(isinstance(p, SplinePSF) for p in psfs):
        if (cfg.backend or "auto").lower() == "cuda":
            raise ValueError("backend cuda renders spline PSFs only; give a calibration or use backend: cpu")
        backend = "cpu"  # 'auto' with a Gaussian PSF: the CPU renderer
    h, w = cfg.frame_shape
    for k, p in enumerate(psfs):
        rh, rw = p.roi_shape
        if rh > h or rw > w:
            raise ValueError(
                f"the PSF ROI of channel {k} ({rh} x {rw} px) is larger than the frame ({h} x {w} px)"
            )
    transforms = cfg.transforms
    if transforms is None and calibration is not None and len(calibration.transforms) == cfg.n_channels:
        transforms = calibration.transforms
    geom = ChannelGeometry(
        list(transforms) if transforms is not None else [np.eye(3)] * cfg.n_channels,
        [tuple(o) for o in cfg.roi_offsets] if cfg.roi_offsets else [],
    )
    if geom.n_channels != cfg.n_channels:
        raise ValueError(f"{geom.n_channels} transforms given for {cfg.n_channels} channels")
    z_range = cfg.z_range_nm
    if z_range is None:
        if isinstance(psfs[0], SplinePSF):
            lo, hi = psfs[0].z_range_nm
            z_range = (0.9 * lo, 0.9 * hi)
        elif psfs[0].astig_gamma_nm is not None:
            z_range = (-500.0, 500.0)
        else:
            z_range = (0.0, 0.0)
    if z_range[0] > z_range[1]:
        raise ValueError(f"z_range_nm must be [low, high], not {list(z_range)}")
    for k, p in enumerate(psfs):
        if isinstance(p, SplinePSF):
            lo, hi = p.z_range_nm
            if z_range[0] < lo - 1e-6 or z_range[1] > hi + 1e-6:
                raise ValueError(
                    f"z_range_nm {list(z_range)} leaves the calibration's z range [{lo:.0f}, {hi:.0f}] nm "
                    f"(channel {k})"
                )
    extent = (w * cfg.px_size_nm, h * cfg.px_size_nm)
    fl = sample_fluorophores(
        cfg.n_frames,
        extent,
        rng,
        cfg.density_per_um2,
        None if cfg.density_per_um2 is not None else cfg.emitters_per_frame,
        cfg.on_time_frames,
        tuple(z_range),
        cfg.structure,
        cfg.flux,
        cfg.n_dyes,
        cfg.n_channels if cfg.photon_model == "independent" else 1,
    )
    em: FrameEmitters = frame_emitters(fl, cfg.n_frames)
    ratios: Any = cfg.plane_ratios
    if isinstance(ratios, str):
        if ratios != "psf" or cfg.photon_model != "biplane":
            raise ValueError('plane_ratios "psf" is for the biplane photon model; otherwise give numbers')
        ratios, psfs = psf_norm_ratios(psfs)
    ph = channel_photons(
        em.photons,
        em.dye,
        cfg.n_channels,
        cfg.photon_model,
        None if cfg.transmission is None else np.asarray(cfg.transmission),
        ratios,
    )
    if on_progress:
        on_progress(0.2, "emitters", emitters=len(em))
    xp = array_module(backend)
    bg = backgrounds(cfg.n_frames, cfg.n_channels, (h, w), cfg.background, rng)
    frames = xp.zeros((cfg.n_frames, cfg.n_channels, h, w), dtype=xp.float32)
    x_ref, y_ref = em.x_nm / cfg.px_size_nm, em.y_nm / cfg.px_size_nm
    for k in range(cfg.n_channels):
        xk, yk = geom.to_channel(k, x_ref, y_ref)
        zk = em.z_nm - (cfg.focal_offsets_nm[k] if cfg.focal_offsets_nm else 0.0)  # the PSF at z from its focus
        plane = render_psf(psfs[k], em.frame, xk, yk, zk, ph[:, k], (cfg.n_frames, h, w), backend)
        frames[:, k] = plane
        if on_progress:
            on_progress(0.2 + 0.6 * (k + 1) / cfg.n_channels, "render", channel=k)
    # a spline fitted to noisy beads can dip slightly below zero in its wings: no negative expectations
    frames = xp.maximum(frames, 0.0)
    frames += xp.asarray(bg)
    if backend == "cuda":
        import cupy

        noise_rng = cupy.random.RandomState(cfg.seed + 1)
    else:
        noise_rng = np.random.default_rng(cfg.seed + 1)
    adu = camera.forward(frames, noise_rng)
    cols: dict[str, Any] = {
        "frame": em.frame,
        "id": em.id,
        "x": em.x_nm,
        "y": em.y_nm,
        "z": em.z_nm,
        "photons": ph.sum(axis=1),
        "dye": em.dye,
    }
    for k in range(cfg.n_channels):
        cols[f"photons_c{k}"] = ph[:, k]
    truth = LocTable.from_arrays(
        {"px_size_nm": cfg.px_size_nm, "source": "simulation", "seed": cfg.seed}, **cols
    )
    return SimulationResult(frames, adu, truth, camera, bg, geom)
