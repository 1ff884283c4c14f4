"""DECODE-Plex accuracy benchmark (not a test): train, then score an independent simulated test set.

    python bench/decode_plex_accuracy.py [--scenario cpu-quick] [--steps 3000] [--threads 2]

Scenario ``cpu-quick`` (issue 5): single-channel 2D, low density (0.05 /µm²), test set at 5000 photons and
background 50 photons/px (training draws 2000–8000 photons, 30–70 photons/px).
Goal: JI ≥ 0.85 and lateral RMSE ≤ 1.5 × √CRLB.

Until the simulation engine is wired in, samples come from the Gaussian-PSF stand-in
(``algorithms.decode_plex._toy``) and √CRLB is the Rieger & Stallinga (2014) approximation for an
integrated Gaussian PSF with uniform background (per axis, photons N, background b/px, pixel a, PSF σ):
``var = σa²/N · (1 + 4τ + sqrt(2τ / (1 + 4τ)))``, ``σa² = σ² + a²/12``, ``τ = 2π σa² b / (N a²)``; the
lateral value is sqrt(var_x + var_y). Prints a table and writes ``bench/results/decode_plex_accuracy.json``.
"""

import sys
from pathlib import Path

# bench/platform.py shadows the standard library's `platform` (torch imports it): put the repo root first.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from algorithms.decode_plex._toy import ToyConfig, sample_batch  # noqa: E402
from algorithms.decode_plex.postprocess import extract  # noqa: E402
from algorithms.decode_plex.train import TrainConfig, finite_or_none, load_model, train  # noqa: E402
from algorithms.evaluation import evaluate  # noqa: E402
from algorithms.io.table import LocTable  # noqa: E402

# (training simulation, test simulation): training covers a broader photon/background range than the test
# (as the paper advises); a fixed photon count in training lets the photon σ collapse to its floor.
SCENARIOS = {
    "cpu-quick": (
        ToyConfig(height=40, width=40, emitters_per_frame=0.05 * 16.0,  # 0.05 /µm² on 4×4 µm
                  photons=(2000.0, 8000.0), bg=(30.0, 70.0), margin_px=2.0),
        ToyConfig(height=40, width=40, emitters_per_frame=0.05 * 16.0,
                  photons=(5000.0, 5000.0), bg=(50.0, 50.0), margin_px=2.0),
    ),
}


def crlb_lateral_nm(toy: ToyConfig, photons: np.ndarray) -> np.ndarray:
    """Approximate √CRLB (nm, lateral) of the stand-in PSF at z = 0."""
    a = toy.px_size_nm
    s = toy.sigma0_px * math.sqrt(1 + (toy.astig_c_nm / toy.astig_d_nm) ** 2) * a
    sa2 = s * s + a * a / 12
    b = float(np.mean(toy.bg))
    tau = 2 * math.pi * sa2 * b / (photons * a * a)
    var = sa2 / photons * (1 + 4 * tau + np.sqrt(2 * tau / (1 + 4 * tau)))
    return np.sqrt(2 * var)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenario", choices=SCENARIOS, default="cpu-quick")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--features", type=int, default=16)
    ap.add_argument("--test-frames", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--outputs", type=Path, default=Path("bench/results"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    toy, test_toy = SCENARIOS[args.scenario]
    cfg = toy.model_config(features=args.features, depth=2)
    epochs = 10
    tc = TrainConfig(epochs=epochs, steps_per_epoch=max(1, args.steps // epochs), batch_size=args.batch_size,
                     lr=2e-3, schedule="cosine", val_samples=256, seed=1)
    work = args.outputs / f"decode_plex_{args.scenario}"
    t0 = time.monotonic()
    train(cfg, tc, lambda b, s: sample_batch(toy, b, s), work)
    train_s = time.monotonic() - t0
    net, _ = load_model(work / "model.pt")
    tables, truths = [], []
    t1 = time.monotonic()
    with torch.no_grad():
        for k in range(0, args.test_frames, 100):
            batch = sample_batch(test_toy, 100, seed=10**12 + k)  # independent of training/validation seeds
            tables.append(extract(net(net.prepare(batch.frames), batch.aux), cfg, 0.5, frame_offset=k))
            truths.append(batch.truth.with_columns(frame=batch.truth["frame"] + k))
    infer_s = time.monotonic() - t1
    cat = lambda ts: LocTable({c: np.concatenate([t[c] for t in ts]) for c in ts[0].columns})  # noqa: E731
    pred, truth = cat(tables), cat(truths)
    m = evaluate(truth, pred)
    crlb = float(np.sqrt(np.mean(crlb_lateral_nm(test_toy, truth["photons"]) ** 2)))
    row = {
        "scenario": args.scenario, "simulator": "toy-gaussian stand-in", "steps": tc.epochs * tc.steps_per_epoch,
        "batch_size": tc.batch_size, "features": args.features, "threads": args.threads,
        "train_s": round(train_s, 1), "test_frames": args.test_frames, "infer_frames_per_s": round(args.test_frames / infer_s, 1),
        "jaccard": m["jaccard"], "rmse_lat_nm": m["rmse_lat"], "sqrt_crlb_lat_nm": crlb,
        "rmse_over_sqrt_crlb": m["rmse_lat"] / crlb, "efficiency_lat": m.get("efficiency_lat"),
        "goal_met": bool(m["jaccard"] >= 0.85 and m["rmse_lat"] <= 1.5 * crlb),
    }
    print(f"{'metric':<22}{'value':>14}")
    for k, v in row.items():
        print(f"{k:<22}{(f'{v:.4g}' if isinstance(v, float) else str(v)):>14}")
    args.outputs.mkdir(parents=True, exist_ok=True)
    (args.outputs / "decode_plex_accuracy.json").write_text(json.dumps(finite_or_none(row), indent=1))


if __name__ == "__main__":
    main()
