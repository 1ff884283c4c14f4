"""DECODE-Plex `fit` wall time with 1 and with 2 torch threads, interleaved, on the same movie (issue 20,
point 5: the CPU path's default thread count).

    python bench/fit_threads.py [--repeats 2] [--frames 300]

A 64 × 64 px movie simulated with the SMLM-challenge EMCCD preset (8 emitters a frame, seed 5), fitted by the
`fit` CLI with the bundled model and `threads` 1 or 2, alternating, each run a fresh process (model loading
included). Reports the load average, since the default (all usable cores but one) is about busy boxes.
Writes bench/results/fit_threads.json.
"""

import sys
from pathlib import Path

# bench/platform.py shadows the standard library's `platform`: keep bench/ off the import path.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "algorithms" / "decode_plex" / "models" / "generic-2d-emccd.pt"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--outputs", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="threads-"))
    spec = {"n_frames": args.frames, "frame_shape": [64, 64], "emitters_per_frame": 8, "seed": 5,
            "camera": "smlm-challenge-emccd"}
    (work / "sim.json").write_text(json.dumps(spec))
    subprocess.run([sys.executable, "-m", "algorithms.simulation", "simulate", "--params", str(work / "sim.json"),
                    "--outputs", str(work / "sim")], cwd=ROOT, check=True, capture_output=True)
    runs: dict[int, list[float]] = {1: [], 2: []}
    load = [list(os.getloadavg())]
    for rep in range(args.repeats):
        for threads in (1, 2):
            out = work / f"fit-{threads}-{rep}"
            out.mkdir()
            (out / "params.json").write_text(json.dumps({"threads": threads}))
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "algorithms.decode_plex", "fit", "--model", str(MODEL), "--frames",
                            str(work / "sim" / "frames.tif"), "--params", str(out / "params.json"), "--outputs",
                            str(out)], cwd=ROOT, check=True, capture_output=True)
            runs[threads].append(round(time.perf_counter() - t0, 2))
            print(f"threads {threads}: {runs[threads][-1]} s", flush=True)
    load.append(list(os.getloadavg()))
    result = {"conditions": {**spec, "model": MODEL.name, "cpu_count": os.cpu_count(), "load_avg": load},
              "wall_s": {str(k): sorted(v) for k, v in runs.items()},
              "ratio_2_over_1_median": round(sorted(runs[2])[len(runs[2]) // 2] / sorted(runs[1])[len(runs[1]) // 2], 3),
              "command": "python " + " ".join(sys.argv)}
    args.outputs.mkdir(parents=True, exist_ok=True)
    (args.outputs / "fit_threads.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
