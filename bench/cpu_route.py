"""CPU-route slowdown of DECODE-Plex train and fit (not a test): the registry's `cpu_route.slowdown`.

    python bench/cpu_route.py [--cores 0,1] [--train-steps 10 40] [--fit-frames 100 400] [--devices cuda cpu]

Runs the real entrypoints (`python -m algorithms.decode_plex train|fit`, registry default parameters apart from
the step / frame counts) pinned (sched_setaffinity + thread counts) to the cores the registry asks for (`hardware.cpu` = `cpu_route.cpu` = 2):
on the GPU route's hardware (those cores + a GPU) and on the CPU route's (those cores alone, one torch thread
per core). Fixed costs (start-up, imports, validation set, QC plots) are removed by timing two sizes and
taking the difference: the marginal seconds per training step and per fitted frame, whose ratio CPU / GPU is
the slowdown a long job sees. Prints a table and writes ``bench/results/cpu_route.json``.
"""

import sys
from pathlib import Path

# bench/platform.py shadows the standard library's `platform` (torch imports it): put the repo root first.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def run(entry: str, params: dict, inputs: Path, outputs: Path, device: str, cores: str) -> float:
    """Wall seconds of one entrypoint run, pinned to `cores`; the CPU run sees no GPU."""
    pinned = {int(c) for c in cores.split(",")}
    threads = str(len(pinned))
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads,
           "PYTHONUNBUFFERED": "1"}
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    shutil.rmtree(outputs, ignore_errors=True)
    outputs.mkdir(parents=True)
    (outputs.parent / "params.json").write_text(json.dumps({**params, "device": device}))
    argv = [sys.executable, "-m", "algorithms.decode_plex", entry, "--inputs", str(inputs),
            "--outputs", str(outputs), "--params", str(outputs.parent / "params.json")]
    t0 = time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True,
                          preexec_fn=lambda: os.sched_setaffinity(0, pinned))
    wall = time.perf_counter() - t0
    if done.returncode:
        raise SystemExit(f"{entry} on {device} failed ({done.returncode}): {done.stderr[-2000:]}")
    return wall


def movie(path: Path, n_frames: int, seed: int = 7) -> None:
    import tifffile

    from algorithms.decode_plex.samples import SampleConfig
    from algorithms.simulation.render import simulate

    sim = SampleConfig(frame_size=(64, 64), density_per_um2=0.3, photons=(1000.0, 5000.0), bg=(20.0, 60.0))
    res = simulate(dataclasses.replace(sim.simulation_config(seed), n_frames=n_frames))
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, np.rint(res.adu[:, 0]).astype(np.uint16), photometric="minisblack")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cores", default="0,1", help="CPU cores both routes get (comma-separated)")
    ap.add_argument("--train-steps", type=int, nargs=2, default=[10, 110], help="two sizes, on the CPU")
    ap.add_argument("--fit-frames", type=int, nargs=2, default=[50, 1050], help="two sizes, on the CPU")
    ap.add_argument("--gpu-scale", type=int, default=10, help="the GPU runs do this many times more work")
    ap.add_argument("--devices", nargs="+", default=["cuda", "cpu"])
    ap.add_argument("--outputs", type=Path, default=Path("bench/results"))
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="locus-cpu-route-"))
    (work / "empty").mkdir()
    sizes = {d: ([s * (args.gpu_scale if d == "cuda" else 1) for s in args.train_steps],
                 [n * (args.gpu_scale if d == "cuda" else 1) for n in args.fit_frames]) for d in args.devices}
    for n in {n for _, frames in sizes.values() for n in frames}:
        movie(work / f"movie{n}" / "frames" / "movie.tif", n)
    row: dict = {"cores": args.cores, "sizes": sizes}
    model = None
    for device in args.devices:
        steps, frames = sizes[device]
        times = [run("train", {"epochs": 1, "steps_per_epoch": s, "val_samples": 16}, work / "empty",
                     work / f"train-{device}-{s}" / "out", device, args.cores) for s in steps]
        row[f"train_{device}_s"] = [round(t, 2) for t in times]
        row[f"train_{device}_s_per_step"] = round((times[1] - times[0]) / (steps[1] - steps[0]), 5)
        if model is None:  # one model for every fit, so both devices fit the same network
            model = work / "model" / "model" / "model.pt"
            model.parent.mkdir(parents=True)
            shutil.copy(work / f"train-{device}-{steps[1]}" / "out" / "model.pt", model)
        times = []
        for n in frames:
            inputs = work / f"fit-in-{n}"
            shutil.rmtree(inputs, ignore_errors=True)
            shutil.copytree(work / f"movie{n}", inputs)
            shutil.copytree(model.parent, inputs / "model")
            times.append(run("fit", {}, inputs, work / f"fit-{device}-{n}" / "out", device, args.cores))
        row[f"fit_{device}_s"] = [round(t, 2) for t in times]
        row[f"fit_{device}_s_per_frame"] = round((times[1] - times[0]) / (frames[1] - frames[0]), 6)
    if {"cuda", "cpu"} <= set(args.devices):
        row["train_slowdown"] = round(row["train_cpu_s_per_step"] / row["train_cuda_s_per_step"], 1)
        row["fit_slowdown"] = round(row["fit_cpu_s_per_frame"] / row["fit_cuda_s_per_frame"], 1)
        import torch

        row["gpu"] = torch.cuda.get_device_name(0)
    row["cpu_model"] = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                             if line.startswith("model name")), "unknown")
    row["command"] = "python " + " ".join(sys.argv)
    print(f"{'metric':<28}{'value':>40}")
    for k, v in row.items():
        print(f"{k:<28}{v!s:>40}")
    args.outputs.mkdir(parents=True, exist_ok=True)
    (args.outputs / "cpu_route.json").write_text(json.dumps(row, indent=1))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
