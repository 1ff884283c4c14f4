"""Point-spread functions with values and analytic derivatives: pixel-integrated (astigmatic) Gaussian and
cubic spline.

Pixel coordinates used throughout the simulation: ``x_px`` runs along columns and ``y_px`` along rows, the
frame's top-left corner is ``(0, 0)`` and the centre of pixel ``(row r, column c)`` is ``(c + 0.5, r + 0.5)``.
Table coordinates in nm are ``x_nm = x_px * px_size_nm`` (same origin). ``z_nm`` is measured from focus.

Every PSF returns *unit-photon* images: multiply by photons and add background for the expected counts.
``rois(x_px, y_px, z_nm)`` gives ``(N, h, w)`` images (plus ``(N, 3, h, w)`` derivatives with respect to
``x_px``, ``y_px`` and ``z_nm``) together with each ROI's top-left frame pixel ``(r0, c0)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.special import erf

from compute import spline as spline_kernels

_SQRT2 = np.sqrt(2.0)
_SQRT2PI = np.sqrt(2.0 * np.pi)


@dataclass
class GaussianPSF:
    """Pixel-integrated Gaussian; astigmatic when ``astig_gamma_nm`` is set.

    ``sigma_x(z) = sigma_px * sqrt(1 + ((z - gamma) / depth)^2)``, ``sigma_y`` with ``z + gamma``
    (Huang et al. 2008 without higher-order terms). ``astig_gamma_nm = None`` gives a z-independent 2D
    Gaussian. ``roi_px`` is the (odd) side of the rendered window.
    """

    sigma_px: float = 1.2
    astig_gamma_nm: float | None = None
    depth_nm: float = 400.0
    roi_px: int = 15

    def __post_init__(self) -> None:
        if not self.sigma_px > 0:
            raise ValueError(f"sigma_px must be positive, not {self.sigma_px}")
        if self.roi_px < 3:
            raise ValueError(f"roi_px must be at least 3, not {self.roi_px}")

    @property
    def roi_shape(self) -> tuple[int, int]:
        return self.roi_px, self.roi_px

    def sigmas(self, z_nm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """sigma_x, sigma_y (px) and their derivatives per nm of z."""
        z = np.asarray(z_nm, dtype=np.float64)
        if self.astig_gamma_nm is None:
            s = np.full_like(z, self.sigma_px)
            return s, s.copy(), np.zeros_like(z), np.zeros_like(z)
        out = []
        for sign in (-1.0, 1.0):
            u = (z + sign * self.astig_gamma_nm) / self.depth_nm
            s = self.sigma_px * np.sqrt(1.0 + u * u)
            out.append((s, self.sigma_px**2 * u / (s * self.depth_nm)))
        (sx, dsx), (sy, dsy) = out
        return sx, sy, dsx, dsy

    @staticmethod
    def _axis(pos: np.ndarray, start: np.ndarray, n: int, s: np.ndarray) -> tuple[np.ndarray, ...]:
        """Integral of a unit 1D Gaussian over pixels start..start+n-1 and its derivatives (pos, sigma)."""
        edges = start[:, None] + np.arange(n + 1)[None, :] - pos[:, None]  # (N, n+1) in px
        ss = s[:, None]
        cdf = 0.5 * erf(edges / (_SQRT2 * ss))
        pdf = np.exp(-0.5 * (edges / ss) ** 2) / (_SQRT2PI * ss)
        e = cdf[:, 1:] - cdf[:, :-1]
        d_pos = -(pdf[:, 1:] - pdf[:, :-1])
        d_sig = -(edges[:, 1:] * pdf[:, 1:] - edges[:, :-1] * pdf[:, :-1]) / ss
        return e, d_pos, d_sig

    def rois(
        self,
        x_px: Any,
        y_px: Any,
        z_nm: Any,
        derivatives: bool = False,
        origin: tuple[Any, Any] | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Unit-photon ROIs ``(N, roi, roi)`` centred on each emitter (or starting at ``origin=(r0, c0)``)."""
        x = np.atleast_1d(np.asarray(x_px, dtype=np.float64))
        y = np.atleast_1d(np.asarray(y_px, dtype=np.float64))
        z = np.broadcast_to(np.asarray(z_nm, dtype=np.float64), x.shape)
        n = self.roi_px
        if origin is None:
            r0 = np.floor(y).astype(np.int64) - n // 2
            c0 = np.floor(x).astype(np.int64) - n // 2
        else:
            r0 = np.broadcast_to(np.asarray(origin[0], dtype=np.int64), x.shape)
            c0 = np.broadcast_to(np.asarray(origin[1], dtype=np.int64), x.shape)
        sx, sy, dsx, dsy = self.sigmas(z)
        ex, dex, dsex = self._axis(x, c0.astype(np.float64), n, sx)
        ey, dey, dsey = self._axis(y, r0.astype(np.float64), n, sy)
        val = ey[:, :, None] * ex[:, None, :]
        if not derivatives:
            return val, r0, c0
        d_x = ey[:, :, None] * dex[:, None, :]
        d_y = dey[:, :, None] * ex[:, None, :]
        d_z = (dsey * dsy[:, None])[:, :, None] * ex[:, None, :] + ey[:, :, None] * (dsex * dsx[:, None])[
            :, None, :
        ]
        return np.stack([val, d_x, d_y, d_z], axis=1), r0, c0


@dataclass
class SplinePSF:
    """Cubic-spline PSF: coefficients ``(Ny, Nx, Nz, 64)`` (axis 0 = rows/y, see ``compute.spline``), the
    spline coordinate ``ref = (ref_y, ref_x, ref_z)`` of the PSF centre at focus, and ``dz_nm`` per z node.
    """

    coeff: np.ndarray
    ref: tuple[float, float, float]
    dz_nm: float
    meta: dict[str, Any] = field(default_factory=dict)
    _device: Any = field(default=None, init=False, repr=False, compare=False)

    def device_coeff(self) -> Any:
        """The coefficients on the GPU in kernel layout, uploaded on first use and kept."""
        if self._device is None:
            self._device = spline_kernels.DeviceSpline(self.coeff)
        return self._device

    def __post_init__(self) -> None:
        self.coeff = np.ascontiguousarray(np.asarray(self.coeff, dtype=np.float32))
        if self.coeff.ndim != 4 or self.coeff.shape[3] != 64:
            raise ValueError(f"spline coefficients must have shape (Ny, Nx, Nz, 64), not {self.coeff.shape}")
        if not self.dz_nm > 0:
            raise ValueError(f"spline dz must be positive, not {self.dz_nm}")
        self.ref = tuple(float(r) for r in self.ref)  # type: ignore[assignment]

    @property
    def roi_shape(self) -> tuple[int, int]:
        return int(self.coeff.shape[0]), int(self.coeff.shape[1])

    @property
    def z_range_nm(self) -> tuple[float, float]:
        """z (nm) covered by the spline's cells."""
        nz = self.coeff.shape[2]
        return (-self.ref[2] * self.dz_nm, (nz - self.ref[2]) * self.dz_nm)

    def z_sp(self, z_nm: Any) -> np.ndarray:
        return self.ref[2] + np.asarray(z_nm, dtype=np.float64) / self.dz_nm

    def rois(
        self,
        x_px: Any,
        y_px: Any,
        z_nm: Any,
        derivatives: bool = False,
        origin: tuple[Any, Any] | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Unit-photon ROIs ``(N, Ny, Nx)``; derivatives ``(N, 4, Ny, Nx)`` = value, d/dx_px, d/dy_px, d/dz_nm.

        The ROI origin is fixed by the spline's cell grid; ``origin`` is not supported (use
        :func:`sample` for arbitrary pixel windows).
        """
        if origin is not None:
            raise ValueError("SplinePSF ROIs start where the spline's cells fall; use sample() for a window")
        x = np.atleast_1d(np.asarray(x_px, dtype=np.float64))
        y = np.atleast_1d(np.asarray(y_px, dtype=np.float64))
        z = np.broadcast_to(self.z_sp(z_nm), x.shape)
        out, r0, c0 = spline_kernels.spline_rois_cpu(self.coeff, self.ref[:2], y, x, z, derivatives)
        if derivatives:
            # kernel order: value, d/dy, d/dx, d/dz_sp  ->  value, d/dx, d/dy, d/dz_nm
            out = np.stack([out[:, 0], out[:, 2], out[:, 1], out[:, 3] / np.float32(self.dz_nm)], axis=1)
        return out, r0, c0

    def evaluate_points(self, u: Any, v: Any, w: Any) -> np.ndarray:
        """The spline at arbitrary spline coordinates (u along rows, v along columns, w along z)."""
        c = self.coeff
        u, v, w = (np.atleast_1d(np.asarray(a, dtype=np.float64)) for a in (u, v, w))
        i = np.clip(np.floor(u), 0, c.shape[0] - 1).astype(int)
        j = np.clip(np.floor(v), 0, c.shape[1] - 1).astype(int)
        k = np.clip(np.floor(w), 0, c.shape[2] - 1).astype(int)
        pu, pv, pw = (np.stack([np.ones_like(t), t, t * t, t**3], 1) for t in (u - i, v - j, w - k))
        basis = np.einsum("ns,nq,np->nsqp", pw, pv, pu).reshape(len(u), 64)
        return np.einsum("nm,nm->n", c[i, j, k].astype(np.float64), basis)


def sample(
    psf: Any, x_px: Any, y_px: Any, z_nm: Any, shape: tuple[int, int], derivatives: bool = False
) -> np.ndarray:
    """PSF(s) of emitters sampled on a whole ``(H, W)`` pixel window whose top-left pixel is (0, 0).

    Returns ``(N, H, W)`` or ``(N, 4, H, W)`` (value, d/dx_px, d/dy_px, d/dz_nm). Used by CRLB and fitting.
    """
    h, w = shape
    rois, r0, c0 = psf.rois(x_px, y_px, z_nm, derivatives=derivatives)
    n = rois.shape[0]
    rh, rw = rois.shape[-2:]
    out = np.zeros((n, 4, h, w) if derivatives else (n, h, w), dtype=np.float64)
    rr = r0[:, None, None] + np.arange(rh)[None, :, None]
    cc = c0[:, None, None] + np.arange(rw)[None, None, :]
    ok = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
    e, i, j = np.nonzero(ok)
    if derivatives:
        out[e, :, rr[e, i, 0], cc[e, 0, j]] = rois[e, :, i, j]
    else:
        out[e, rr[e, i, 0], cc[e, 0, j]] = rois[e, i, j]
    return out


# ---------------------------------------------------------------------------------------------------------
# Spline construction from a voxel PSF (bead z-stack or a model stack), vectorised: the tensor-product
# interpolating spline is the product of three 1-D interpolation operators, so the per-cell power-basis
# coefficients are one einsum of the stack with three small operator matrices.


def _cell_operator(n: int) -> np.ndarray:
    """(n-1 cells, 4 powers, n nodes): not-a-knot cubic interpolation of n unit-spaced nodes."""
    from scipy.interpolate import CubicSpline

    if n < 4:
        raise ValueError(f"a cubic spline needs at least 4 nodes per axis, got {n}")
    cs = CubicSpline(np.arange(n, dtype=np.float64), np.eye(n), axis=0, bc_type="not-a-knot")
    # cs.c[m, cell, node] multiplies t**(3 - m)
    return np.ascontiguousarray(cs.c[::-1].transpose(1, 0, 2))


def spline_coefficients(stack: np.ndarray) -> np.ndarray:
    """Power-basis coefficients ``(Ny-1, Nx-1, Nz-1, 64)`` of a voxel PSF stack given as ``(Nz, Ny, Nx)``.

    Node ``(i, j, k)`` of the spline equals ``stack[k, i, j]``.
    """
    s = np.asarray(stack, dtype=np.float64)
    if s.ndim != 3:
        raise ValueError(f"a PSF stack must be 3-D (z, y, x), not shape {s.shape}")
    nz, ny, nx = s.shape
    my, mx, mz = _cell_operator(ny), _cell_operator(nx), _cell_operator(nz)
    c = np.einsum("iap,jbq,kcr,rpq->ijkcba", my, mx, mz, s, optimize=True)  # (..., s, q, p)
    return c.reshape(ny - 1, nx - 1, nz - 1, 64).astype(np.float32)


def spline_from_stack(
    stack: np.ndarray, dz_nm: float, focus_index: float | None = None, normalise: bool = True
) -> SplinePSF:
    """A :class:`SplinePSF` from a centred voxel PSF ``(Nz, Ny, Nx)`` sampled at pixel centres.

    The PSF centre is taken at the stack's central pixel centre, ``((Ny-1)/2, (Nx-1)/2)``, and at z node
    ``focus_index`` (default the central slice). With ``normalise`` the focal slice is scaled to sum to 1.
    """
    s = np.asarray(stack, dtype=np.float64)
    if s.ndim != 3:
        raise ValueError(f"a PSF stack must be 3-D (z, y, x), not shape {s.shape}")
    nz, ny, nx = s.shape
    kf = (nz - 1) / 2 if focus_index is None else float(focus_index)
    if normalise:
        total = s[int(round(kf))].sum()
        if not total > 0:
            raise ValueError("the PSF stack's focal slice sums to zero or less")
        s = s / total
    return SplinePSF(spline_coefficients(s), ((ny - 1) / 2, (nx - 1) / 2, kf), dz_nm, {"source": "stack"})


def gaussian_stack(psf: GaussianPSF, size_px: int, z_nm: np.ndarray) -> np.ndarray:
    """A ``(Nz, size, size)`` pixel-integrated Gaussian z-stack centred on the stack centre (node
    ``(size - 1) / 2``), e.g. a synthetic bead stack for building and testing splines."""
    c = size_px / 2.0
    z = np.asarray(z_nm, dtype=np.float64)
    g = GaussianPSF(psf.sigma_px, psf.astig_gamma_nm, psf.depth_nm, size_px)
    n = len(z)
    return g.rois(np.full(n, c), np.full(n, c), z, origin=(np.zeros(n), np.zeros(n)))[0]
