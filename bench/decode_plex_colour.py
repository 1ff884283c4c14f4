"""Two-colour DECODE-Plex at the dissertation's ratios and densities: colour from each channel's photons
measured in the frames (`algorithms.decode_plex.photometry`, the default) against colour from the network's own
per-channel photon outputs (the baseline it replaced), on the same localizations of the same movies.

    python bench/decode_plex_colour.py [--steps 2000] [--frames 300] [--threads 1]

A ratiometric 2D model (channel-1/channel-0 photons 0.21 and 0.02, appendix A.1 of the dissertation; perfect
camera; photons 1000–8000 per blink, background 10–60 photons/px; 32 × 32 px samples at 0.3 /µm²) is trained
with the project's own `train`; test movies come from the simulator at other seeds, 64 × 64 px, at the
dissertation's densities 0.03, 1.19 and 3.0 /µm², written as the simulator writes them (TCYX) and fitted by the
`fit` CLI with the dye ratios given. Scored by `algorithms.evaluation` (Hungarian, 250 nm) against the
simulator's truth (`dye`). Writes bench/results/decode_plex_colour.json.
"""

import sys
from pathlib import Path

# bench/platform.py shadows the standard library's `platform`: keep bench/ off the import path.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RATIOS = [0.21, 0.02]
DENSITIES = (0.03, 1.19, 3.0)
KEYS = ("jaccard", "tp", "color_accuracy", "color_accuracy_assigned", "rejection_rate")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--outputs", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args()
    import tifffile
    import torch

    from algorithms.decode_plex.postprocess import color_table
    from algorithms.decode_plex.samples import SampleConfig, sample_batch
    from algorithms.decode_plex.train import TrainConfig, train
    from algorithms.evaluation import evaluate
    from algorithms.io.formats import read_table, write_table
    from algorithms.io.table import LocTable
    from algorithms.simulation.render import simulate

    torch.set_num_threads(args.threads)
    sim = SampleConfig(mode="multicolor", channels=2, three_d=False, frame_size=(32, 32), camera="perfect",
                       dye_ratios=RATIOS, photons=(1000.0, 8000.0), bg=(10.0, 60.0), density_per_um2=0.3)
    work = Path(tempfile.mkdtemp(prefix="colour-", dir=ROOT / "var" if (ROOT / "var").is_dir() else None))
    t0 = time.monotonic()
    train(sim.model_config(features=16, depth=2),
          TrainConfig(epochs=max(1, args.steps // 100), steps_per_epoch=100, batch_size=16, lr=1e-3,
                      schedule="cosine", val_samples=64, seed=0, warmup_steps=50),
          lambda b, s: sample_batch(sim, b, s), work / "model", report=lambda *a, **k: None,
          extra={"camera": "perfect", "simulation": sim.to_dict()})
    train_s = time.monotonic() - t0
    rows = []
    for density in DENSITIES:
        folder = work / f"movie-{density:g}"
        folder.mkdir()
        cfg = dataclasses.replace(sim.simulation_config(20261208), n_frames=args.frames, frame_shape=(64, 64),
                                  density_per_um2=density)
        res = simulate(cfg)
        tifffile.imwrite(folder / "frames.tif", np.clip(np.rint(res.adu), 0, 65535).astype(np.uint16),
                         metadata={"axes": "TCYX"})
        truth = res.truth.select(res.truth["photons"] >= sim.min_target_photons)
        write_table(truth, folder / "truth.h5", fmt="locus")
        (folder / "params.json").write_text(json.dumps({"dye_ratios": RATIOS, "threads": args.threads}))
        t1 = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "algorithms.decode_plex", "fit", "--model",
                               str(work / "model" / "model.pt"), "--frames", str(folder / "frames.tif"), "--params",
                               str(folder / "params.json"), "--outputs", str(folder / "fit")], cwd=ROOT,
                              capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
        if done.returncode:
            raise SystemExit(done.stderr[-2000:])
        fit_s = time.monotonic() - t1
        pred = read_table(folder / "fit" / "locs.h5")
        network = LocTable({k: v for k, v in pred.columns.items() if not k.startswith("photometry")}, dict(pred.meta))
        measured, baseline = evaluate(truth, pred), evaluate(truth, color_table(network, RATIOS))
        rows.append({"density_per_um2": density, "emitter_frames": len(truth), "fit_s": round(fit_s, 1),
                     "photometry": {k: measured[k] for k in KEYS},
                     "network_photons": {k: baseline[k] for k in KEYS}})
        m, b = rows[-1]["photometry"], rows[-1]["network_photons"]
        print(f"{density:5g} /µm²  JI {m['jaccard']:.3f}  photometry: right {m['color_accuracy']:.3f} of all, "
              f"{m['color_accuracy_assigned']:.3f} of assigned, {m['rejection_rate']:.1%} rejected | network "
              f"photons: {b['color_accuracy']:.3f}, {b['rejection_rate']:.1%} rejected", flush=True)
    result = {"conditions": {"ratios": RATIOS, "train": {"steps": args.steps, "samples": "32 × 32 px, 0.3 /µm²",
                                                         "photons": [1000, 8000], "background": [10, 60],
                                                         "camera": "perfect", "wall_s": round(train_s, 1)},
                             "movies": {"frames": args.frames, "px": [64, 64], "seed": 20261208},
                             "threads": args.threads, "load_avg": list(os.getloadavg())},
              "rows": rows, "command": "python " + " ".join(sys.argv)}
    args.outputs.mkdir(parents=True, exist_ok=True)
    (args.outputs / "decode_plex_colour.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
