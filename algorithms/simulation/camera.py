"""Camera models: perfect, EMCCD and sCMOS; forward (expected photons → noisy ADU) and inverse (ADU → photons).

Forward model per pixel (photons ``λ`` reaching the pixel):

* electrons ``e ~ Poisson(qe λ + spurious_e)``;
* EMCCD: ``e ~ Gamma(shape=e, scale=em_gain)`` (the EM register; ``e = 0`` stays 0), excess noise factor 2;
* read noise ``+ Normal(0, read_noise_e)`` (sCMOS: a scalar or a per-pixel map in e⁻);
* ``ADU = e / e_per_adu + baseline`` (``e_per_adu`` and ``baseline`` scalars or per-pixel maps), clipped to
  ``[0, max_adu]``; the CLI rounds to uint16.

The inverse ``photons = ((ADU - baseline) e_per_adu / em_gain - spurious_e) / qe`` is the unbiased inverse of
the mean. Both work on NumPy arrays with a ``numpy.random.Generator`` or on CuPy arrays with a
``cupy.random`` generator (the methods used, ``poisson``, ``gamma``, ``normal``, exist in both).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


def _xp(a: Any) -> Any:
    if type(a).__module__.split(".")[0] == "cupy":
        import cupy

        return cupy
    return np


@dataclass
class Camera:
    """A camera: ``kind`` is 'perfect', 'emccd' or 'scmos'. Units: e⁻, ADU, photons (see module doc)."""

    kind: str = "perfect"
    qe: float = 1.0
    spurious_e: float = 0.0
    em_gain: float | None = None
    read_noise_e: Any = 0.0  # scalar, or (H, W) map for sCMOS
    e_per_adu: Any = 1.0  # scalar, or (H, W) map for sCMOS
    baseline: Any = 0.0  # ADU; scalar, or (H, W) map for sCMOS
    max_adu: float = 65535.0

    def __post_init__(self) -> None:
        self.kind = str(self.kind).lower()
        if self.kind not in {"perfect", "emccd", "scmos"}:
            raise ValueError(f"camera kind must be perfect, emccd or scmos, not {self.kind!r}")
        if not 0.0 < self.qe <= 1.0:
            raise ValueError(f"camera qe must be in (0, 1], not {self.qe}")
        if self.spurious_e < 0:
            raise ValueError(f"camera spurious_e must be >= 0 electrons/px/frame, not {self.spurious_e}")
        if self.kind == "scmos" and self.em_gain is not None:
            raise ValueError(
                f"an sCMOS camera has no EM gain (got em_gain: {self.em_gain}); use em_gain: null"
            )
        if self.kind == "perfect" and self.em_gain is not None:
            raise ValueError(
                f"a perfect camera has no EM gain (got em_gain: {self.em_gain}); use em_gain: null"
            )
        if self.kind == "emccd" and (self.em_gain is None or not self.em_gain > 1.0):
            raise ValueError(f"EMCCD em_gain must be a number > 1, not {self.em_gain}")
        for name in ("read_noise_e", "e_per_adu", "baseline"):
            v = np.asarray(getattr(self, name), dtype=np.float64)
            if v.ndim not in (0, 2):
                raise ValueError(f"camera {name} must be a number or an (H, W) map, not shape {v.shape}")
            if v.ndim == 2 and self.kind != "scmos":
                raise ValueError(f"per-pixel {name} maps are for sCMOS cameras only")
            if not np.all(np.isfinite(v)):
                raise ValueError(f"camera {name} holds non-finite values")
        if np.any(np.asarray(self.e_per_adu) <= 0):
            raise ValueError("camera e_per_adu must be positive")
        if np.any(np.asarray(self.read_noise_e) < 0):
            raise ValueError("camera read_noise_e must be >= 0")
        if self.kind == "perfect" and (self.spurious_e or np.any(np.asarray(self.read_noise_e))):
            raise ValueError(
                "a perfect camera has no spurious charge or read noise; use kind: emccd or scmos"
            )

    @property
    def gain(self) -> float:
        return float(self.em_gain) if self.em_gain is not None else 1.0

    @property
    def excess_noise(self) -> float:
        """Variance multiplier of the signal: 2 for an EMCCD at high gain, 1 otherwise."""
        return 2.0 if self.kind == "emccd" else 1.0

    def _map(self, value: Any, shape: tuple[int, ...], xp: Any) -> Any:
        v = xp.asarray(value, dtype=xp.float32)
        if v.ndim == 2 and tuple(v.shape) != tuple(shape[-2:]):
            raise ValueError(f"sCMOS map of shape {tuple(v.shape)} does not match frames {tuple(shape[-2:])}")
        return v

    def forward(self, photons: Any, rng: Any) -> Any:
        """Noisy ADU (float32, same shape) from expected photons per pixel ``(..., H, W)``."""
        xp = _xp(photons)
        lam = xp.asarray(photons, dtype=xp.float32)
        if bool((lam < 0).any()):
            raise ValueError("expected photons must be >= 0")
        # on the device, ask CuPy for 32-bit draws: no 64-bit temporaries of the whole movie
        small = {} if xp is np else {"dtype": xp.float32}
        e = rng.poisson(self.qe * lam + self.spurious_e, **({} if xp is np else {"dtype": xp.int32}))
        e = e.astype(xp.float32)
        if self.kind == "emccd":
            # the EM register: Gamma(e, gain) for e >= 1 electrons; zero stays zero (shape 0 is avoided
            # because generators differ on it)
            g = rng.gamma(xp.maximum(e, xp.float32(1.0)), self.em_gain, **small).astype(xp.float32)
            e = xp.where(e > 0, g, xp.float32(0.0))
        rn = self._map(self.read_noise_e, lam.shape, xp)
        if bool((rn > 0).any()):
            e = e + rng.normal(0.0, 1.0, size=lam.shape, **small).astype(xp.float32) * rn
        adu = e / self._map(self.e_per_adu, lam.shape, xp) + self._map(self.baseline, lam.shape, xp)
        return xp.clip(adu, 0.0, self.max_adu).astype(xp.float32)

    def expected_adu(self, photons: Any) -> Any:
        """Noise-free mean ADU of expected photons."""
        xp = _xp(photons)
        lam = xp.asarray(photons, dtype=xp.float32)
        e = (self.qe * lam + self.spurious_e) * self.gain
        return e / self._map(self.e_per_adu, lam.shape, xp) + self._map(self.baseline, lam.shape, xp)

    def inverse(self, adu: Any) -> Any:
        """Photons (float32) from ADU: unbiased inverse of the mean (design §6 frames after the camera)."""
        xp = _xp(adu)
        a = xp.asarray(adu, dtype=xp.float32)
        e = (a - self._map(self.baseline, a.shape, xp)) * self._map(self.e_per_adu, a.shape, xp) / self.gain
        return ((e - self.spurious_e) / self.qe).astype(xp.float32)

    def read_variance_photons(self, shape: tuple[int, int]) -> np.ndarray:
        """Read-noise variance expressed in photons² at the detector input (for CRLB): (σ_read / (qe g))²."""
        rn = np.broadcast_to(np.asarray(self.read_noise_e, dtype=np.float64), shape)
        return (rn / (self.qe * self.gain)) ** 2

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("read_noise_e", "e_per_adu", "baseline"):
            if np.ndim(d[k]) > 0:
                d[k] = f"map {np.shape(d[k])}"
            else:
                d[k] = float(d[k])
        return d


PRESETS: dict[str, dict[str, Any]] = {
    # The 2016 SMLM challenge's EMCCD (as used for DECODE's challenge training).
    "smlm-challenge-emccd": {
        "kind": "emccd",
        "qe": 0.9,
        "spurious_e": 0.002,
        "em_gain": 300.0,
        "read_noise_e": 74.4,
        "e_per_adu": 45.0,
        "baseline": 100.0,
    },
    # A typical back-illuminated-class sCMOS (e.g. Hamamatsu ORCA-Flash4.0 v3 figures).
    "scmos-typical": {
        "kind": "scmos",
        "qe": 0.82,
        "spurious_e": 0.0,
        "em_gain": None,
        "read_noise_e": 1.6,
        "e_per_adu": 0.46,
        "baseline": 100.0,
    },
    "perfect": {"kind": "perfect"},
}


def camera_from_params(params: dict[str, Any] | str | None) -> Camera:
    """A camera from a preset name or a dict (``preset`` key plus overrides, or all fields)."""
    if params is None:
        return Camera()
    if isinstance(params, str):
        params = {"preset": params}
    p = dict(params)
    preset = p.pop("preset", None)
    base: dict[str, Any] = {}
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"unknown camera preset {preset!r}; known: {', '.join(PRESETS)}")
        base = dict(PRESETS[preset])
    unknown = set(p) - set(Camera.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown camera setting(s): {', '.join(sorted(unknown))}")
    return Camera(**{**base, **p})
