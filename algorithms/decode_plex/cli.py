"""``python -m algorithms.decode_plex train|fit|info`` (design §6: JSON progress, exit 0/1/2, atomic outputs).

train  simulate on the fly with the simulation engine (:mod:`algorithms.decode_plex.samples`: Gaussian PSF,
       or the calibration's cubic splines with ``--calibration``; camera model; channel transforms from
       ``--transform``, the calibration or ``shifts_px``), train, write ``model.pt``, ``checkpoint.pt``,
       ``train_history.json``, ``train_metrics.png``. The calibration's sha256 is recorded in the model
       file and checked again when fitting.
fit    read TIFF movies in chunks, convert ADU → photons with the model's camera, localize, filter,
       de-bias (only where a pixel-locked bias shows, by default), assign colors (multicolor), write ``locs.h5``, ``locs.csv``,
       ``fit_report.json`` and QC PNGs.
info   print a model file's configuration and parameter count.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from algorithms.cli import BadInput, atomic_output, job_arguments, progress, read_params

TRAIN_DEFAULTS: dict[str, Any] = {
    "mode": "single", "channels": 1, "window": 1, "three_d": False,
    "frame_size": [32, 32], "px_size_nm": 100.0,
    "photons": [1000.0, 5000.0], "background": [10.0, 100.0],
    "density_per_um2": 0.3, "z_range_nm": [-500.0, 500.0],
    "on_time_frames": 2.0, "dye_ratios": [], "shifts_px": [], "plane_ratios": [0.5, 0.5], "focal_offsets_nm": [],
    "psf_sigma_px": 1.2, "camera": "perfect",
    "features": 48, "depth": 2,
    "epochs": 20, "steps_per_epoch": 100, "batch_size": 16, "lr": 3e-4, "schedule": "plateau", "warmup_steps": 100,
    "val_samples": 64, "seed": 0, "device": None, "threads": None, "empty_frames": "penalise",
}

FIT_DEFAULTS: dict[str, Any] = {
    "prob_threshold": None, "max_sigma_nm": None, "debias": "auto", "z_step_nm": 50.0,
    "dye_ratios": None, "n_dyes": None, "min_posterior": 0.9, "chunk": 256, "batch_size": None,
    "mirror_second": False, "shift_px": [0, 0], "device": None, "threads": None,
}


def dye_count(n_dyes: int | None, dye_ratios: list[float] | None, trained_ratios: list[float]) -> int:
    """How many dyes a multicolor fit separates: as asked; else as many as the ratios given; else the model's
    own (the ratios it was trained with); only a model that knows none gets the minimum, 2. Single-channel and
    biplane fits have no colours and never ask."""
    if n_dyes:
        return int(n_dyes)
    if dye_ratios:
        return len(dye_ratios)
    return max(len(trained_ratios), 2)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def resolve(defaults: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise BadInput(f"unknown parameter(s): {', '.join(unknown)}")
    return {**defaults, **params}


def _slot(inputs: Path | None, slot: str) -> list[Path]:
    if inputs is None or not (inputs / slot).is_dir():
        return []
    return sorted(p for p in (inputs / slot).iterdir() if p.is_file())


def build_train(p: dict[str, Any], calibration: Any = None, transforms: list[Any] | None = None):
    """(SampleConfig, ModelConfig, TrainConfig) from resolved train params; BadInput on nonsense."""
    from algorithms.decode_plex.loss import LossConfig
    from algorithms.decode_plex.samples import SampleConfig
    from algorithms.decode_plex.train import TrainConfig
    from algorithms.simulation.camera import camera_from_params

    try:
        h, w = (int(v) for v in p["frame_size"])
        lo, hi = (float(v) for v in p["photons"])
        blo, bhi = (float(v) for v in p["background"])
        if not (0 < lo <= hi and 0 <= blo <= bhi and h >= 8 and w >= 8):
            raise BadInput("need 0 < photons[0] ≤ photons[1], 0 ≤ background[0] ≤ background[1], frames ≥ 8 px")
        if p["mode"] == "multicolor" and p["dye_ratios"] and len(p["dye_ratios"]) < 2:
            raise BadInput("multicolor training with dye_ratios needs at least two")
        camera_from_params(p["camera"])  # one clear message for an impossible camera
        channels = int(p["channels"])
        if calibration is not None and len(calibration.psfs) not in (1, channels):
            raise BadInput(f"the calibration has {len(calibration.psfs)} channels but channels is {channels}")
        sim = SampleConfig(
            frame_size=(h, w), mode=p["mode"], channels=channels, window=int(p["window"]),
            three_d=bool(p["three_d"]), px_size_nm=float(p["px_size_nm"]),
            density_per_um2=float(p["density_per_um2"]), on_time_frames=float(p["on_time_frames"]),
            photons=(lo, hi), bg=(blo, bhi), z_range_nm=tuple(float(v) for v in p["z_range_nm"]),
            psf={"kind": "gaussian", "sigma_px": float(p["psf_sigma_px"])}, camera=p["camera"],
            transforms=None if transforms is None else [np.asarray(t, float).tolist() for t in transforms],
            shifts_px=[tuple(s) for s in p["shifts_px"]], plane_ratios=[float(r) for r in p["plane_ratios"]],
            dye_ratios=[float(r) for r in p["dye_ratios"]],
            focal_offsets_nm=[float(v) for v in p["focal_offsets_nm"]],
        )
        if sim.focal_offsets_nm and len(sim.focal_offsets_nm) != channels:
            raise BadInput(f"focal_offsets_nm needs one value per channel ({channels})")
        if calibration is not None and sim.three_d:
            zlo, zhi = calibration.psfs[0].z_range_nm
            if sim.z_range_nm[0] < zlo or sim.z_range_nm[1] > zhi:
                raise BadInput(f"z_range_nm {list(sim.z_range_nm)} leaves the calibration's z range "
                               f"[{zlo:.0f}, {zhi:.0f}] nm")
        model_cfg = sim.model_config(features=int(p["features"]), depth=int(p["depth"]))
        if h % 2 ** model_cfg.depth or w % 2 ** model_cfg.depth:
            raise BadInput(f"frame_size must be a multiple of {2 ** model_cfg.depth} for depth {model_cfg.depth}")
        sim.simulation_config(0)  # the simulation accepts these settings
        tc = TrainConfig(
            epochs=int(p["epochs"]), steps_per_epoch=int(p["steps_per_epoch"]), batch_size=int(p["batch_size"]),
            lr=float(p["lr"]), schedule=p["schedule"], warmup_steps=int(p["warmup_steps"]), val_samples=int(p["val_samples"]), seed=int(p["seed"]),
            device=p["device"], loss=LossConfig(empty_frames=p["empty_frames"]),
        )
    except (TypeError, ValueError, KeyError) as exc:
        raise BadInput(f"bad training parameters: {exc}") from None
    return sim, model_cfg, tc


def _threads(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1024:
        raise BadInput(f"threads must be a whole number from 1 to 1024 (or null: automatic), not {json.dumps(value)}")
    return value


def _photometry(cfg: Any, sim: Any, camera: Any, calibration_path: Path | None) -> Any:
    """Colour assignment's photometry with the PSFs, geometry and camera the model was trained with."""
    from algorithms.decode_plex.photometry import Photometry
    from algorithms.io.calibration import CalibrationError, read_calibration
    from algorithms.simulation.render import make_psfs

    try:
        calibration = read_calibration(calibration_path) if calibration_path is not None else None
        psfs = make_psfs(sim.simulation_config(0), calibration)
    except (CalibrationError, ValueError) as exc:
        raise BadInput(str(exc).splitlines()[0]) from None
    return Photometry(psfs, sim.geometry(), tuple(cfg.px_size_nm), excess=2.0 if camera.kind == "emccd" else 1.0,
                      focal_offsets_nm=list(sim.focal_offsets_nm) or None)


def _write_detection(detection: dict[str, Any], outputs: Path) -> None:
    """The chosen threshold and its precision/recall curve beside the model (JSON and a plot)."""
    from algorithms.decode_plex.detection import plot_curve
    from algorithms.decode_plex.train import finite_or_none

    with atomic_output(outputs / "detection.json") as fh:
        json.dump(finite_or_none(detection), fh, indent=1)
    plot_curve(detection, outputs / "detection_curve.png")


def train_main(argv: list[str] | None) -> int:
    from algorithms.decode_plex.detection import density_samplers
    from algorithms.decode_plex.model import set_cpu_threads
    from algorithms.decode_plex.samples import sample_batch
    from algorithms.decode_plex.train import TrainingDiverged, finite_or_none, plot_history, train
    from algorithms.io.calibration import CalibrationError, read_calibration, read_transforms

    ap = argparse.ArgumentParser(prog="python -m algorithms.decode_plex train", description=(
        "Train a DECODE-Plex model on data simulated on the fly. Params (JSON): photons / background in "
        "photons (per pixel for background), density in emitters/µm², px_size_nm and z_range_nm in nm, "
        "frame_size in px; see TRAIN_DEFAULTS in algorithms/decode_plex/cli.py."))
    job_arguments(ap)
    ap.add_argument("--calibration", type=Path,
                    help="PSF calibration (SMAP *_3dcal.mat, uiPSF .h5, bead stack .tif): spline PSFs; sha256 recorded")
    ap.add_argument("--transform", type=Path, help="channel transform (.mat/.h5): its sha256 is recorded")
    ap.add_argument("--resume", action="store_true", help="continue from --outputs/checkpoint.pt if present")
    args = ap.parse_args(argv)
    raw = read_params(args.params)
    params = resolve(TRAIN_DEFAULTS, raw)
    threads = set_cpu_threads(_threads(params["threads"]))
    calibration_path = args.calibration or next(iter(_slot(args.inputs, "calibration")), None)
    transform_path = args.transform or next(iter(_slot(args.inputs, "transform")), None)
    extra: dict[str, Any] = {"simulator": "algorithms.simulation"}
    for name, path in (("calibration", calibration_path), ("transform", transform_path)):
        if path is not None:
            if not Path(path).is_file():
                raise BadInput(f"{name} file {path} not found")
            extra[f"{name}_sha256"] = sha256_file(Path(path))
    calibration, transforms = None, None
    try:
        if calibration_path is not None:
            calibration = read_calibration(calibration_path)
            if "px_size_nm" not in raw and calibration.px_size_nm:
                params["px_size_nm"] = float(calibration.px_size_nm[0])
            if len(calibration.transforms) == int(params["channels"]) > 1:
                transforms = list(calibration.transforms)
        if transform_path is not None:
            transforms = read_transforms(transform_path, int(params["channels"]))
    except (CalibrationError, ValueError, OSError) as exc:
        raise BadInput(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
    sim, model_cfg, tc = build_train(params, calibration, transforms)
    extra["simulation"] = sim.to_dict()
    extra["camera"] = params["camera"]
    extra["train_params"] = params
    progress(0.0, "train", message="simulating on the fly; validation set drawn once", cpu_threads=threads)
    try:
        model = train(model_cfg, tc, lambda b, s: sample_batch(sim, b, s, calibration), args.outputs,
                      resume=args.resume, extra=extra,
                      calibration_samplers=density_samplers(sim, sample_batch, calibration))
    except TrainingDiverged as exc:  # an algorithm failure (exit 1), not bad input
        raise SystemExit(f"error: {exc}") from None
    with atomic_output(args.outputs / "train_history.json") as fh:
        json.dump(finite_or_none(model["history"]), fh, indent=1)
    plot_history(model["history"], args.outputs / "train_metrics.png")
    _write_detection(model["detection"], args.outputs)
    progress(1.0, "done", outputs=["model.pt", "train_history.json", "train_metrics.png", "detection.json",
                                   "detection_curve.png"])
    return 0


def fit_main(argv: list[str] | None) -> int:
    import torch

    from algorithms.decode_plex.detection import model_threshold
    from algorithms.decode_plex.fit import ChannelSplit, Movie, predict_movie
    from algorithms.decode_plex.model import select_device, set_cpu_threads
    from algorithms.decode_plex.postprocess import color_table, debias, filter_table, pixel_locked_bias
    from algorithms.decode_plex.qc import qc_plots
    from algorithms.decode_plex.samples import SampleConfig, aux_maps
    from algorithms.decode_plex.train import finite_or_none, load_model
    from algorithms.io.formats import write_table
    from algorithms.simulation.camera import camera_from_params

    ap = argparse.ArgumentParser(prog="python -m algorithms.decode_plex fit", description=(
        "Localize emitters in TIFF movies (ADU) with a trained model. Output tables are in nm, frames "
        "0-based, x along columns. Params (JSON): prob_threshold, max_sigma_nm (nm), debias (auto|true|false), z_step_nm "
        "(nm), dye_ratios (channel-1/channel-0 photons per dye), min_posterior, chunk (frames)."))
    job_arguments(ap)
    ap.add_argument("--model", type=Path, help="model.pt written by train")
    ap.add_argument("--frames", type=Path, nargs="*", default=[],
                    help="TIFF file(s) or Picasso .raw movie(s) (with their .yaml), one movie in this order")
    ap.add_argument("--frames-b", type=Path, nargs="*", default=[], help="second camera's TIFF file(s)")
    ap.add_argument("--calibration", type=Path, help="must be the calibration the model was trained for")
    args = ap.parse_args(argv)
    p = resolve(FIT_DEFAULTS, read_params(args.params))
    if p["debias"] not in ("auto", True, False):
        raise BadInput(f"debias must be \"auto\", true or false, not {json.dumps(p['debias'])}")
    model_path = args.model or next(iter(_slot(args.inputs, "model")), None)
    # A Picasso .raw movie's .yaml travels with it into the slot: it is read by the movie, not a movie itself.
    frames = list(args.frames) or [p for p in _slot(args.inputs, "frames") if p.suffix.lower() != ".yaml"]
    calibration = args.calibration or next(iter(_slot(args.inputs, "calibration")), None)
    if model_path is None or not Path(model_path).is_file():
        raise BadInput(f"model file {model_path} not found")
    device = select_device(p["device"])
    threads = set_cpu_threads(_threads(p["threads"]))
    try:
        net, blob = load_model(Path(model_path), device)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    if calibration is not None:
        want = blob.get("calibration_sha256")
        if want is None or sha256_file(Path(calibration)) != want:
            raise BadInput(f"the model was trained for another calibration than {Path(calibration).name}")
    cfg = net.cfg
    try:
        movie = Movie(frames)
        second = Movie(list(args.frames_b)) if args.frames_b else None
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    split = ChannelSplit(cfg.channels, bool(p["mirror_second"]), tuple(int(v) for v in p["shift_px"]))
    cam = camera_from_params(blob.get("camera"))
    if not isinstance(blob.get("simulation"), dict):
        raise BadInput(f"{Path(model_path).name} lacks the simulation parameters it was trained with; train it again")
    sim = SampleConfig.from_dict(blob["simulation"])
    if movie.channels > 1 and movie.channels != cfg.channels:
        raise BadInput(f"the movie holds {movie.channels} channels a frame; the model takes {cfg.channels}")
    if second is not None and (movie.channels > 1 or second.channels > 1):
        raise BadInput("a movie holds its channels already: give one movie, not a second camera")
    halves = cfg.channels > 1 and second is None and movie.channels == 1  # one camera, two halves
    h = movie.frame_shape[0]
    w = movie.frame_shape[1] // (2 if halves else 1)
    if h < 2**cfg.depth or w < 2**cfg.depth:
        raise BadInput(f"frames of {movie.frame_shape} px are too small for this model")
    if halves and movie.frame_shape[1] % 2:
        raise BadInput(f"frames are {movie.frame_shape[1]} px wide: a two-halves split needs an even width")
    aux = None
    if cfg.n_aux:
        aux = aux_maps(sim.geometry(), (h, w))
    photometry = _photometry(cfg, sim, cam, calibration) if cfg.mode == "multicolor" else None
    threshold, threshold_source = ((float(p["prob_threshold"]), "params") if p["prob_threshold"] is not None
                                   else model_threshold(blob))
    progress(0.0, "fit", frames=movie.n_frames, frame_shape=list(movie.frame_shape), prob_threshold=threshold)
    with torch.inference_mode():
        try:
            table = predict_movie(net, movie, cam, split, aux, second, prob_threshold=threshold,
                                  batch_size=p["batch_size"], chunk=int(p["chunk"]), device=device,
                                  on_chunk=lambda f: progress(0.9 * f, "fit"), photometry=photometry)
        except ValueError as exc:
            raise BadInput(str(exc)) from None
    n_raw = len(table)
    table = filter_table(table, threshold, p["max_sigma_nm"])
    report: dict[str, Any] = {"frames": movie.n_frames, "localizations_raw": n_raw, "localizations": len(table),
                              "debias": p["debias"], "model_code_version": blob.get("code_version"),
                              "device": str(device), "cpu_threads": threads, "prob_threshold": threshold,
                              "prob_threshold_source": threshold_source}
    if p["debias"] == "auto":
        report["bias_test"] = pixel_locked_bias(table, cfg.px_size_nm)
    report["debiased"] = bool(len(table)) and (report["bias_test"]["biased"] if p["debias"] == "auto"
                                               else p["debias"] is True)
    raw = table
    if report["debiased"]:
        table = debias(table, cfg.px_size_nm, float(p["z_step_nm"]))
    if cfg.mode == "multicolor" and len(table):
        n_dyes = report["n_dyes"] = dye_count(p["n_dyes"], p["dye_ratios"], sim.dye_ratios)
        try:
            table = color_table(table, p["dye_ratios"], n_dyes, float(p["min_posterior"]))
        except ValueError as exc:
            report["color_error"] = str(exc)
        else:
            report["dye_ratios"] = table.meta["dye_ratios"]
            report["color_photons"] = table.meta["color_photons"]
            report["rejection_rate"] = float(np.mean(table["code"] < 0)) if len(table) else None
    # Tables carry one camera pixel size (x; pixels are square in every reader and writer), the pair beside it:
    # a list under px_size_nm made every consumer that expects a number (QC, SMAP/DECODE writers) fail.
    table.meta.update({"source": "decode-plex fit", "px_size_nm": float(cfg.px_size_nm[0]),
                       "px_size_xy_nm": [float(v) for v in cfg.px_size_nm]})
    out = args.outputs
    write_table(table, out / "locs.h5", "locus")
    write_table(table, out / "locs.csv", "thunderstorm")
    report["qc"] = qc_plots(table, cfg, out, report.get("dye_ratios"), raw=raw if report["debiased"] else None)
    with atomic_output(out / "fit_report.json") as fh:
        json.dump(finite_or_none(report), fh, indent=1)
    progress(1.0, "done", localizations=len(table), outputs=["locs.h5", "locs.csv", "fit_report.json", *report["qc"]])
    return 0


def calibrate_main(argv: list[str] | None) -> int:
    """Choose (again) a trained model's detection threshold on fresh samples of its own training simulation —
    for models trained before training did it, or to spend more samples on it. Writes the model with it."""
    from algorithms.decode_plex.detection import calibrate, density_samplers
    from algorithms.decode_plex.model import select_device, set_cpu_threads
    from algorithms.decode_plex.samples import SampleConfig, sample_batch
    from algorithms.decode_plex.train import load_model, save_atomic

    ap = argparse.ArgumentParser(prog="python -m algorithms.decode_plex calibrate", description=(
        "Choose a model's detection threshold on held-out samples of its training simulation. Params (JSON): "
        "samples (default 256), seed, device, threads. Writes model.pt, detection.json, detection_curve.png."))
    job_arguments(ap)
    ap.add_argument("--model", type=Path, help="model.pt written by train")
    ap.add_argument("--calibration", type=Path, help="the PSF calibration the model was trained with, if any")
    args = ap.parse_args(argv)
    p = resolve({"samples": 256, "seed": 0, "device": None, "threads": None}, read_params(args.params))
    set_cpu_threads(_threads(p["threads"]))
    model_path = args.model or next(iter(_slot(args.inputs, "model")), None)
    if model_path is None or not Path(model_path).is_file():
        raise BadInput(f"model file {model_path} not found")
    if not isinstance(p["samples"], int) or isinstance(p["samples"], bool) or not 16 <= p["samples"] <= 100_000:
        raise BadInput(f"samples must be a whole number from 16 to 100000, not {json.dumps(p['samples'])}")
    device = select_device(p["device"])
    try:
        net, blob = load_model(Path(model_path), device)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    calibration = None
    if blob.get("calibration_sha256") and args.calibration is None:
        raise BadInput("the model was trained with a PSF calibration: give it (--calibration)")
    if args.calibration is not None:
        from algorithms.io.calibration import read_calibration

        if sha256_file(args.calibration) != blob.get("calibration_sha256"):
            raise BadInput(f"the model was trained for another calibration than {args.calibration.name}")
        calibration = read_calibration(args.calibration)
    sim = SampleConfig.from_dict(blob["simulation"])
    progress(0.0, "calibrate", samples=p["samples"])
    blob["detection"] = calibrate(net, density_samplers(sim, sample_batch, calibration), device,
                                  samples=int(p["samples"]), seed=int(p["seed"]))
    save_atomic(blob, args.outputs / "model.pt")
    _write_detection(blob["detection"], args.outputs)
    progress(1.0, "done", prob_threshold=blob["detection"]["prob_threshold"],
             outputs=["model.pt", "detection.json", "detection_curve.png"])
    return 0


def info_main(argv: list[str] | None) -> int:
    from algorithms.decode_plex.train import load_model

    ap = argparse.ArgumentParser(prog="python -m algorithms.decode_plex info")
    ap.add_argument("model", type=Path)
    args = ap.parse_args(argv)
    try:
        net, blob = load_model(args.model)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    print(json.dumps({"parameters": net.n_parameters(), "model_config": blob["model_config"],
                      "code_version": blob.get("code_version"),
                      "calibration_sha256": blob.get("calibration_sha256"),
                      "train_config": blob["train_config"]}, indent=1, default=str))
    return 0


ENTRYPOINTS = {"train": train_main, "fit": fit_main, "calibrate": calibrate_main, "info": info_main}
