"""Drift-correction benchmark (issue 6): ours vs comet-smlm and Picasso AIM on the same simulated data.

    python bench/comet.py [--quick] [--peer-python PY] [--no-peers | --peers aim,comet-smlm] [--no-levers]
                          [--repeat N] [--reuse-peers EARLIER.json]

Datasets (seeded, `algorithms.comet.simulate`): 2D 100 k and 500 k localizations over 20 000 frames,
3D 100 k; blinking sites, 8 nm median lateral precision (log-normal photons), smooth random-walk drift
of 150 nm. For each: time (wall clock of the estimator call alone) and RMSE per axis against the true
drift after removing each one's mean. At 2D 500 k each lever of ours is also switched off in turn.
Peers run in `--peer-python` (a Python that has requirements-bench.txt installed; default: this one,
or $LOCUS_BENCH_PEER_PYTHON) through bench/comet_peers.py, and are skipped with a note when absent.
Prints a table and writes bench/results/comet.json.
"""

from __future__ import annotations

import os

# Same BLAS threading as the CLI (algorithms/comet/__main__.py): one thread, set before numpy loads.
_SET_HERE = [v for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS") if v not in os.environ]
for _var in _SET_HERE:
    os.environ[_var] = "1"  # the peers run with the environment as it was (PEER_ENV)

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PEER_ENV = {k: v for k, v in os.environ.items() if k not in _SET_HERE}
sys.path.insert(0, str(ROOT))

from algorithms.comet.estimate import CometParams, estimate_drift  # noqa: E402
from algorithms.comet.simulate import drift_rmse, simulate_localizations  # noqa: E402
from compute.pair_overlap import cuda_available  # noqa: E402

DATASETS = {
    "2D 100k": dict(n_locs=100_000, n_frames=20_000, dims=2, seed=100),
    "2D 500k": dict(n_locs=500_000, n_frames=20_000, dims=2, seed=500),
    "3D 100k": dict(n_locs=100_000, n_frames=20_000, dims=3, seed=300),
}
COMMON = dict(precision_nm=8.0, drift_kind="random_walk", drift_amplitude_nm=150.0)
LEVERS = {
    "no blink merging": {"merge_blinks": False},
    "no pair budget (all pairs)": {"max_pairs_per_loc": None},
    "no precision weighting": {"precision_weighted": False},
    "no pre-pass (COMET radius 150 nm, annealed)": {"prepass": False, "max_drift_nm": 150.0},
    "no same-window skip": {"skip_same_window": False},
    "no per-level pruning": {"prune": False, "anneal_nm": [6.0, 3.0, 0.0]},
    "with per-level pruning, same levels": {"anneal_nm": [6.0, 3.0, 0.0]},
    "windows model (250 frames)": {"model": "windows", "knot_frames": 250},
}


def _arrays(sim, dims):
    t = sim.table
    axes = "xyz"[:dims]
    return t["frame"], np.column_stack([t[a] for a in axes]), np.column_stack([t[f"sigma_{a}"] for a in axes])


def run_ours(sim, dims, label, **params) -> dict:
    frame, pos, sig = _arrays(sim, dims)
    p = CometParams(**params)
    t0 = time.perf_counter()
    res = estimate_drift(frame, pos, sig, p)
    dt = time.perf_counter() - t0
    rmse = drift_rmse(res.drift, sim.drift[: len(res.drift)])
    row = {"method": label, "time_s": dt, "rmse_nm": rmse.tolist(), "pairs": res.stats.get("pairs"),
           "timings_s": res.timings, "params": {k: v for k, v in asdict(p).items() if k in params}}
    if res.precision_nm is not None:
        row["split_half_nm"] = res.precision_nm.tolist()
    return row


def run_peer(peer, sim, dims, peer_python, timeout) -> dict:
    t = sim.table
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.npz"
        cols = {a: t[a] for a in "xyz"[:dims]}
        np.savez(path, frame=t["frame"], n_frames=len(sim.drift), **cols)
        try:
            proc = subprocess.run([peer_python, str(ROOT / "bench" / "comet_peers.py"), peer, str(path)],
                                  capture_output=True, text=True, timeout=timeout, env=PEER_ENV)
        except subprocess.TimeoutExpired:
            return {"method": peer, "skipped": f"timed out after {timeout} s"}
    lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"method": peer, "skipped": f"failed: {proc.stderr.strip().splitlines()[-1:]}"}
    out = json.loads(lines[-1])
    if "skipped" in out:
        return {"method": peer, "skipped": out["skipped"]}
    drift = np.asarray(out["drift"])
    truth = sim.drift[: len(drift)]
    # the tools differ in sign convention (drift vs correction): take the sign that matches
    rmse_pos, rmse_neg = drift_rmse(drift, truth), drift_rmse(-drift, truth)
    rmse = rmse_pos if rmse_pos.sum() <= rmse_neg.sum() else rmse_neg
    return {"method": peer, "time_s": out["time_s"], "rmse_nm": rmse.tolist(), "note": out["note"]}


def _median_row(rows: list[dict]) -> dict:
    """One row for repeated runs of one method: the median time, every time kept."""
    timed = [r for r in rows if "time_s" in r]
    if not timed:
        return rows[-1]
    row = dict(timed[-1])
    times = sorted(r["time_s"] for r in timed)
    row["time_s"] = float(np.median(times))
    row["times_s"] = times
    return row


def fmt_row(dataset: str, row: dict) -> str:
    if "skipped" in row:
        return f"| {dataset} | {row['method']} | – | – | skipped: {row['skipped']} |"
    if row.get("reused_from"):
        return (f"| {dataset} | {row['method']} | {row['time_s']:.2f} | "
                f"{' / '.join(f'{v:.2f}' for v in row['rmse_nm'])} | run of {row['reused_from']} |")
    rmse = " / ".join(f"{v:.2f}" for v in row["rmse_nm"])
    extra = []
    if row.get("split_half_nm"):
        extra.append("split-half " + " / ".join(f"{v:.2f}" for v in row["split_half_nm"]))
    if row.get("pairs"):
        extra.append(f"{row['pairs']:,} pairs")
    if row.get("time_vs_aim"):
        extra.append(f"{row['time_vs_aim']:.2f}× AIM's time")
    if len(row.get("times_s", [])) > 1:
        extra.append(f"median of {len(row['times_s'])}")
    return f"| {dataset} | {row['method']} | {row['time_s']:.2f} | {rmse} | {'; '.join(extra)} |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2D 100k only, no lever rows")
    ap.add_argument("--datasets", nargs="*", default=None, help=f"subset of {list(DATASETS)}")
    ap.add_argument("--peer-python", default=os.environ.get("LOCUS_BENCH_PEER_PYTHON", sys.executable))
    ap.add_argument("--peer-timeout", type=int, default=1800)
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--peers", default="aim,comet-smlm", help="comma-separated peers to run (aim, comet-smlm)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="run ours (all levers, no split-half) and the peers this many times, interleaved; "
                         "times are medians (the machine is shared and noisy)")
    ap.add_argument("--no-levers", action="store_true")
    ap.add_argument("--reuse-peers", type=Path, default=None,
                    help="take the rows of peers not run now from an earlier results JSON (same seeded data)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "comet.json")
    args = ap.parse_args()

    names = args.datasets or (["2D 100k"] if args.quick else list(DATASETS))
    results: list[dict] = []
    lines = ["| data | method | time (s) | RMSE x / y [/ z] (nm) | notes |", "|---|---|---|---|---|"]
    peers = [] if args.no_peers else [s for s in args.peers.split(",") if s]
    print("\n".join(lines), flush=True)

    def add(dataset: str, row: dict) -> None:
        row["dataset"] = dataset
        results.append(row)
        line = fmt_row(dataset, row)
        lines.append(line)
        print(line, flush=True)

    backends = ["cpu"] + (["cuda"] if cuda_available() else [])
    for name in names:
        spec = DATASETS[name]
        sim = simulate_localizations(**spec, **COMMON)
        dims = spec["dims"]
        # main rows, interleaved with the peers `--repeat` times: medians of the times
        trials: dict[str, list[dict]] = {}
        for _ in range(args.repeat):
            for be in backends:
                for label, kw in ((f"ours {be}, all levers", {}), (f"ours {be}, no split-half", {"split_half": False})):
                    trials.setdefault(label, []).append(run_ours(sim, dims, label, backend=be, **kw))
            for peer in peers:
                trials.setdefault(peer, []).append(run_peer(peer, sim, dims, args.peer_python, args.peer_timeout))
        main_rows = {label: _median_row(rows) for label, rows in trials.items()}
        aim_s = main_rows.get("aim", {}).get("time_s")
        for label, row in main_rows.items():
            if aim_s and "time_s" in row and label != "aim":
                row["time_vs_aim"] = row["time_s"] / aim_s
            add(name, row)
        if name == "2D 500k" and not (args.quick or args.no_levers):
            for label, lever in LEVERS.items():
                add(name, run_ours(sim, dims, f"ours cpu, {label}", backend="cpu", split_half=False, **lever))
        if args.reuse_peers is not None:
            earlier = json.loads(args.reuse_peers.read_text())
            for row in earlier["results"]:
                if row["dataset"] == name and row["method"] in ("aim", "comet-smlm") and row["method"] not in peers:
                    add(name, {**row, "reused_from": earlier["meta"]["when"]})

    meta = {"machine": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "load_average_at_end": os.getloadavg(),
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "simulation": COMMON,
            "datasets": {n: DATASETS[n] for n in names}, "repeat": args.repeat}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=1, default=float))
    print(f"\nwritten {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")


if __name__ == "__main__":
    main()
