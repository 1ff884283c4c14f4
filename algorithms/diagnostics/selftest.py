"""Probe the hardware a job runs on and time a matrix product on the best device found.

The report tells an operator (and the portal's workers page) what a worker really has: CPU, RAM, CUDA as
torch and CuPy see it, GPU model, memory, compute capability, and a measured GFLOP/s. `duration_s` and
`fail_with` exist so platform tests can exercise long and failing jobs with a real entrypoint.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from typing import Any

from algorithms.cli import BadInput, atomic_output, job_arguments, progress, read_params

DEFAULTS = {"matrix_size": 512, "repeats": 5, "duration_s": 0.0, "fail_with": 0}


def memory_gb() -> float:
    """Physical RAM in GB (Linux sysconf; 0 if unknown)."""
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 2)
    except (ValueError, OSError, AttributeError):
        return 0.0


def probe_gpus() -> dict[str, Any]:
    """CUDA as torch and CuPy see it; each is optional, a missing one is reported, not fatal."""
    report: dict[str, Any] = {"torch": None, "cupy": None, "gpus": []}
    try:
        import torch

        report["torch"] = {"version": torch.__version__, "cuda_available": torch.cuda.is_available(),
                           "cuda_version": torch.version.cuda}
        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                props = torch.cuda.get_device_properties(i)
                report["gpus"].append({
                    "index": i, "name": props.name, "memory_gb": round(props.total_memory / 1e9, 2),
                    "compute_capability": f"{props.major}.{props.minor}",
                })
    except ImportError:
        pass
    try:
        import cupy

        count = cupy.cuda.runtime.getDeviceCount()
        report["cupy"] = {"version": cupy.__version__, "device_count": count}
    except Exception as exc:  # noqa: BLE001 - CuPy raises many kinds when CUDA is absent
        report["cupy"] = {"available": False, "reason": type(exc).__name__}
    return report


def time_matmul(size: int, repeats: int, use_cuda: bool) -> dict[str, Any]:
    """Median time of `repeats` products of two size×size float32 matrices, and the GFLOP/s it means."""
    try:
        import torch
    except ImportError:
        import numpy as np

        a = np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)
        b = np.random.default_rng(1).standard_normal((size, size), dtype=np.float32)
        run, device = (lambda: a @ b), "cpu (numpy)"
    else:
        device = "cuda" if use_cuda else "cpu"
        gen = torch.Generator(device="cpu").manual_seed(0)
        a = torch.randn(size, size, generator=gen).to(device)
        b = torch.randn(size, size, generator=gen).to(device)

        def run() -> Any:
            out = a @ b
            if use_cuda:
                torch.cuda.synchronize()
            return out

    run()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    return {"device": device, "matrix_size": size, "repeats": repeats, "median_s": median,
            "gflops": round(2 * size**3 / median / 1e9, 2)}


def run(params: dict[str, Any]) -> dict[str, Any]:
    params = {**DEFAULTS, **params}
    progress(0.0, "probe")
    gpu = probe_gpus()
    report: dict[str, Any] = {
        "hostname": platform.node(), "platform": platform.platform(), "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(), "memory_gb": memory_gb(), **gpu,
    }
    use_cuda = bool(gpu["gpus"])
    report["matmul"] = time_matmul(int(params["matrix_size"]), int(params["repeats"]), use_cuda)
    progress(0.5 if params["duration_s"] else 0.9, "matmul", metrics={"gflops": report["matmul"]["gflops"]})
    busy_until = time.monotonic() + float(params["duration_s"])
    while (left := busy_until - time.monotonic()) > 0:
        time.sleep(min(left, 0.5))
        done = 1 - left / max(float(params["duration_s"]), 1e-9)
        progress(0.5 + 0.45 * done, "busy")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m algorithms.diagnostics selftest", description=__doc__)
    parser.add_argument("entrypoint", choices=["selftest"])
    job_arguments(parser)
    args = parser.parse_args(argv)
    params = read_params(args.params)
    unknown = set(params) - set(DEFAULTS)
    if unknown:
        raise BadInput(f"unknown parameter {sorted(unknown)[0]!r} (known: {', '.join(DEFAULTS)})")
    report = run(params)
    with atomic_output(args.outputs / "report.json") as fh:
        json.dump(report, fh, indent=2)
    print(f"{report['matmul']['device']}: {report['matmul']['gflops']} GFLOP/s on "
          f"{report['matmul']['matrix_size']}² float32", file=sys.stderr)
    fail_with = int(params.get("fail_with", 0))
    if fail_with:
        print(f"failing on request with exit code {fail_with}", file=sys.stderr)
        return fail_with
    progress(1.0, "done")
    return 0
