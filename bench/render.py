"""Benchmark: render 10^7 localizations (histogram, Gaussian global σ, Gaussian per-localization σ) and
compute FRC on 10^6, against straightforward NumPy references. Prints a table, writes
bench/results/render.json.

    python bench/render.py [--n 10000000] [--n-frc 1000000] [--pixel 10]

References: `np.histogram2d`; histogram2d + `scipy.ndimage.gaussian_filter` (float64); per-localization
Gaussians summed footprint by footprint in a Python loop (timed on a subsample and scaled linearly,
marked "extrapolated"); FRC with complex128 `np.fft.fft2` and one `np.histogram` per quantity over rings.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from algorithms.render.frc import frc  # noqa: E402
from algorithms.render.images import Grid, gaussian, histogram  # noqa: E402


def timed(fn, repeats: int = 1):
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def ref_hist(x, y, grid):
    return np.histogram2d(y, x, bins=(grid.height, grid.width),
                          range=((grid.y0_nm, grid.y0_nm + grid.height * grid.pixel_nm),
                                 (grid.x0_nm, grid.x0_nm + grid.width * grid.pixel_nm)))[0]


def ref_gauss_each(x, y, s, grid):
    image = np.zeros(grid.shape)
    for xi, yi, si in zip(x, y, s, strict=True):
        r = int(np.ceil(4 * si / grid.pixel_nm))
        c0, r0 = int((xi - grid.x0_nm) / grid.pixel_nm), int((yi - grid.y0_nm) / grid.pixel_nm)
        cols = np.arange(max(0, c0 - r), min(grid.width, c0 + r + 1))
        rows = np.arange(max(0, r0 - r), min(grid.height, r0 + r + 1))
        gx = np.exp(-0.5 * ((grid.x0_nm + (cols + 0.5) * grid.pixel_nm - xi) / si) ** 2)
        gy = np.exp(-0.5 * ((grid.y0_nm + (rows + 0.5) * grid.pixel_nm - yi) / si) ** 2)
        block = np.outer(gy, gx)
        image[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1] += block / block.sum()
    return image


def ref_frc(x, y, frame, pixel, n_blocks=20, seed=0):
    grid = Grid.around(x, y, pixel)
    size = max(grid.shape)
    block = frame * n_blocks // (frame.max() + 1)
    half = np.random.default_rng(seed).permutation(n_blocks) < n_blocks // 2
    a = ref_hist(x[half[block]], y[half[block]], grid)
    b = ref_hist(x[~half[block]], y[~half[block]], grid)
    fa, fb = np.fft.fft2(a, s=(size, size)), np.fft.fft2(b, s=(size, size))
    k = np.fft.fftfreq(size) * size
    r = np.hypot(k[:, None], k[None, :]).ravel()
    bins = np.arange(size // 2 + 1) - 0.5
    num = np.histogram(r, bins, weights=(fa * fb.conj()).real.ravel())[0]
    den = np.sqrt(np.histogram(r, bins, weights=(np.abs(fa) ** 2).ravel())[0]
                  * np.histogram(r, bins, weights=(np.abs(fb) ** 2).ravel())[0])
    return num / den


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000_000)
    parser.add_argument("--n-frc", type=int, default=1_000_000)
    parser.add_argument("--pixel", type=float, default=10.0)
    parser.add_argument("--sub", type=int, default=20_000, help="subsample for the per-localization reference")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    n = args.n
    x, y = rng.uniform(0, 40_000, n), rng.uniform(0, 40_000, n)
    s = rng.uniform(5, 30, n)
    grid = Grid.around(x, y, args.pixel)
    rows = []

    t_ours, img = timed(lambda: histogram(x, y, grid), 2)
    t_ref, ref = timed(lambda: ref_hist(x, y, grid))
    assert np.array_equal(img, ref.astype(np.float32))
    rows.append(("histogram", n, t_ours, t_ref, "measured"))

    t_ours, _ = timed(lambda: gaussian(x, y, grid, 15.0))
    t_ref, _ = timed(lambda: ndimage.gaussian_filter(ref_hist(x, y, grid), 15.0 / args.pixel, mode="constant"))
    rows.append(("gaussian global σ=15 nm", n, t_ours, t_ref, "measured"))

    t_ours, _ = timed(lambda: gaussian(x, y, grid, s))
    sub = slice(0, args.sub)
    t_sub, _ = timed(lambda: ref_gauss_each(x[sub], y[sub], s[sub], grid))
    rows.append(("gaussian per-loc σ 5-30 nm", n, t_ours, t_sub * n / args.sub, f"ref extrapolated from {args.sub}"))

    # FRC: 10^6 localizations of blinking fluorophores (σ = 10 nm) in 20 µm × 20 µm, 5 nm pixels
    m = args.n_frc // 20_000
    fx, fy = rng.uniform(0, 20_000, 20_000), rng.uniform(0, 20_000, 20_000)
    owner = np.repeat(np.arange(20_000), m)
    fxl, fyl = fx[owner] + rng.normal(0, 10, len(owner)), fy[owner] + rng.normal(0, 10, len(owner))
    fr = rng.integers(0, 20_000, len(owner))
    t_ours, res = timed(lambda: frc(fxl, fyl, fr, 5.0, n_splits=1))
    t_ref, _ = timed(lambda: ref_frc(fxl, fyl, fr, 5.0))
    rows.append(("FRC 1 split, 4000² px", len(owner), t_ours, t_ref, f"resolution {res.resolution_nm:.1f} nm"))

    print(f"{'case':32s} {'N':>10s} {'ours s':>8s} {'ref s':>8s} {'ref/ours':>8s}  note")
    for case, count, ours, refs, note in rows:
        print(f"{case:32s} {count:10d} {ours:8.2f} {refs:8.2f} {refs / ours:8.1f}  {note}")
    out = Path(__file__).resolve().parent / "results" / "render.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
                    "processor": platform.processor() or platform.machine()},
        "pixel_nm": args.pixel,
        "rows": [{"case": c, "n": k, "ours_s": round(o, 3), "reference_s": round(r, 3), "ratio": round(r / o, 2),
                  "note": note} for c, k, o, r, note in rows],
    }, indent=2))
    print(f"wrote {out.relative_to(Path.cwd()) if out.is_relative_to(Path.cwd()) else out.name}")


if __name__ == "__main__":
    main()
