"""The CUDA kernel source, compiled as plain C++ with a serial emulation of the launch grid, against the CPU
twin: checks the kernels' index arithmetic and polynomial on machines without a GPU (skipped without g++)."""

from __future__ import annotations

import ctypes
import shutil
import subprocess

import numpy as np
import pytest

from compute import spline as sk

_PRELUDE = r"""
#include <math.h>
#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__
struct Dim3 { unsigned x, y, z; };
static Dim3 blockIdx, blockDim, threadIdx;
static float atomicAdd(float* a, float v) { float o = *a; *a += v; return o; }
"""

_LAUNCH = r"""
extern "C" {
void launch_render(const float* coeff, int ny, int nx, int nz, float ref_y, float ref_x, const int* frame,
                   const float* y, const float* x, const float* z, const float* phot, long long n_em,
                   int T, int H, int W, float* out) {
    long long total = n_em * ny * nx;
    blockDim.x = 256;
    for (long long b = 0; b * 256 < total; b++) {
        blockIdx.x = (unsigned)b;
        for (unsigned t = 0; t < 256; t++) {
            threadIdx.x = t;
            spline_render(coeff, ny, nx, nz, ref_y, ref_x, frame, y, x, z, phot, n_em, T, H, W, out);
        }
    }
}
void launch_rois(const float* coeff, int ny, int nx, int nz, float ref_y, float ref_x, const float* y,
                 const float* x, const float* z, long long n_em, int derivs, float* out) {
    long long total = n_em * ny * nx;
    blockDim.x = 256;
    for (long long b = 0; b * 256 < total; b++) {
        blockIdx.x = (unsigned)b;
        for (unsigned t = 0; t < 256; t++) {
            threadIdx.x = t;
            spline_rois(coeff, ny, nx, nz, ref_y, ref_x, y, x, z, n_em, derivs, out);
        }
    }
}
}
"""


@pytest.fixture(scope="module")
def emulated(tmp_path_factory):
    cxx = shutil.which("g++")
    if cxx is None:
        pytest.skip("g++ not available")
    d = tmp_path_factory.mktemp("kernel")
    src = d / "k.cpp"
    src.write_text(_PRELUDE + sk._KERNEL_SOURCE + _LAUNCH)
    lib = d / "k.so"
    subprocess.run(
        [cxx, "-O1", "-shared", "-fPIC", "-ffp-contract=off", str(src), "-o", str(lib)], check=True
    )
    return ctypes.CDLL(str(lib))


def _p(a: np.ndarray):
    return a.ctypes.data_as(ctypes.c_void_p)


def test_emulated_render_kernel_matches_cpu_twin(emulated, spline):
    rng = np.random.default_rng(61)
    t, h, w, n = 6, 30, 34, 120
    frame = rng.integers(0, t, n).astype(np.int32)
    y, x = rng.uniform(-4, h + 4, n).astype(np.float32), rng.uniform(-4, w + 4, n).astype(np.float32)
    z = spline.z_sp(rng.uniform(-700, 700, n)).astype(np.float32)  # beyond the spline: clamped cells
    ph = rng.uniform(100, 1000, n).astype(np.float32)
    c = sk.kernel_layout(spline.coeff)
    nz, _, ny, nx = c.shape
    out = np.zeros((t, h, w), np.float32)
    emulated.launch_render(
        _p(c),
        ny,
        nx,
        nz,
        ctypes.c_float(spline.ref[0]),
        ctypes.c_float(spline.ref[1]),
        _p(frame),
        _p(y),
        _p(x),
        _p(z),
        _p(ph),
        ctypes.c_longlong(n),
        t,
        h,
        w,
        _p(out),
    )
    cpu = sk.render_frames_cpu(spline.coeff, spline.ref[:2], frame, y, x, z, ph, (t, h, w))
    assert np.abs(out - cpu).max() <= 1e-5 * np.abs(cpu).max()


def test_emulated_roi_kernel_with_derivatives_matches_cpu_twin(emulated, spline):
    rng = np.random.default_rng(62)
    n = 60
    y, x = rng.uniform(0, 20, n).astype(np.float32), rng.uniform(0, 20, n).astype(np.float32)
    z = spline.z_sp(rng.uniform(-550, 550, n)).astype(np.float32)
    c = sk.kernel_layout(spline.coeff)
    nz, _, ny, nx = c.shape
    for derivs in (0, 1):
        out = np.zeros((n, 4, ny, nx) if derivs else (n, ny, nx), np.float32)
        emulated.launch_rois(
            _p(c),
            ny,
            nx,
            nz,
            ctypes.c_float(spline.ref[0]),
            ctypes.c_float(spline.ref[1]),
            _p(y),
            _p(x),
            _p(z),
            ctypes.c_longlong(n),
            derivs,
            _p(out),
        )
        cpu, _, _ = sk.spline_rois_cpu(spline.coeff, spline.ref[:2], y, x, z, bool(derivs))
        scale = np.abs(cpu).max(axis=(-2, -1), keepdims=True) if derivs else np.abs(cpu).max()
        assert np.all(np.abs(out - cpu) <= 1e-5 * scale + 1e-12)
