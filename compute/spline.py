"""Cubic-spline PSF rendering: CuPy RawKernels and their exact NumPy CPU twins, side by side.

Conventions of this layer (the science layer converts nm and channels into them):

* ``coeff`` is float32 ``(Ny, Nx, Nz, 64)``: axis 0 runs along frame rows (y), axis 1 along columns (x),
  axis 2 along z. Cell ``(i, j, k)`` holds the power-basis polynomial
  ``sum c[i, j, k, p + 4 q + 16 s] * ty**p * tx**q * tz**s`` with ``t`` in ``[0, 1)`` the offset inside the
  cell, so the spline's node ``(i, j, k)`` sits at spline coordinate ``(i, j, k)``. This is SMAP's index
  order (``16 z + 4 y + x`` with SMAP's x = first array axis = image rows).
* Emitters are given in frame pixels, ``y_px`` along rows and ``x_px`` along columns, with the centre of
  pixel ``(r, c)`` at ``(r + 0.5, c + 0.5)``; ``z_sp`` is in spline z units (``ref_z + z_nm / dz``).
* ``ref = (ref_y, ref_x)`` is the spline coordinate of the PSF centre. The expected photons of one
  emitter in pixel ``(r, c)`` are ``photons * S(ref_y + r + 0.5 - y_px, ref_x + c + 0.5 - x_px, z_sp)``.
  Every pixel of an emitter's ROI shares the same fractional offset ``(ty, tx, tz)``, so an emitter's ROI
  is exactly the ``Ny x Nx`` cells of the spline, starting at frame pixel ``(r0, c0)``.
* z outside the spline is clamped to its first/last cell (the polynomial is extrapolated within it).
"""

from __future__ import annotations

from typing import Any

import numpy as np

CHUNK_EMITTERS = (
    4096  # CPU twin: emitters per vectorised block (temporaries ~12 MB each for a 27 x 27 spline)
)


def roi_origin(pos_px: np.ndarray, ref: float) -> tuple[np.ndarray, np.ndarray]:
    """Integer ROI start (frame pixel) and the shared fractional offset t in [0, 1) for each emitter."""
    f = np.asarray(pos_px, dtype=np.float32) - np.float32(0.5) - np.float32(ref)
    start = np.ceil(f)
    return start.astype(np.int64), (start - f).astype(np.float32)


def _z_cell(z_sp: np.ndarray, nz: int) -> tuple[np.ndarray, np.ndarray]:
    z = np.asarray(z_sp, dtype=np.float32)
    k = np.clip(np.floor(z), 0, nz - 1)
    return k.astype(np.int64), (z - k).astype(np.float32)


def _powers(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, 4) powers t^0..t^3 and their derivatives 0, 1, 2t, 3t^2."""
    one = np.ones_like(t)
    p = np.stack([one, t, t * t, t * t * t], axis=1)
    d = np.stack([np.zeros_like(t), one, 2 * t, 3 * t * t], axis=1)
    return p, d


def _basis(ty: np.ndarray, tx: np.ndarray, tz: np.ndarray, derivatives: bool) -> np.ndarray:
    """(N, 64) basis in index order p + 4q + 16s, or (N, 4, 64) with d/dty, d/dtx, d/dtz appended."""
    py, dy = _powers(ty)
    px, dx = _powers(tx)
    pz, dz = _powers(tz)

    def outer(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
        # index s*16 + q*4 + p  ->  einsum order (s, q, p)
        return np.einsum("ns,nq,np->nsqp", c, b, a).reshape(len(a), 64)

    val = outer(py, px, pz)
    if not derivatives:
        return val
    return np.stack([val, outer(dy, px, pz), outer(py, dx, pz), outer(py, px, dz)], axis=1)


def _coeff_by_z(coeff: np.ndarray) -> np.ndarray:
    c = np.asarray(coeff, dtype=np.float32)
    if c.ndim != 4 or c.shape[3] != 64:
        raise ValueError(f"spline coefficients must have shape (Ny, Nx, Nz, 64), not {c.shape}")
    return np.ascontiguousarray(c.transpose(2, 0, 1, 3))  # (Nz, Ny, Nx, 64)


def spline_rois_cpu(
    coeff: np.ndarray,
    ref: tuple[float, float],
    y_px: np.ndarray,
    x_px: np.ndarray,
    z_sp: np.ndarray,
    derivatives: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit-photon PSF ROIs of N emitters (CPU twin).

    Returns ``(rois, r0, c0)``: ``rois`` is float32 ``(N, Ny, Nx)``, or ``(N, 4, Ny, Nx)`` holding the value
    and its derivatives with respect to ``y_px``, ``x_px`` (per frame pixel) and ``z_sp`` (per spline z
    unit) when ``derivatives``; ``r0, c0`` are the frame pixels of each ROI's top-left corner.
    """
    return _rois_cz(_coeff_by_z(coeff), ref, y_px, x_px, z_sp, derivatives)


def _rois_cz(
    cz: np.ndarray, ref: tuple[float, float], y_px: Any, x_px: Any, z_sp: Any, derivatives: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    nz, ny, nx, _ = cz.shape
    czt = cz.reshape(nz, ny * nx, 64).transpose(0, 2, 1)  # (Nz, 64, Ny*Nx) views for the GEMMs
    r0, ty = roi_origin(y_px, ref[0])
    c0, tx = roi_origin(x_px, ref[1])
    k, tz = _z_cell(z_sp, nz)
    n = len(r0)
    out = np.empty((n, 4, ny, nx) if derivatives else (n, ny, nx), dtype=np.float32)
    n_terms = 4 if derivatives else 1
    flat = out.reshape(n, n_terms, ny * nx)
    for s in range(0, n, CHUNK_EMITTERS):
        e = np.arange(s, min(s + CHUNK_EMITTERS, n))
        basis = _basis(ty[e], tx[e], tz[e], derivatives).reshape(len(e), n_terms, 64)
        # group by z cell: one (Ny*Nx, 64) @ (64, m) GEMM per cell, no gathered copies of the coefficients
        order = np.argsort(k[e], kind="stable")
        ks, starts = np.unique(k[e][order], return_index=True)
        bounds = np.append(starts, len(order))
        for kk, a, b in zip(ks, bounds[:-1], bounds[1:], strict=True):
            idx = e[order[a:b]]
            sel = basis[order[a:b]].reshape(-1, 64)  # (m * n_terms, 64)
            vals = sel @ czt[kk]  # (m * n_terms, Ny*Nx), emitter-major: no transpose copy
            flat[idx] = vals.reshape(len(idx), n_terms, ny * nx)
    if derivatives:
        out[:, 1:3] *= -1.0  # d/dy_px = -d/dty (the spline coordinate is ref + r + 0.5 - y)
    return out, r0, c0


def render_frames_cpu(
    coeff: np.ndarray,
    ref: tuple[float, float],
    frame: np.ndarray,
    y_px: np.ndarray,
    x_px: np.ndarray,
    z_sp: np.ndarray,
    photons: np.ndarray,
    shape: tuple[int, int, int],
    out: np.ndarray | None = None,
    frames_per_block: int | None = None,
) -> np.ndarray:
    """Accumulate ``photons * PSF`` of every emitter into float32 frames ``(T, H, W)`` (CPU twin).

    Pixels of an ROI that fall outside the frame are dropped. Frames are filled ``frames_per_block`` at a
    time through a buffer padded by one ROI on each side (so no clipping arithmetic per pixel) with one
    unbuffered ``np.add.at`` per block (overlapping emitters add up).
    """
    t_frames, h, w = shape
    if out is None:
        out = np.zeros(shape, dtype=np.float32)
    cz = _coeff_by_z(coeff)
    _, ny, nx, _ = cz.shape
    frame = np.asarray(frame, dtype=np.int64)
    photons = np.asarray(photons, dtype=np.float32)
    y_px, x_px, z_sp = (np.asarray(a) for a in (y_px, x_px, z_sp))
    r0, _ = roi_origin(y_px, ref[0])
    c0, _ = roi_origin(x_px, ref[1])
    keep = (frame >= 0) & (frame < t_frames) & (r0 > -ny) & (r0 < h) & (c0 > -nx) & (c0 < w)
    sel = np.flatnonzero(keep)
    sel = sel[np.argsort(frame[sel], kind="stable")]
    fs = frame[sel]
    if frames_per_block is None:  # about CHUNK_EMITTERS emitters per block: large GEMMs, bounded buffers
        per_frame = max(len(sel) / max(t_frames, 1), 1e-3)
        frames_per_block = int(np.clip(CHUNK_EMITTERS / per_frame, 16, 2048))
    hp, wp = h + 2 * ny, w + 2 * nx
    pad = np.zeros((min(frames_per_block, t_frames), hp, wp), dtype=np.float32)
    pad_flat = pad.reshape(-1)
    pattern = (np.arange(ny)[:, None] * wp + np.arange(nx)[None, :]).ravel()
    for f_start in range(0, t_frames, frames_per_block):
        f_stop = min(f_start + frames_per_block, t_frames)
        a, b = np.searchsorted(fs, [f_start, f_stop])
        if a == b:
            continue
        e = sel[a:b]
        rois, rr0, cc0 = _rois_cz(cz, ref, y_px[e], x_px[e], z_sp[e], False)
        rois *= photons[e][:, None, None]
        fl = frame[e] - f_start
        pad[: f_stop - f_start] = 0.0
        # the ROI's pixels are one base offset plus a fixed pattern in the padded frame: no clipping needed
        base = (fl * hp + (rr0 + ny)) * wp + (cc0 + nx)
        np.add.at(pad_flat, (base[:, None] + pattern[None, :]).ravel(), rois.reshape(-1))
        out[f_start:f_stop] += pad[: f_stop - f_start, ny : ny + h, nx : nx + w]
    return out


# ---------------------------------------------------------------------------------------------------------
# CUDA (CuPy RawKernels). One thread per (emitter, ROI pixel); frames accumulate with atomicAdd. The index
# arithmetic mirrors the CPU twin exactly (float32 ceil/floor of the same expressions). On the device the
# coefficients are stored as (Nz, 64, Ny, Nx) ("kernel layout"): for one z cell and one term, neighbouring
# threads (neighbouring pixels of an ROI) read neighbouring floats, so the loads coalesce.

_KERNEL_SOURCE = r"""
extern "C" {

__device__ __forceinline__ void spline_setup(
    float y, float x, float z, float ref_y, float ref_x, int nz,
    int* r0, int* c0, int* k, float* ty, float* tx, float* tz)
{
    float fy = y - 0.5f - ref_y;
    float fx = x - 0.5f - ref_x;
    float sy = ceilf(fy), sx = ceilf(fx);
    *r0 = (int)sy; *c0 = (int)sx;
    *ty = sy - fy; *tx = sx - fx;
    float kz = floorf(z);
    kz = fminf(fmaxf(kz, 0.0f), (float)(nz - 1));
    *k = (int)kz; *tz = z - kz;
}

__global__ void spline_render(
    const float* __restrict__ coeff, const int ny, const int nx, const int nz,
    const float ref_y, const float ref_x,
    const int* __restrict__ frame, const float* __restrict__ y, const float* __restrict__ x,
    const float* __restrict__ z, const float* __restrict__ phot, const long long n_em,
    const int T, const int H, const int W, float* __restrict__ out)
{
    long long roi = (long long)ny * nx;
    long long tid = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (tid >= n_em * roi) return;
    long long e = tid / roi;
    int pix = (int)(tid - e * roi);
    int i = pix / nx, j = pix - (pix / nx) * nx;
    int r0, c0, k; float ty, tx, tz;
    spline_setup(y[e], x[e], z[e], ref_y, ref_x, nz, &r0, &c0, &k, &ty, &tx, &tz);
    int r = r0 + i, c = c0 + j, f = frame[e];
    if (r < 0 || r >= H || c < 0 || c >= W || f < 0 || f >= T) return;
    const float* cf = coeff + (long long)k * 64 * roi + pix;  // term m at cf[m * roi]
    float val = 0.0f, pz = 1.0f;
    for (int s = 0; s < 4; s++) {
        float px = 1.0f;
        for (int q = 0; q < 4; q++) {
            float py = 1.0f;
            for (int p = 0; p < 4; p++) {
                val += cf[(long long)(p + 4 * q + 16 * s) * roi] * py * px * pz;
                py *= ty;
            }
            px *= tx;
        }
        pz *= tz;
    }
    atomicAdd(out + ((long long)f * H + r) * W + c, phot[e] * val);
}

__global__ void spline_rois(
    const float* __restrict__ coeff, const int ny, const int nx, const int nz,
    const float ref_y, const float ref_x,
    const float* __restrict__ y, const float* __restrict__ x, const float* __restrict__ z,
    const long long n_em, const int derivs, float* __restrict__ out)
{
    long long roi = (long long)ny * nx;
    long long tid = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (tid >= n_em * roi) return;
    long long e = tid / roi;
    int pix = (int)(tid - e * roi);
    int i = pix / nx, j = pix - (pix / nx) * nx;
    int r0, c0, k; float ty, tx, tz;
    spline_setup(y[e], x[e], z[e], ref_y, ref_x, nz, &r0, &c0, &k, &ty, &tx, &tz);
    const float* cf = coeff + (long long)k * 64 * roi + pix;  // term m at cf[m * roi]
    float v = 0.0f, dy = 0.0f, dx = 0.0f, dz = 0.0f;
    float pz = 1.0f, dpz = 0.0f;
    for (int s = 0; s < 4; s++) {
        float px = 1.0f, dpx = 0.0f;
        for (int q = 0; q < 4; q++) {
            float py = 1.0f, dpy = 0.0f;
            for (int p = 0; p < 4; p++) {
                float cc = cf[(long long)(p + 4 * q + 16 * s) * roi];
                v += cc * py * px * pz;
                dy += cc * dpy * px * pz;
                dx += cc * py * dpx * pz;
                dz += cc * py * px * dpz;
                dpy = dpy * ty + py; py *= ty;
            }
            dpx = dpx * tx + px; px *= tx;
        }
        dpz = dpz * tz + pz; pz *= tz;
    }
    if (derivs) {
        float* o = out + e * 4 * roi + pix;
        o[0] = v; o[roi] = -dy; o[2 * roi] = -dx; o[3 * roi] = dz;
    } else {
        out[e * roi + pix] = v;
    }
}

}
"""

_KERNELS: dict[str, Any] = {}
THREADS = 256


def _kernel(name: str) -> Any:
    if name not in _KERNELS:
        import cupy

        module = cupy.RawModule(code=_KERNEL_SOURCE, options=("--std=c++11",))
        _KERNELS["spline_render"] = module.get_function("spline_render")
        _KERNELS["spline_rois"] = module.get_function("spline_rois")
    return _KERNELS[name]


def kernel_layout(coeff: np.ndarray) -> np.ndarray:
    """(Ny, Nx, Nz, 64) → the kernels' (Nz, 64, Ny, Nx) float32 layout (NumPy; for emulation and upload)."""
    c = np.asarray(coeff, dtype=np.float32)
    if c.ndim != 4 or c.shape[3] != 64:
        raise ValueError(f"spline coefficients must have shape (Ny, Nx, Nz, 64), not {c.shape}")
    return np.ascontiguousarray(c.transpose(2, 3, 0, 1))


class DeviceSpline:
    """Spline coefficients uploaded once to the GPU in kernel layout; reuse it across calls (no host copies)."""

    def __init__(self, coeff: Any) -> None:
        import cupy

        if isinstance(coeff, DeviceSpline):
            self.data, self.shape = coeff.data, coeff.shape
            return
        c = cupy.asarray(coeff, dtype=cupy.float32)
        if c.ndim != 4 or c.shape[3] != 64:
            raise ValueError(f"spline coefficients must have shape (Ny, Nx, Nz, 64), not {tuple(c.shape)}")
        self.shape = tuple(int(v) for v in c.shape)  # (Ny, Nx, Nz, 64)
        self.data = cupy.ascontiguousarray(c.transpose(2, 3, 0, 1))


def _dev(a: Any, dtype: Any) -> Any:
    import cupy

    return cupy.ascontiguousarray(cupy.asarray(a, dtype=dtype))


def render_frames_cuda(
    coeff: Any,
    ref: tuple[float, float],
    frame: Any,
    y_px: Any,
    x_px: Any,
    z_sp: Any,
    photons: Any,
    shape: tuple[int, int, int],
    out: Any | None = None,
    chunk: int = 1 << 22,
) -> Any:
    """CUDA twin of :func:`render_frames_cpu`; inputs may be NumPy or CuPy, the result stays on the device.

    Emitters are processed ``chunk`` at a time so the launch grid stays bounded.
    """
    import cupy
    import numpy

    dc = coeff if isinstance(coeff, DeviceSpline) else DeviceSpline(coeff)
    c = dc.data
    ny, nx, nz, _ = dc.shape
    t_frames, h, w = shape
    if out is None:
        out = cupy.zeros(shape, dtype=cupy.float32)
    frame, y_px, x_px = _dev(frame, numpy.int32), _dev(y_px, numpy.float32), _dev(x_px, numpy.float32)
    z_sp, photons = _dev(z_sp, numpy.float32), _dev(photons, numpy.float32)
    kern = _kernel("spline_render")
    roi = ny * nx
    for s in range(0, int(frame.shape[0]), chunk):
        e = slice(s, s + chunk)
        n = int(frame[e].shape[0])
        blocks = (n * roi + THREADS - 1) // THREADS
        kern(
            (blocks,),
            (THREADS,),
            (
                c,
                numpy.int32(ny),
                numpy.int32(nx),
                numpy.int32(nz),
                numpy.float32(ref[0]),
                numpy.float32(ref[1]),
                frame[e],
                y_px[e],
                x_px[e],
                z_sp[e],
                photons[e],
                numpy.int64(n),
                numpy.int32(t_frames),
                numpy.int32(h),
                numpy.int32(w),
                out,
            ),
        )
    return out


def spline_rois_cuda(
    coeff: Any, ref: tuple[float, float], y_px: Any, x_px: Any, z_sp: Any, derivatives: bool = False
) -> tuple[Any, Any, Any]:
    """CUDA twin of :func:`spline_rois_cpu` (ROIs on the device, r0/c0 on the host)."""
    import cupy
    import numpy

    dc = coeff if isinstance(coeff, DeviceSpline) else DeviceSpline(coeff)
    c = dc.data
    ny, nx, nz, _ = dc.shape
    y_d, x_d, z_d = _dev(y_px, numpy.float32), _dev(x_px, numpy.float32), _dev(z_sp, numpy.float32)
    n = int(y_d.shape[0])
    out = cupy.empty((n, 4, ny, nx) if derivatives else (n, ny, nx), dtype=cupy.float32)
    blocks = (n * ny * nx + THREADS - 1) // THREADS
    if n:
        _kernel("spline_rois")(
            (blocks,),
            (THREADS,),
            (
                c,
                numpy.int32(ny),
                numpy.int32(nx),
                numpy.int32(nz),
                numpy.float32(ref[0]),
                numpy.float32(ref[1]),
                y_d,
                x_d,
                z_d,
                numpy.int64(n),
                numpy.int32(1 if derivatives else 0),
                out,
            ),
        )
    r0, _ = roi_origin(cupy.asnumpy(y_d), ref[0])
    c0, _ = roi_origin(cupy.asnumpy(x_d), ref[1])
    return out, r0, c0


def render_frames(*args: Any, backend: str = "auto", **kwargs: Any) -> Any:
    """Dispatch to the CUDA kernel or the CPU twin ('auto' picks CUDA when available)."""
    from compute.device import resolve_backend

    if resolve_backend(backend) == "cuda":
        return render_frames_cuda(*args, **kwargs)
    return render_frames_cpu(*args, **kwargs)


def render_frames_loop(
    coeff: np.ndarray,
    ref: tuple[float, float],
    frame: np.ndarray,
    y_px: np.ndarray,
    x_px: np.ndarray,
    z_sp: np.ndarray,
    photons: np.ndarray,
    shape: tuple[int, int, int],
) -> np.ndarray:
    """A straightforward per-emitter NumPy loop (float64): the independent reference and the benchmark's
    baseline. Same conventions as :func:`render_frames_cpu`."""
    c = np.asarray(coeff, dtype=np.float64)
    ny, nx, nz, _ = c.shape
    t_frames, h, w = shape
    out = np.zeros(shape, dtype=np.float64)
    for e in range(len(frame)):
        fy = float(y_px[e]) - 0.5 - ref[0]
        fx = float(x_px[e]) - 0.5 - ref[1]
        r0, c0 = int(np.ceil(fy)), int(np.ceil(fx))
        ty, tx = r0 - fy, c0 - fx
        k = int(min(max(np.floor(z_sp[e]), 0), nz - 1))
        tz = float(z_sp[e]) - k
        basis = np.array([ty**p * tx**q * tz**s for s in range(4) for q in range(4) for p in range(4)])
        roi = photons[e] * (c[:, :, k, :] @ basis)
        ra, rb = max(0, -r0), min(ny, h - r0)
        ca, cb = max(0, -c0), min(nx, w - c0)
        if 0 <= frame[e] < t_frames and ra < rb and ca < cb:
            out[frame[e], r0 + ra : r0 + rb, c0 + ca : c0 + cb] += roi[ra:rb, ca:cb]
    return out
