"""DECODE-Plex speed benchmark (not a test): training samples/s, inference frames/s, matching speed.

    python bench/decode_plex_speed.py [--threads 2] [--features 48] [--device cpu|cuda]

- training: samples/s of full steps (simulation engine + forward + loss + backward + AdamW) at 64×64,
  biplane, window 3;
- inference: frames/s of the network + extraction on 2-channel 256×256 frames, window 3;
- matching: vectorised greedy matcher vs a plain Python greedy matcher on the same tables (ratio).
Prints a table and writes ``bench/results/decode_plex_speed.json``.
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

from algorithms.decode_plex.loss import decode_plex_loss  # noqa: E402
from algorithms.decode_plex.model import DecodePlexNet, select_device  # noqa: E402
from algorithms.decode_plex.postprocess import extract  # noqa: E402
from algorithms.decode_plex.samples import SampleConfig, aux_maps, sample_batch  # noqa: E402
from algorithms.evaluation import match  # noqa: E402
from algorithms.io.table import LocTable  # noqa: E402


def plain_greedy(truth: LocTable, pred: LocTable, lateral_nm: float = 250.0) -> int:
    pairs = []
    for i in range(len(truth)):
        for j in range(len(pred)):
            if truth["frame"][i] == pred["frame"][j]:
                d = math.hypot(truth["x"][i] - pred["x"][j], truth["y"][i] - pred["y"][j])
                if d < lateral_nm:
                    pairs.append((d, i, j))
    used_t, used_p = set(), set()
    for _, i, j in sorted(pairs):
        if i not in used_t and j not in used_p:
            used_t.add(i)
            used_p.add(j)
    return len(used_t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--features", type=int, default=48)
    ap.add_argument("--device", default=None)
    ap.add_argument("--outputs", type=Path, default=Path("bench/results"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = select_device(args.device)
    row: dict = {"device": str(device), "threads": args.threads, "features": args.features}

    toy = SampleConfig(frame_size=(64, 64), mode="biplane", channels=2, window=3, three_d=True,
                       density_per_um2=5.0 / 40.96, shifts_px=[(0, 0), (1.0, 0.5)])
    cfg = toy.model_config(features=args.features, depth=2)
    net = DecodePlexNet(cfg).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    bs, steps = 8, 6
    for s in range(steps + 1):
        if s == 1:
            t0 = time.perf_counter()
        b = sample_batch(toy, bs, s)
        out = net(net.prepare(b.frames.to(device)), b.aux.to(device))
        loss, _ = decode_plex_loss(out, b.targets.to(device), cfg)
        opt.zero_grad()
        loss.backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    row["train_samples_per_s_64px"] = round(bs * steps / (time.perf_counter() - t0), 2)

    net.eval()
    frames = torch.rand(4, 3, 2, 256, 256, device=device) * 100
    aux = torch.from_numpy(aux_maps(toy.geometry(), (256, 256))).to(device).expand(4, -1, -1, -1)
    with torch.no_grad():
        extract(net(net.prepare(frames), aux), cfg)
        n_rep = 3
        t0 = time.perf_counter()
        for _ in range(n_rep):
            extract(net(net.prepare(frames), aux), cfg)
        if device.type == "cuda":
            torch.cuda.synchronize()
    row["infer_frames_per_s_2x256"] = round(4 * n_rep / (time.perf_counter() - t0), 2)

    rng = np.random.default_rng(0)
    n = 3000
    truth = LocTable.from_arrays(frame=rng.integers(0, 100, n), x=rng.uniform(0, 5000, n), y=rng.uniform(0, 5000, n))
    pred = truth.with_columns(x=truth["x"] + rng.normal(0, 30, n), y=truth["y"] + rng.normal(0, 30, n))
    t0 = time.perf_counter()
    tp_fast = match(truth, pred, "greedy").tp
    fast = time.perf_counter() - t0
    t0 = time.perf_counter()
    tp_slow = plain_greedy(truth, pred)
    slow = time.perf_counter() - t0
    row.update({"match_locs": n, "match_vectorised_s": round(fast, 4), "match_plain_python_s": round(slow, 3),
                "match_speedup": round(slow / fast, 1), "match_same_tp": tp_fast == tp_slow})
    print(f"{'metric':<28}{'value':>14}")
    for k, v in row.items():
        print(f"{k:<28}{v!s:>14}")
    args.outputs.mkdir(parents=True, exist_ok=True)
    (args.outputs / "decode_plex_speed.json").write_text(json.dumps(row, indent=1))


if __name__ == "__main__":
    main()
