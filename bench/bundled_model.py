"""Validation of the bundled DECODE-Plex model (not a test): a movie simulated independently of training, fitted
exactly as a job fits it, scored against its truth and the CRLB.

    python -m algorithms.decode_plex train --params algorithms/decode_plex/models/generic-2d-emccd.params.json \\
        --outputs var/bundled_model/out                       # ~25 min on one shared CPU core
    python bench/bundled_model.py --install var/bundled_model/out/model.pt   # copy it in, then validate
    python -m algorithms.decode_plex calibrate --model algorithms/decode_plex/models/generic-2d-emccd.pt \
        --params P --outputs DIR     # a model trained before training chose its threshold: {"samples": 1024}
    python bench/bundled_model.py                              # validate the model already bundled

``--install`` checks that the model was trained with the committed params file and copies it to
``algorithms/decode_plex/models/generic-2d-emccd.pt``. The validation movie shares only the setup with training
(camera preset, pixel size, PSF σ) and differs in everything drawn: its own seed, 0.15 emitters/µm² (training
0.5), a mean on-time of 3 frames (training 2), photons per blink normal 3000 ± 1000 (training uniform 500–8000)
and a background level per frame uniform in 20–100 photons/px (training 10–120); 64 × 64 px frames (training
32 × 32). The truth keeps every emitter-frame, partial blinks included (the SMLM challenge's convention).

The movie goes through ``python -m algorithms.decode_plex fit`` with its default parameters (de-biasing where a
bias shows, the model's calibrated detection threshold) as a
subprocess with ``OMP_NUM_THREADS=--threads``. Matching and metrics are ``algorithms.evaluation`` (Hungarian,
250 nm). √CRLB per true emitter is :func:`algorithms.simulation.crlb.crlb_single` — the Fisher information of
the pixelated Gaussian PSF under the EMCCD noise model (excess factor 2, read noise, spurious charge) at the
emitter's own photons and its frame's background, on the 15 × 15 px window around it clipped to the frame
(neighbours ignored: an isolated-emitter bound); ``rmse_lat_over_crlb`` = RMSE / sqrt(mean(CRLB_x² + CRLB_y²))
over the matched pairs. Writes ``bench/results/bundled_model.json`` and the validation block of the sidecar
``algorithms/decode_plex/models/generic-2d-emccd.json`` (with the model's size, sha256, training parameters,
code version and training summary).
"""

import sys
from pathlib import Path

# bench/platform.py shadows the standard library's `platform` (torch imports it): put the repo root first.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from algorithms.decode_plex.bundled import GENERIC_2D_EMCCD, params_path, sidecar_path, training_params  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
VALIDATION = {
    "frame_px": [64, 64], "density_per_um2": 0.15, "on_time_frames": 3.0,
    "flux": {"dist": "normal", "mean": 3000.0, "std": 1000.0}, "background": {"low": 20.0, "high": 100.0},
    "seed": 20261204,
}
PHOTON_BINS = [0, 500, 1500, 3000, 1e9]  # photons of the true emitter-frame


def install(src: Path) -> None:
    """Copy a model written by `train` into the bundle, after checking it was trained with the params file."""
    import torch

    blob = torch.load(src, map_location="cpu", weights_only=True)
    want = training_params()
    got = {k: blob["train_params"][k] for k in want}
    if got != want:
        raise SystemExit(f"{src} was not trained with {params_path().relative_to(REPO)}: {got} != {want}")
    tmp = GENERIC_2D_EMCCD.with_suffix(".tmp")
    shutil.copyfile(src, tmp)
    tmp.replace(GENERIC_2D_EMCCD)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def crlb_nm(truth, bg: np.ndarray, psf, camera, px: float, window: int = 15) -> tuple[np.ndarray, np.ndarray]:
    """√CRLB x and y (nm) of each true emitter-frame, isolated, on its clipped 15 × 15 px window."""
    from algorithms.simulation.crlb import crlb_single

    h, w = bg.shape[-2:]
    x, y = truth["x"] / px, truth["y"] / px
    c0 = np.clip(np.floor(x).astype(int) - window // 2, 0, w - window)
    r0 = np.clip(np.floor(y).astype(int) - window // 2, 0, h - window)
    level = bg[truth["frame"], 0, np.clip(y.astype(int), 0, h - 1), np.clip(x.astype(int), 0, w - 1)]
    out = []
    for s in range(0, len(x), 1000):
        sl = slice(s, s + 1000)
        c = crlb_single(psf, x[sl] - c0[sl], y[sl] - r0[sl], np.zeros(len(x[sl])), truth["photons"][sl],
                        level[sl], (window, window), camera)
        out.append(c[:, :2] * px)
    both = np.concatenate(out)
    return both[:, 0], both[:, 1]


def training_summary(blob: dict) -> dict:
    hist = blob["history"]
    tc = blob["train_config"]
    last = hist[-1]
    return {
        "steps": tc["epochs"] * tc["steps_per_epoch"], "batch_size": tc["batch_size"],
        "samples": tc["epochs"] * tc["steps_per_epoch"] * tc["batch_size"], "lr": tc["lr"],
        "schedule": tc["schedule"], "warmup_steps": tc["warmup_steps"], "seed": tc["seed"],
        "wall_s": last["elapsed_s"], "threads": 1,
        "final": {"train_loss": round(last["train"]["total"], 4),
                  **{f"val_{k}": round(v, 4) for k, v in last["val"].items() if isinstance(v, float)}},
        "val_jaccard_per_epoch": [round(h["val"].get("jaccard", float("nan")), 4) for h in hist],
        "val_rmse_lat_nm_per_epoch": [round(h["val"].get("rmse_lat", float("nan")), 2) for h in hist],
        "note": "validation set of train(): 128 samples drawn once from the training distribution",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--install", type=Path, help="model.pt written by train: copy it into the bundle first")
    ap.add_argument("--frames", type=int, default=2000, help="frames of the validation movie")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--outputs", type=Path, default=Path("bench/results"))
    args = ap.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import tifffile
    import torch

    from algorithms.decode_plex.train import finite_or_none, load_model
    from algorithms.evaluation import evaluate
    from algorithms.evaluation.matching import match
    from algorithms.io.formats import read_table
    from algorithms.simulation.render import SimulationConfig, make_psfs, simulate

    torch.set_num_threads(args.threads)
    if args.install:
        install(args.install)
    net, blob = load_model(GENERIC_2D_EMCCD)
    p = training_params()
    cfg = SimulationConfig(
        n_frames=args.frames, frame_shape=tuple(VALIDATION["frame_px"]), px_size_nm=p["px_size_nm"],
        density_per_um2=VALIDATION["density_per_um2"], on_time_frames=VALIDATION["on_time_frames"],
        z_range_nm=(0.0, 0.0), flux=dict(VALIDATION["flux"]), background=dict(VALIDATION["background"]),
        camera=p["camera"], psf={"kind": "gaussian", "sigma_px": p["psf_sigma_px"]}, seed=VALIDATION["seed"],
        backend="cpu")
    t0 = time.monotonic()
    result = simulate(cfg)
    sim_s = time.monotonic() - t0
    truth = result.truth
    px = cfg.px_size_nm
    cx, cy = crlb_nm(truth, np.asarray(result.background), make_psfs(cfg)[0], result.camera, px)
    truth = truth.with_columns(crlb_x=cx, crlb_y=cy)
    with tempfile.TemporaryDirectory(dir=REPO / "var" if (REPO / "var").is_dir() else None) as tmp:
        work = Path(tmp)
        tifffile.imwrite(work / "movie.tif", np.clip(np.rint(result.adu), 0, 65535).astype(np.uint16),
                         metadata={"axes": "TCYX"})
        (work / "params.json").write_text(json.dumps({"device": "cpu"}))
        t1 = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "algorithms.decode_plex", "fit", "--model", str(GENERIC_2D_EMCCD),
             "--frames", str(work / "movie.tif"), "--outputs", str(work / "fit"), "--params", str(work / "params.json")],
            cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)}, capture_output=True, text=True)
        fit_s = time.monotonic() - t1
        if proc.returncode:
            raise SystemExit(f"fit failed: {proc.stderr[-2000:]}")
        pred = read_table(work / "fit" / "locs.h5")
        report = json.loads((work / "fit" / "fit_report.json").read_text())
    m = evaluate(truth, pred)
    # per photon bin of the true emitter-frame: recall, and RMSE against √CRLB over its matched pairs
    mm = match(truth, pred)
    ph = truth["photons"]
    bins = []
    for lo, hi in zip(PHOTON_BINS[:-1], PHOTON_BINS[1:], strict=True):
        in_bin = (ph >= lo) & (ph < hi)
        sel = in_bin[mm.truth]
        t, q = mm.truth[sel], mm.pred[sel]
        d2 = (pred["x"][q] - truth["x"][t]) ** 2 + (pred["y"][q] - truth["y"][t]) ** 2
        c2 = cx[t] ** 2 + cy[t] ** 2
        bins.append({"photons": [lo, hi if hi < 1e9 else None], "emitter_frames": int(in_bin.sum()),
                     "recall": float(sel.sum() / in_bin.sum()) if in_bin.sum() else None,
                     "rmse_lat_nm": float(np.sqrt(d2.mean())) if len(t) else None,
                     "sqrt_crlb_lat_nm": float(np.sqrt(c2.mean())) if len(t) else None,
                     "rmse_lat_over_crlb": float(np.sqrt(d2.mean() / c2.mean())) if len(t) else None})
    size = GENERIC_2D_EMCCD.stat().st_size
    conditions = {**VALIDATION, "frames": args.frames, "px_size_nm": px, "psf_sigma_px": p["psf_sigma_px"],
                  "camera": p["camera"], "emitter_frames": len(truth),
                  "emitter_frames_per_frame": round(len(truth) / args.frames, 2),
                  "median_true_photons": float(np.median(ph))}
    metrics = {k: m[k] for k in ("jaccard", "precision", "recall", "rmse_lat", "efficiency_lat", "bias_x",
                                 "bias_y", "photon_rmse", "rmse_lat_over_crlb", "tp", "fp", "fn")}
    metrics["sqrt_crlb_lat_nm"] = m["rmse_lat"] / m["rmse_lat_over_crlb"]
    command = "python " + " ".join([sys.argv[0], *[a for a in sys.argv[1:]]])
    # metrics flat at the top of the block: the model registry (jobs.trained_models) shows its numbers
    validation = {**metrics, "conditions": conditions, "by_true_photons": bins,
                  "fit": {"wall_s": round(fit_s, 1), "frames_per_s": round(args.frames / fit_s, 1),
                          "threads": args.threads, "localizations": report["localizations"],
                          "params": f"defaults: debias {report['debias']} ({'ran' if report['debiased'] else 'not run'}), "
                                    f"prob_threshold {report['prob_threshold']} ({report['prob_threshold_source']})"},
                  "command": command, "measured_at_code_version": blob.get("code_version")}
    sidecar = {
        "name": GENERIC_2D_EMCCD.stem, "file": GENERIC_2D_EMCCD.name, "size_bytes": size,
        "sha256": sha256(GENERIC_2D_EMCCD), "format": blob["format"],
        "summary": "DECODE-Plex, single channel, 2D, EMCCD (SMLM-challenge preset), 100 nm pixels, Gaussian PSF "
                   f"σ {p['psf_sigma_px']} px; photons {p['photons'][0]:g}–{p['photons'][1]:g} per blink, background "
                   f"{p['background'][0]:g}–{p['background'][1]:g} photons/px",
        "trained_with": "python -m algorithms.decode_plex train --params "
                        f"{params_path().relative_to(REPO)} --outputs DIR (device cpu, one thread)",
        "code_version": blob.get("code_version"), "parameters": net.n_parameters(),
        "model_config": blob["model_config"], "camera": blob.get("camera"), "train_params": blob["train_params"],
        "detection": {k: v for k, v in (blob.get("detection") or {}).items() if k not in ("curve", "curves")}
        or None,  # the threshold and how it was chosen; the curves are in the model file
        "training": training_summary(blob),
        "validation": validation,
    }
    with open(sidecar_path().with_suffix(".tmp"), "w") as fh:
        json.dump(finite_or_none(sidecar), fh, indent=1)
    sidecar_path().with_suffix(".tmp").replace(sidecar_path())
    row = {"model": str(GENERIC_2D_EMCCD.relative_to(REPO)), "size_bytes": size, "sha256": sidecar["sha256"],
           "simulate_s": round(sim_s, 1), "load_avg": [round(v, 2) for v in os.getloadavg()], **validation}
    args.outputs.mkdir(parents=True, exist_ok=True)
    (args.outputs / "bundled_model.json").write_text(json.dumps(finite_or_none(row), indent=1))
    print(f"{'metric':<22}{'value':>12}")
    for k, v in metrics.items():
        print(f"{k:<22}{(f'{v:.4g}' if isinstance(v, float) else str(v)):>12}")
    print(f"\n{'true photons':<16}{'n':>7}{'recall':>8}{'RMSE nm':>9}{'√CRLB':>8}{'ratio':>7}")
    for b in bins:
        lo, hi = b["photons"]
        print(f"{f'{lo:g}–{hi:g}' if hi else f'≥ {lo:g}':<16}{b['emitter_frames']:>7}"
              + "".join(f"{v:>{w}.3g}" if v is not None else f"{'—':>{w}}"
                        for v, w in ((b["recall"], 8), (b["rmse_lat_nm"], 9), (b["sqrt_crlb_lat_nm"], 8),
                                     (b["rmse_lat_over_crlb"], 7))))
    print(f"\nfit: {args.frames} frames in {fit_s:.1f} s ({args.frames / fit_s:.0f} frames/s, {args.threads} thread)")


if __name__ == "__main__":
    main()
