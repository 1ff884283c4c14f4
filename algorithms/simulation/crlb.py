"""Cramér-Rao lower bounds from the Fisher information of the pixelated PSF model, and a small batched
Poisson maximum-likelihood fitter used to validate them.

Model per pixel ``i`` of channel ``k``: ``μ_i = N_k PSF_k(x_k, y_k, z)_i + b_k`` photons. Measured electrons
have mean ``qe μ_i (+ spurious)`` and variance ``F (qe μ_i + spurious) + σ_read² / g²`` (``F`` = 2 for an
EMCCD, 1 otherwise), so (Gaussian-Poisson approximation of Huang et al. 2013 for sCMOS; Mortensen et al.
2010 for the EMCCD factor 2)::

    I_ab = Σ_i qe² ∂_a μ_i ∂_b μ_i / (F (qe μ_i + spurious) + σ_read² / g²)

Parameters are ``x_px, y_px`` (reference frame pixels), ``z_nm``, photons and background(s); the CRLB is
``sqrt(diag(I⁻¹))`` in those units.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from algorithms.simulation.camera import Camera
from algorithms.simulation.psf import sample


def _denominator(mu: np.ndarray, camera: Camera | None) -> tuple[np.ndarray, float]:
    if camera is None:
        return mu, 1.0
    read = camera.read_variance_photons(mu.shape[-2:]) * camera.qe**2  # electrons² (input-referred)
    return camera.excess_noise * (camera.qe * mu + camera.spurious_e) + read, camera.qe**2


def fisher_single(
    psf: Any,
    x_px: Any,
    y_px: Any,
    z_nm: Any,
    photons: Any,
    bg: Any,
    shape: tuple[int, int],
    camera: Camera | None = None,
) -> np.ndarray:
    """Fisher information ``(N, 5, 5)`` for parameters (x_px, y_px, z_nm, photons, bg) on ``shape`` windows
    whose top-left pixel is (0, 0)."""
    d = sample(psf, x_px, y_px, z_nm, shape, derivatives=True)  # (N, 4, H, W)
    n_ph = np.asarray(photons, dtype=np.float64).reshape(-1, 1, 1)
    b = np.asarray(bg, dtype=np.float64).reshape(-1, 1, 1)
    mu = n_ph * d[:, 0] + b
    jac = np.stack([n_ph * d[:, 1], n_ph * d[:, 2], n_ph * d[:, 3], d[:, 0], np.ones_like(mu)], axis=1)
    den, scale = _denominator(mu, camera)
    return scale * np.einsum("napq,nbpq->nab", jac, jac / den[:, None])


def crlb_from_fisher(fisher: np.ndarray, drop_unidentifiable: bool = True) -> np.ndarray:
    """``sqrt(diag(I⁻¹))`` per emitter. Parameters with exactly zero information (e.g. z of a 2-D Gaussian)
    are removed before inverting and reported as ``inf``."""
    f = np.asarray(fisher, dtype=np.float64)
    out = np.full(f.shape[:-1], np.inf)
    for n in range(f.shape[0]):
        keep = np.diag(f[n]) > 0 if drop_unidentifiable else np.ones(f.shape[-1], bool)
        sub = f[n][np.ix_(keep, keep)]
        out[n, keep] = np.sqrt(np.diag(np.linalg.inv(sub)))
    return out


def crlb_single(
    psf: Any,
    x_px: Any,
    y_px: Any,
    z_nm: Any,
    photons: Any,
    bg: Any,
    shape: tuple[int, int],
    camera: Camera | None = None,
) -> np.ndarray:
    """CRLB ``(N, 5)``: σ of x_px, y_px, z_nm, photons, bg."""
    return crlb_from_fisher(fisher_single(psf, x_px, y_px, z_nm, photons, bg, shape, camera))


def fisher_multichannel(
    psfs: list[Any],
    geometry: Any,
    x_px: float,
    y_px: float,
    z_nm: float,
    photons: float,
    bg: list[float],
    shape: tuple[int, int],
    camera: Camera | None = None,
    ratios: list[float] | None = None,
    link_photons: bool = True,
) -> np.ndarray:
    """Fisher information of one emitter seen in C channels with shared x, y (reference px) and z.

    Parameters: x, y, z, then photons (one, split by ``ratios``, when ``link_photons``; else one per channel,
    ``photons × ratios[k]``), then one background per channel. Each channel's window of ``shape`` is centred
    on where the emitter appears in that channel.
    """
    c = len(psfs)
    r = np.ones(c) if ratios is None else np.asarray(ratios, dtype=np.float64)
    n_par = 3 + (1 if link_photons else c) + c
    info = np.zeros((n_par, n_par))
    h, w = shape
    for k in range(c):
        xk, yk = geometry.to_channel(k, x_px, y_px)
        ox, oy = np.floor(xk) - w // 2, np.floor(yk) - h // 2
        d = sample(psfs[k], [xk - ox], [yk - oy], [z_nm], shape, derivatives=True)[0]
        nk = photons * r[k]
        mu = nk * d[0] + bg[k]
        jac_k = geometry.jacobian_to_channel(k)  # d(xk, yk)/d(x, y)
        dx = nk * (d[1] * jac_k[0, 0] + d[2] * jac_k[1, 0])
        dy = nk * (d[1] * jac_k[0, 1] + d[2] * jac_k[1, 1])
        jac = np.zeros((n_par, h, w))
        jac[0], jac[1], jac[2] = dx, dy, nk * d[3]
        if link_photons:
            jac[3] = r[k] * d[0]
            jac[4 + k] = 1.0
        else:
            jac[3 + k] = d[0]
            jac[3 + c + k] = 1.0
        den, scale = _denominator(mu, camera)
        info += scale * np.einsum("apq,bpq->ab", jac, jac / den)
    return info


# ------------------------------------------------------------------------------------- validation fitter


def fit_mle(
    psf: Any,
    data: np.ndarray,
    init: np.ndarray | None = None,
    iterations: int = 60,
    fit_z: bool = True,
) -> np.ndarray:
    """Batched Poisson MLE (Levenberg-Marquardt with the Fisher matrix as curvature) of spots ``(N, H, W)``
    in photons. Returns ``(N, 5)``: x_px, y_px, z_nm, photons, bg (window top-left pixel at 0, 0)."""
    d = np.asarray(data, dtype=np.float64)
    n, h, w = d.shape
    if init is None:
        bg0 = np.maximum(np.percentile(d.reshape(n, -1), 10, axis=1), 1e-3)
        sig = np.clip(d - bg0[:, None, None], 0, None)
        tot = np.maximum(sig.sum((1, 2)), 1.0)
        yy, xx = np.mgrid[0:h, 0:w] + 0.5
        init = np.stack(
            [(sig * xx).sum((1, 2)) / tot, (sig * yy).sum((1, 2)) / tot, np.zeros(n), tot, bg0], 1
        )
    theta = np.array(init, dtype=np.float64)
    free = np.array([True, True, fit_z, True, True])

    def model(th: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = sample(psf, th[:, 0], th[:, 1], th[:, 2], (h, w), derivatives=True)
        ph, b = th[:, 3, None, None], th[:, 4, None, None]
        mu = np.maximum(ph * s[:, 0] + b, 1e-9)
        jac = np.stack([ph * s[:, 1], ph * s[:, 2], ph * s[:, 3], s[:, 0], np.ones_like(mu)], 1)[:, free]
        return mu, jac

    def nll(mu: np.ndarray) -> np.ndarray:
        return (mu - d * np.log(mu)).sum((1, 2))

    lam = np.full(n, 1e-3)
    mu, jac = model(theta)
    cur = nll(mu)
    for _ in range(iterations):
        grad = np.einsum("napq,npq->na", jac, 1.0 - d / mu)
        hess = np.einsum("napq,nbpq->nab", jac, jac / mu[:, None])
        damp = (
            hess
            + lam[:, None, None] * np.eye(hess.shape[1]) * np.diagonal(hess, axis1=1, axis2=2)[:, :, None]
        )
        step = np.linalg.solve(damp, -grad[:, :, None])[..., 0]
        trial = theta.copy()
        trial[:, free] += step
        trial[:, 3] = np.maximum(trial[:, 3], 1.0)
        trial[:, 4] = np.maximum(trial[:, 4], 1e-3)
        mu_t, jac_t = model(trial)
        new = nll(mu_t)
        better = new <= cur
        theta[better], cur[better] = trial[better], new[better]
        mu[better], jac[better] = mu_t[better], jac_t[better]
        lam = np.where(better, lam * 0.3, lam * 10.0).clip(1e-7, 1e7)
    return theta
