"""Benchmark: frames per second rendering 64 × 64 frames with 10 emitters each through a realistic spline
(27 × 27 px × 100 z nodes), CPU twin vs a straightforward per-emitter NumPy loop (same run); on a GPU the
CuPy kernel for 100 000 frames including EMCCD noise, excluding the first call's compile.

Usage: ``python bench/simulation.py [--frames-cpu 2000] [--frames-loop 200] [--frames-gpu 100000]``
Prints a table and writes ``bench/results/simulation.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from algorithms.simulation.camera import camera_from_params  # noqa: E402
from algorithms.simulation.psf import GaussianPSF, gaussian_stack, spline_from_stack  # noqa: E402
from compute import spline as sk  # noqa: E402
from compute.device import cuda_available  # noqa: E402

H = W = 64
PER_FRAME = 10


def realistic_spline():
    """A 27 × 27 × 100-cell astigmatic spline (28 × 28 × 101 nodes, 10 nm steps over ±500 nm)."""
    psf = GaussianPSF(sigma_px=1.3, astig_gamma_nm=300.0, depth_nm=400.0, roi_px=28)
    z = np.linspace(-500.0, 500.0, 101)
    return spline_from_stack(gaussian_stack(psf, 28, z), dz_nm=10.0)


def emitters(n_frames: int, spline, seed: int = 0):
    rng = np.random.default_rng(seed)
    n = n_frames * PER_FRAME
    frame = np.repeat(np.arange(n_frames), PER_FRAME)
    y, x = rng.uniform(0, H, n), rng.uniform(0, W, n)
    z = spline.z_sp(rng.uniform(-450.0, 450.0, n))
    photons = rng.uniform(1000.0, 5000.0, n)
    return frame, y, x, z, photons


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--frames-cpu", type=int, default=2000)
    ap.add_argument("--frames-loop", type=int, default=200)
    ap.add_argument("--frames-gpu", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    spline = realistic_spline()
    ref = spline.ref[:2]
    rows = []
    camera = camera_from_params("smlm-challenge-emccd")

    fr, y, x, z, ph = emitters(args.frames_cpu, spline)
    t_twin = best_of(
        lambda: sk.render_frames_cpu(spline.coeff, ref, fr, y, x, z, ph, (args.frames_cpu, H, W)),
        args.repeats,
    )
    rows.append(("cpu twin (render)", args.frames_cpu, t_twin))
    rng = np.random.default_rng(1)

    def twin_with_noise() -> None:
        img = sk.render_frames_cpu(spline.coeff, ref, fr, y, x, z, ph, (args.frames_cpu, H, W))
        camera.forward(img + np.float32(50.0), rng)

    rows.append(("cpu twin (render + EMCCD noise)", args.frames_cpu, best_of(twin_with_noise, args.repeats)))

    n_loop = min(args.frames_loop, args.frames_cpu)
    m = n_loop * PER_FRAME
    t_loop = best_of(
        lambda: sk.render_frames_loop(spline.coeff, ref, fr[:m], y[:m], x[:m], z[:m], ph[:m], (n_loop, H, W)),
        args.repeats,
    )
    rows.append(("per-emitter NumPy loop (baseline)", n_loop, t_loop))

    gpu = None
    if cuda_available():
        import cupy

        n = args.frames_gpu
        fr_g, y_g, x_g, z_g, ph_g = (
            cupy.asarray(a, dtype=dt)
            for a, dt in zip(
                emitters(n, spline, seed=2),
                (np.int32, np.float32, np.float32, np.float32, np.float32),
                strict=True,
            )
        )
        coeff = sk.DeviceSpline(spline.coeff)  # uploaded once, kernel layout
        out = cupy.zeros((n, H, W), dtype=cupy.float32)
        rs = cupy.random.RandomState(3)

        def gpu_run(noise: bool) -> None:
            out.fill(0)
            sk.render_frames_cuda(coeff, ref, fr_g, y_g, x_g, z_g, ph_g, (n, H, W), out=out)
            if noise:
                camera.forward(out + np.float32(50.0), rs)
            cupy.cuda.Device().synchronize()

        gpu_run(True)  # compile + warm up
        rows.append(("cuda kernel (render)", n, best_of(lambda: gpu_run(False), args.repeats)))
        t_gpu = best_of(lambda: gpu_run(True), args.repeats)
        rows.append(("cuda kernel (render + EMCCD noise)", n, t_gpu))
        gpu = {
            "device": cupy.cuda.runtime.getDeviceProperties(0)["name"].decode(),
            "frames": n,
            "seconds": t_gpu,
            "goal_seconds": 0.25,
        }

    print(f"{'path':40s} {'frames':>8s} {'seconds':>10s} {'frames/s':>12s}")
    for name, n, t in rows:
        print(f"{name:40s} {n:8d} {t:10.4f} {n / t:12.1f}")
    ratio = (args.frames_cpu / t_twin) / (n_loop / t_loop)
    print(f"cpu twin vs per-emitter loop: {ratio:.1f}x")
    if gpu:
        print(
            f"GPU {gpu['device']}: {gpu['frames']} frames incl. noise in {gpu['seconds']:.3f} s (goal < 0.25 s)"
        )
    else:
        print("no CUDA device: GPU figures not measured")
    result = {
        "benchmark": "simulation",
        "frame_shape": [H, W],
        "emitters_per_frame": PER_FRAME,
        "spline_shape": list(spline.coeff.shape),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "rows": [{"path": r[0], "frames": r[1], "seconds": r[2], "frames_per_s": r[1] / r[2]} for r in rows],
        "cpu_twin_vs_loop": ratio,
        "gpu": gpu,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "simulation.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
