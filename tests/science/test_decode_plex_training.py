"""Training learns to detect isolated emitters; resume reproduces the uninterrupted run; the CLIs run through.

Samples come from the simulation engine (`algorithms.decode_plex.samples` → `algorithms.simulation`); the movie
the fit CLI reads is a simulated ADU movie of the same engine. Everything runs on CPU with one torch thread.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from algorithms.cli import run_main
from algorithms.decode_plex.cli import fit_main, train_main
from algorithms.decode_plex.model import DecodePlexNet
from algorithms.decode_plex.postprocess import extract
from algorithms.decode_plex.samples import SampleConfig, sample_batch
from algorithms.decode_plex.train import TrainConfig, TrainingDiverged, load_model, step_seed, train
from algorithms.evaluation import evaluate
from algorithms.io.formats import read_table, write_table
from algorithms.io.table import LocTable
from algorithms.simulation.render import simulate

REPO = Path(__file__).resolve().parents[2]
CAMERA = {"kind": "perfect", "baseline": 100.0, "e_per_adu": 0.5}  # ADU = photons · 2 + 100
TOY = SampleConfig(frame_size=(32, 32), density_per_um2=0.2, photons=(2000.0, 6000.0), bg=(20.0, 50.0),
                   camera=CAMERA)


def quiet(*args, **kwargs):
    pass


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained for 200 steps (~30 s on one busy core)."""
    out = tmp_path_factory.mktemp("model")
    cfg = TOY.model_config(features=8, depth=2)
    tc = TrainConfig(epochs=4, steps_per_epoch=50, batch_size=8, lr=3e-3, schedule="cosine", val_samples=16, seed=0,
                     warmup_steps=0)  # 200 steps only; the resume test runs with the default warm-up
    blob = train(cfg, tc, lambda b, s: sample_batch(TOY, b, s), out, report=quiet,
                 extra={"camera": CAMERA, "simulation": TOY.to_dict(), "calibration_sha256": "0" * 64})
    return out / "model.pt", blob


def test_training_chooses_the_detection_threshold_on_held_out_samples(trained):
    _, blob = trained
    detection = blob["detection"]
    thresholds = [p["threshold"] for p in detection["curve"]]
    assert thresholds == sorted(thresholds) and detection["prob_threshold"] in thresholds
    chosen = next(p for p in detection["curve"] if p["threshold"] == detection["prob_threshold"])
    assert chosen["jaccard"] == max(p["jaccard"] for p in detection["curve"])
    recall = [p["recall"] for p in detection["curve"]]
    assert recall == sorted(recall, reverse=True)  # a higher threshold never finds more
    assert detection["samples"] >= 64


def test_fit_takes_a_given_threshold_and_the_old_fixed_one_for_a_model_that_has_none(trained, movie, tmp_path):
    model_path, blob = trained
    old = tmp_path / "old.pt"
    torch.save({k: v for k, v in blob.items() if k != "detection"}, old)
    for name, model, params, want in (("old", old, {}, (0.5, "default")),
                                      ("given", model_path, {"prob_threshold": 0.8}, (0.8, "params"))):
        (tmp_path / f"{name}.json").write_text(json.dumps(params))
        fit = run_cli("-m", "algorithms.decode_plex", "fit", "--model", str(model), "--frames",
                      str(movie / "movie.tif"), "--params", str(tmp_path / f"{name}.json"), "--outputs",
                      str(tmp_path / name))
        assert fit.returncode == 0, fit.stderr
        report = json.loads((tmp_path / name / "fit_report.json").read_text())
        assert (report["prob_threshold"], report["prob_threshold_source"]) == want


def test_choosing_takes_the_highest_jaccard_index_and_of_equal_ones_the_higher_threshold():
    from algorithms.decode_plex.detection import choose, detection_curve

    truth = LocTable.from_arrays(frame=np.arange(100), x=np.full(100, 500.0), y=np.full(100, 500.0))
    real = LocTable.from_arrays(frame=np.arange(100), x=np.full(100, 503.0), y=np.full(100, 498.0),
                                prob=np.full(100, 0.9))
    # 30 dim false positives far from any emitter, with the probabilities a half-trained model gives them
    ghosts = LocTable.from_arrays(frame=np.arange(30), x=np.full(30, 2500.0), y=np.full(30, 2500.0),
                                  prob=np.linspace(0.51, 0.77, 30))
    pred = LocTable({k: np.concatenate([real[k], ghosts[k]]) for k in real.columns})
    curve = detection_curve(truth, pred, (0.3, 0.5, 0.8, 0.85, 0.95))
    assert [round(p["jaccard"], 3) for p in curve] == [round(100 / 130, 3), round(100 / 130, 3), 1.0, 1.0, 0.0]
    assert choose(curve) == 0.85


def brightest_pixel_baseline(frames: torch.Tensor, px_nm: float) -> LocTable:
    """A trivial detector: one localization per frame at the centre of its brightest pixel."""
    f = frames[:, 0, 0].reshape(len(frames), -1)
    idx = f.argmax(1).numpy()
    w = frames.shape[-1]
    return LocTable.from_arrays(frame=np.arange(len(frames)), x=(idx % w + 0.5) * px_nm, y=(idx // w + 0.5) * px_nm)


def test_trained_model_beats_trivial_baselines_on_jaccard(trained):
    path, blob = trained
    net, _ = load_model(path)
    test = sample_batch(TOY, 64, seed=987654)  # independent of the training and validation seeds
    with torch.no_grad():
        pred = extract(net(net.prepare(test.frames), test.aux), net.cfg, 0.5)
    ours = evaluate(test.truth, pred)
    baseline = evaluate(test.truth, brightest_pixel_baseline(test.frames, TOY.px_size_nm))
    untrained = DecodePlexNet(net.cfg).eval()
    with torch.no_grad():
        fresh = evaluate(test.truth, extract(untrained(untrained.prepare(test.frames), test.aux), net.cfg, 0.5))
    assert ours["jaccard"] >= 0.7, ours
    assert ours["jaccard"] > baseline["jaccard"] + 0.2 and ours["jaccard"] > fresh["jaccard"] + 0.5
    assert ours["rmse_lat"] < 80.0  # nm, pixel 100 nm; 200 steps only (the slow test asks for sub-pixel)
    assert blob["history"][-1]["train"]["total"] < blob["history"][0]["train"]["total"]


def test_model_file_holds_weights_config_calibration_and_code_version(trained):
    path, _ = trained
    _, blob = load_model(path)
    assert blob["model_config"]["features"] == 8 and blob["train_config"]["batch_size"] == 8
    assert blob["calibration_sha256"] == "0" * 64 and blob["code_version"]
    assert len(blob["history"]) == 4 and {"jaccard", "rmse_lat", "loss"} <= set(blob["history"][-1]["val"])


def test_resume_from_checkpoint_reaches_the_same_state(tmp_path):
    toy = SampleConfig(frame_size=(16, 16), density_per_um2=0.4)
    cfg = toy.model_config(features=8, depth=1)
    sampler = lambda b, s: sample_batch(toy, b, s)  # noqa: E731
    tc = TrainConfig(epochs=2, steps_per_epoch=4, batch_size=4, lr=1e-3, val_samples=4, schedule="plateau")
    whole = train(cfg, tc, sampler, tmp_path / "whole", report=quiet)
    half = TrainConfig(**{**tc.__dict__, "epochs": 1})
    train(cfg, half, sampler, tmp_path / "split", report=quiet)
    resumed = train(cfg, tc, sampler, tmp_path / "split", resume=True, report=quiet)
    for k, v in whole["weights"].items():
        torch.testing.assert_close(resumed["weights"][k], v, rtol=1e-5, atol=1e-6)
    assert [h["epoch"] for h in resumed["history"]] == [1, 2]


def test_divergence_aborts_with_a_clear_message(tmp_path):
    toy = SampleConfig(frame_size=(16, 16), density_per_um2=0.4)
    cfg = toy.model_config(features=8, depth=1)

    def poisoned(b, s):
        batch = sample_batch(toy, b, s)
        if s != 2**40:  # validation set stays clean, training batches carry NaN
            batch.frames[:] = float("nan")
        return batch

    tc = TrainConfig(epochs=1, steps_per_epoch=2, batch_size=2, val_samples=2)
    with pytest.raises(TrainingDiverged, match="diverged at epoch 0 step 0.*lower the learning rate"):
        train(cfg, tc, poisoned, tmp_path, report=quiet)


def test_a_blow_up_inside_the_first_epoch_aborts(tmp_path):
    """A dead network (e.g. every probability saturated at 1) must not train on silently for hours."""
    toy = SampleConfig(frame_size=(16, 16), density_per_um2=0.8)
    cfg = toy.model_config(features=8, depth=1)

    def blows_up(b, s):
        batch = sample_batch(toy, b, s)
        if s in spikes:  # absurd targets: the loss jumps by orders of magnitude
            batch.targets.photons *= 1e6
        return batch

    tc = TrainConfig(epochs=1, steps_per_epoch=8, batch_size=2, val_samples=2, divergence_patience=3)
    spikes = {step_seed(0, 3), step_seed(0, 5)}  # single spikes: training goes on
    train(cfg, tc, blows_up, tmp_path / "spikes", report=quiet)
    spikes = {step_seed(0, s) for s in range(3, 8)}  # from the fourth step on: the third in a row aborts
    with pytest.raises(TrainingDiverged, match="diverged at epoch 0 step 5"):
        train(cfg, tc, blows_up, tmp_path / "dead", report=quiet)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=300, env=env)


@pytest.fixture(scope="module")
def movie(tmp_path_factory):
    """30 frames of ADU simulated by the engine with the model's camera, and their truth (ThunderSTORM CSV)."""
    folder = tmp_path_factory.mktemp("movie")
    sim = dataclasses.replace(TOY.simulation_config(4242), n_frames=30)
    res = simulate(sim)
    tifffile.imwrite(folder / "movie.tif", np.rint(res.adu[:, 0]).astype(np.uint16))
    truth = res.truth.select(res.truth["photons"] >= TOY.min_target_photons)  # what training calls a target
    write_table(truth, folder / "truth.csv")
    return folder


def test_fit_cli_finds_emitters_and_compare_cli_scores_them(trained, movie, tmp_path):
    model_path, _ = trained
    fit = run_cli("-m", "algorithms.decode_plex", "fit", "--model", str(model_path),
                  "--frames", str(movie / "movie.tif"), "--outputs", str(tmp_path / "fit"))
    assert fit.returncode == 0, fit.stderr
    lines = [json.loads(line) for line in fit.stdout.splitlines()]
    assert lines[-1]["stage"] == "done" and lines[-1]["localizations"] > 0
    for name in ("locs.h5", "locs.csv", "fit_report.json", "qc_subpixel.png", "qc_preview.png"):
        assert (tmp_path / "fit" / name).is_file(), name
    h5, csv = read_table(tmp_path / "fit" / "locs.h5"), read_table(tmp_path / "fit" / "locs.csv")
    assert len(h5) == len(csv) and np.allclose(h5["x"], csv["x"], rtol=1e-5)
    report = json.loads((tmp_path / "fit" / "fit_report.json").read_text())
    assert report["debias"] == "auto" and "bias_test" in report and report["frames"] == 30
    # The detection threshold chosen at the end of training is the fit's default, and says so.
    chosen = trained[1]["detection"]["prob_threshold"]
    assert report["prob_threshold"] == chosen and report["prob_threshold_source"] == "model"
    assert len(h5) == report["localizations"]
    assert (h5["prob"] >= chosen).all()
    cmp = run_cli("-m", "algorithms.evaluation", "compare", "--truth", str(movie / "truth.csv"),
                  "--pred", str(tmp_path / "fit" / "locs.h5"), "--outputs", str(tmp_path / "cmp"))
    assert cmp.returncode == 0, cmp.stderr
    metrics = json.loads((tmp_path / "cmp" / "metrics.json").read_text())
    assert metrics["jaccard"] >= 0.6, metrics  # ADU → photons with the model's camera, then the same net


@pytest.mark.parametrize("case", ["other_calibration", "corrupt_tiff", "zero_frames", "frames_too_small", "not_a_model"])
def test_bad_fit_inputs_exit_2_with_one_line(trained, movie, tmp_path, case, capsys):
    model_path, _ = trained
    frames = movie / "movie.tif"
    extra: list[str] = []
    model = str(model_path)
    if case == "other_calibration":
        (tmp_path / "cal.mat").write_bytes(b"another calibration")
        extra = ["--calibration", str(tmp_path / "cal.mat")]
    elif case == "corrupt_tiff":
        frames = tmp_path / "bad.tif"
        frames.write_bytes(b"II*\x00" + b"\x00" * 20)
    elif case == "zero_frames":
        frames = tmp_path / "empty.tif"
        with pytest.warns(UserWarning):  # tifffile warns about writing an empty stack; that is the point
            tifffile.imwrite(frames, np.zeros((0, 32, 32), np.uint16))
    elif case == "frames_too_small":
        frames = tmp_path / "tiny.tif"
        tifffile.imwrite(frames, np.zeros((2, 3, 3), np.uint16))
    elif case == "not_a_model":
        (tmp_path / "m.pt").write_bytes(b"not a model")
        model = str(tmp_path / "m.pt")
    code = run_main(fit_main, ["--model", model, "--frames", str(frames), "--outputs", str(tmp_path / "out"), *extra])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out" / "locs.h5").exists()


def test_train_cli_rejects_bad_params(tmp_path, capsys):
    (tmp_path / "p.json").write_text(json.dumps({"photons": [5000, 100]}))
    assert run_main(train_main, ["--params", str(tmp_path / "p.json"), "--outputs", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "photons" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "q.json").write_text(json.dumps({"colour": 1}))
    assert run_main(train_main, ["--params", str(tmp_path / "q.json"), "--outputs", str(tmp_path / "o")]) == 2
    assert "unknown parameter" in capsys.readouterr().err


@pytest.mark.slow
def test_longer_training_localizes_below_a_third_of_a_pixel(tmp_path):
    """~1000 steps (several minutes on one core): sub-pixel precision, not just detection."""
    toy = SampleConfig(frame_size=(32, 32), density_per_um2=0.15, photons=(2000.0, 8000.0), bg=(30.0, 70.0))
    cfg = toy.model_config(features=16, depth=2)
    tc = TrainConfig(epochs=10, steps_per_epoch=100, batch_size=16, lr=2e-3, schedule="cosine", val_samples=32)
    train(cfg, tc, lambda b, s: sample_batch(toy, b, s), tmp_path, report=quiet)
    net, _ = load_model(tmp_path / "model.pt")
    test = sample_batch(toy, 200, seed=555)
    with torch.no_grad():
        m = evaluate(test.truth, extract(net(net.prepare(test.frames), test.aux), cfg, 0.5))
    # uniform guessing inside the right pixel gives sqrt(2/12)·100 nm ≈ 41 nm
    assert m["jaccard"] > 0.85 and m["rmse_lat"] < 33.0, m
