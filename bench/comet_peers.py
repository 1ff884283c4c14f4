"""Run one peer drift-correction tool on a dataset written by bench/comet.py; print one JSON line.

Runs in whichever Python has the peers installed (see requirements-bench.txt):
    python bench/comet_peers.py {comet-smlm|aim} DATA.npz
The npz holds frame (0-based), x, y[, z] in nm and n_frames. Output: {"peer", "time_s", "drift"
(list of per-frame rows, nm, the drift to subtract), "note"} or {"peer", "skipped": reason}.
Only the peer's own call is timed (no imports, no file I/O).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

# this folder holds bench/comet.py, which would shadow the comet-smlm package `comet`
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

PX_NM = 130.0  # camera pixel handed to the tools that work in pixels (AIM)


def run_comet(data) -> tuple[float, np.ndarray, str]:
    from comet import comet_run_kd

    n = len(data["frame"])
    z = data["z"] if "z" in data else np.zeros(n)
    ds = np.column_stack([data["x"], data["y"], z, data["frame"]]).astype(np.float64)
    nf = int(data["n_frames"])
    t0 = time.perf_counter()
    drift = comet_run_kd(ds, segmentation_mode=2, segmentation_var=250, mode="cpu",
                         min_max_frames=(0, nf - 1), random_state=0)
    dt = time.perf_counter() - t0
    d = 3 if "z" in data else 2
    table = np.zeros((nf, d))
    fr = drift[:, 3].astype(int)
    ok = (fr >= 0) & (fr < nf)
    table[fr[ok]] = drift[ok, :d]
    return dt, table, "comet_run_kd(segmentation_mode=2, segmentation_var=250 frames, mode='cpu')"


def run_aim(data) -> tuple[float, np.ndarray, str]:
    import pandas as pd
    from picasso import aim

    nf = int(data["n_frames"])
    cols = {"frame": data["frame"].astype(np.uint32), "x": (data["x"] / PX_NM).astype(np.float32),
            "y": (data["y"] / PX_NM).astype(np.float32),
            "lpx": np.full(len(data["x"]), 8.0 / PX_NM, np.float32),
            "lpy": np.full(len(data["x"]), 8.0 / PX_NM, np.float32)}
    if "z" in data:
        cols["z"] = data["z"].astype(np.float32)  # picasso keeps z in nm
    locs = pd.DataFrame(cols)
    size = int(np.ceil(max(data["x"].max(), data["y"].max()) / PX_NM)) + 2
    info = [{"Width": size, "Height": size, "Frames": nf, "Pixelsize": PX_NM}]
    t0 = time.perf_counter()
    _, _, drift = aim.aim(locs, info, segmentation=100)
    dt = time.perf_counter() - t0
    axes = ["x", "y"] + (["z"] if "z" in data else [])
    table = np.column_stack([np.asarray(drift[a], dtype=np.float64) * (PX_NM if a != "z" else 1.0) for a in axes])
    return dt, table[:nf], "picasso.aim.aim(segmentation=100 frames, default intersect_d/roi_r)"


def main() -> None:
    peer, path = sys.argv[1], sys.argv[2]
    data = dict(np.load(path))
    try:
        dt, table, note = {"comet-smlm": run_comet, "aim": run_aim}[peer](data)
    except ImportError as exc:
        print(json.dumps({"peer": peer, "skipped": f"not installed ({exc})"}))
        return
    print(json.dumps({"peer": peer, "time_s": dt, "drift": table.tolist(), "note": note}))


if __name__ == "__main__":
    main()
