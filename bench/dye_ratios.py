"""Dye ratios from few localizations: the expectation-maximisation estimator of
`algorithms.decode_plex.postprocess.find_dye_ratios` against the histogram-peak method it replaced (kept here
as the baseline, run on the same sets).

    python bench/dye_ratios.py [--sets 300]

Synthetic photon pairs as in tests/science/test_decode_plex_postprocess.py: each localization one of two dyes
(equal odds, or 90 % / 10 % in the last scenario), 2000–8000 photons split by the dye's fractions, Gaussian noise of shot noise plus a background
term (σ² = N + 450). For each number of localizations, `--sets` independent sets: how often a found ratio is
off by more than 30 % (or no ratios are found), and the rejection rate and colour accuracy of the assignment
(posterior ≥ 0.9) with the found ratios. Prints a table; writes bench/results/dye_ratios.json.
"""

import sys
from pathlib import Path

# bench/platform.py shadows the standard library's `platform`: keep bench/ off the import path.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from algorithms.decode_plex.postprocess import assign_colors, dye_fractions, find_dye_ratios  # noqa: E402


def histogram_peaks(photons: np.ndarray, n_dyes: int, bins: int = 200) -> list[float]:
    """The baseline: ratios at the highest peaks of the smoothed log-ratio histogram."""
    ok = (photons > 0).all(1)
    lr = np.log(photons[ok, 1] / photons[ok, 0])
    hist, edges = np.histogram(lr, bins=bins)
    smooth = np.convolve(hist, np.ones(5) / 5, mode="same")
    peaks = sorted((i for i in range(len(smooth)) if smooth[i] > 0 and smooth[i] >= smooth[max(i - 1, 0)]
                    and smooth[i] > smooth[min(i + 1, len(smooth) - 1)]), key=lambda i: -smooth[i])
    chosen: list[int] = []
    for i in peaks:
        if all(abs(i - j) >= max(3, bins // 40) for j in chosen):
            chosen.append(i)
        if len(chosen) == n_dyes:
            break
    if len(chosen) < n_dyes:
        raise ValueError("too few peaks")
    centres = 0.5 * (edges[:-1] + edges[1:])
    return sorted((float(np.exp(centres[i])) for i in chosen), reverse=True)


def pairs(n: int, ratios: list[float], seed: int, second_share: float = 0.5):
    rng = np.random.default_rng(seed)
    code = (rng.random(n) < second_share).astype(int)
    true = dye_fractions(ratios)[code] * rng.uniform(2000, 8000, n)[:, None]
    sigma = np.sqrt(true + 450.0)
    return code, true + rng.normal(0, 1, true.shape) * sigma, sigma


def score(method, sets: int, n: int, ratios: list[float], second_share: float = 0.5) -> dict:
    off, rejected, accuracy = 0, [], []
    for seed in range(sets):
        code, observed, sigma = pairs(n, ratios, 10_000 + seed, second_share)
        try:
            found = method(observed, sigma)
        except ValueError:
            off += 1
            rejected.append(1.0)
            continue
        off += any(abs(f - r) / r > 0.3 for f, r in zip(found, ratios, strict=True))
        pred, _ = assign_colors(observed, sigma, dye_fractions(found))
        kept = pred >= 0
        rejected.append(1 - kept.mean())
        accuracy.append(float((pred[kept] == code[kept]).mean()) if kept.any() else 0.0)
    return {"off_or_missing": off / sets, "rejected": float(np.mean(rejected)),
            "accuracy": float(np.mean(accuracy)) if accuracy else 0.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", type=int, default=300)
    ap.add_argument("--sizes", type=int, nargs="+", default=[20, 30, 50, 100, 300])
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "dye_ratios.json")
    args = ap.parse_args()
    methods = {"histogram peaks": lambda obs, sig: histogram_peaks(obs, 2),
               "EM (ours)": lambda obs, sig: find_dye_ratios(obs, 2, sig)}
    rows = []
    # The paper's pair (AF647 / CF680), a wider pair, a close pair, and the first with 90 % / 10 % of the dyes.
    for ratios, share in (([0.21, 0.02], 0.5), ([1.0, 0.3], 0.5), ([0.5, 0.3], 0.5), ([0.21, 0.02], 0.1)):
        for n in args.sizes:
            for name, method in methods.items():
                rows.append({"ratios": ratios, "second_dye_share": share, "localizations": n, "method": name,
                             **score(method, args.sets, n, ratios, share)})
    print(f"{'ratios':<10} {'mix':>5} {'n':>5} {'method':<16} {'off>30%/none':>13} {'rejected':>9} {'accuracy':>9}")
    for r in rows:
        print(f"{'/'.join(map(str, r['ratios'])):<10} {r['second_dye_share']:>5.2f} {r['localizations']:>5} "
              f"{r['method']:<16} {r['off_or_missing']:>13.3f} {r['rejected']:>9.3f} {r['accuracy']:>9.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"bench": "dye_ratios", "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                    "sets": args.sets, "rows": rows}, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
