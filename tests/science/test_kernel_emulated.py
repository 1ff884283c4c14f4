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
void launch_spline_render(long long blocks, int threads, const float* coeff, int ny, int nx, int nz,
                          float ref_y, float ref_x, const int* frame, const float* y, const float* x,
                          const float* z, const float* phot, long long n_em, int T, int H, int W, float* out) {
    blockDim.x = threads;
    for (long long b = 0; b < blocks; b++) {
        blockIdx.x = (unsigned)b;
        for (int t = 0; t < threads; t++) {
            threadIdx.x = t;
            spline_render(coeff, ny, nx, nz, ref_y, ref_x, frame, y, x, z, phot, n_em, T, H, W, out);
        }
    }
}
void launch_spline_rois(long long blocks, int threads, const float* coeff, int ny, int nx, int nz,
                        float ref_y, float ref_x, const float* y, const float* x, const float* z,
                        long long n_em, int derivs, float* out) {
    blockDim.x = threads;
    for (long long b = 0; b < blocks; b++) {
        blockIdx.x = (unsigned)b;
        for (int t = 0; t < threads; t++) {
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
    blocks = ctypes.c_longlong((n * ny * nx + 255) // 256)
    emulated.launch_spline_render(
        blocks,
        256,
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
        blocks = ctypes.c_longlong((n * ny * nx + 255) // 256)
        emulated.launch_spline_rois(
            blocks,
            256,
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


# ------------------------------------------------------------------------------------------------------
# The CuPy wrappers and the simulate() CUDA path, driven through a stand-in ``cupy`` module whose arrays are
# NumPy arrays and whose RawModule launches the emulated kernels: checks argument order and types, chunking
# and layouts of the Python side without a GPU.


def _fake_cupy(lib):
    import types

    def to_ctypes(a):
        if isinstance(a, np.ndarray):
            assert a.flags.c_contiguous, "kernel argument must be C-contiguous"
            return a.ctypes.data_as(ctypes.c_void_p)
        if isinstance(a, np.int64):
            return ctypes.c_longlong(int(a))
        if isinstance(a, np.int32):
            return ctypes.c_int(int(a))
        if isinstance(a, np.float32):
            return ctypes.c_float(float(a))
        raise TypeError(f"kernel argument of type {type(a).__name__}: CuPy needs NumPy scalars or arrays")

    class RawModule:
        def __init__(self, code, options=()):
            assert "spline_render" in code

        def get_function(self, name):
            launcher = getattr(lib, f"launch_{name}")

            def kernel(grid, block, args):
                launcher(ctypes.c_longlong(grid[0]), int(block[0]), *(to_ctypes(a) for a in args))

            return kernel

    cp = types.ModuleType("cupy")
    cp.float32, cp.int32, cp.ndarray = np.float32, np.int32, np.ndarray
    cp.asarray = lambda a, dtype=None: np.asarray(a, dtype=dtype)
    cp.ascontiguousarray = np.ascontiguousarray
    cp.zeros, cp.empty, cp.asnumpy = np.zeros, np.empty, np.asarray
    cp.RawModule = RawModule
    cp.__getattr__ = lambda name: getattr(np, name)  # every other array function: NumPy's
    cp.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: 1))

    class RandomState:  # CuPy's signature: dtype keywords on poisson/gamma/normal
        def __init__(self, seed):
            self._rs = np.random.RandomState(seed)

        def poisson(self, lam, size=None, dtype=int):
            return self._rs.poisson(lam, size).astype(dtype)

        def gamma(self, shape, scale=1.0, size=None, dtype=float):
            return self._rs.gamma(shape, scale, size).astype(dtype)

        def normal(self, loc=0.0, scale=1.0, size=None, dtype=float):
            return self._rs.normal(loc, scale, size).astype(dtype)

    cp.random = types.SimpleNamespace(RandomState=RandomState)
    return cp


@pytest.fixture
def fake_cupy(emulated, monkeypatch):
    import sys

    import compute.device

    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(emulated))
    monkeypatch.setattr(compute.device, "cuda_available", lambda: True)
    monkeypatch.setattr(sk, "_KERNELS", {})
    monkeypatch.setattr(sk, "THREADS", 128)


def test_cuda_wrappers_through_emulated_cupy_match_the_twin(fake_cupy, spline):
    rng = np.random.default_rng(63)
    t, h, w, n = 5, 24, 28, 90
    frame = rng.integers(0, t, n)
    y, x = rng.uniform(-3, h + 3, n), rng.uniform(-3, w + 3, n)
    z = spline.z_sp(rng.uniform(-500, 500, n))
    ph = rng.uniform(100, 900, n)
    cpu = sk.render_frames_cpu(spline.coeff, spline.ref[:2], frame, y, x, z, ph, (t, h, w))
    dev = sk.render_frames_cuda(spline.coeff, spline.ref[:2], frame, y, x, z, ph, (t, h, w), chunk=37)
    assert np.abs(dev - cpu).max() <= 1e-5 * cpu.max()
    assert np.abs(
        sk.render_frames(spline.coeff, spline.ref[:2], frame, y, x, z, ph, (t, h, w)) - cpu
    ).max() <= (1e-5 * cpu.max())
    rois, r0, c0 = sk.spline_rois_cuda(spline.coeff, spline.ref[:2], y, x, z, derivatives=True)
    ref_rois, rr0, cc0 = sk.spline_rois_cpu(spline.coeff, spline.ref[:2], y, x, z, derivatives=True)
    assert np.array_equal(r0, rr0) and np.array_equal(c0, cc0)
    assert np.abs(rois - ref_rois).max() <= 1e-5 * np.abs(ref_rois).max()


def test_simulate_cuda_path_through_emulated_cupy_matches_cpu(fake_cupy, spline):
    from algorithms.io.calibration import Calibration
    from algorithms.simulation.render import SimulationConfig, simulate

    base = {
        "n_frames": 4,
        "frame_shape": [24, 24],
        "emitters_per_frame": 3,
        "camera": "smlm-challenge-emccd",
        "seed": 4,
    }
    cpu = simulate(SimulationConfig.from_dict({**base, "backend": "cpu"}), Calibration([spline]))
    dev = simulate(SimulationConfig.from_dict({**base, "backend": "cuda"}), Calibration([spline]))
    assert np.abs(dev.photons - cpu.photons).max() <= 1e-5 * cpu.photons.max()
    assert dev.adu.shape == cpu.adu.shape


def test_auto_backend_with_a_gaussian_psf_falls_back_to_cpu_and_explicit_cuda_is_refused(fake_cupy):
    from algorithms.simulation.render import SimulationConfig, simulate

    res = simulate(SimulationConfig.from_dict({"n_frames": 2, "backend": "auto"}))
    assert isinstance(res.photons, np.ndarray) and res.photons.shape == (2, 1, 64, 64)
    with pytest.raises(ValueError, match="spline PSFs only"):
        simulate(SimulationConfig.from_dict({"n_frames": 2, "backend": "cuda"}))
