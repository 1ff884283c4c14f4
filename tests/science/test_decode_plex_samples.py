"""Training samples come from the simulation engine: targets sit where the photons are, in every mode, and the
train CLI simulates with a calibration's spline PSF (recorded and checked again by fit)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
import torch

from algorithms.cli import run_main
from algorithms.decode_plex.cli import fit_main, train_main
from algorithms.decode_plex.samples import SampleConfig, sample_batch
from algorithms.decode_plex.train import load_model
from algorithms.io.calibration import read_calibration, write_smap_3dcal


def centroids(frame: np.ndarray, xy: np.ndarray, half: int = 4) -> np.ndarray:
    """Background-free photon centroid (x, y px, pixel j spanning [j, j+1)) in a window around each point."""
    out = []
    for x, y in xy:
        c, r = int(np.floor(x)), int(np.floor(y))
        win = frame[r - half : r + half + 1, c - half : c + half + 1]
        rr, cc = np.mgrid[r - half : r + half + 1, c - half : c + half + 1] + 0.5
        out.append([(win * cc).sum() / win.sum(), (win * rr).sum() / win.sum()])
    return np.asarray(out)


def isolated(xy: np.ndarray, size: tuple[int, int], margin: float = 6.0) -> np.ndarray:
    h, w = size
    if len(xy) == 0:
        return np.zeros(0, bool)
    inside = (xy[:, 0] > margin) & (xy[:, 0] < w - margin) & (xy[:, 1] > margin) & (xy[:, 1] < h - margin)
    d = np.hypot(xy[:, None, 0] - xy[None, :, 0], xy[:, None, 1] - xy[None, :, 1]) + np.eye(len(xy)) * 1e9
    return inside & (d.min(1) > 2 * margin)


def test_targets_sit_at_the_centroid_of_their_simulated_photons():
    cfg = SampleConfig(frame_size=(48, 48), density_per_um2=0.1, on_time_frames=1e6, photons=(20000.0, 20000.0),
                       bg=(0.0, 0.0))
    batch = sample_batch(cfg, 8, seed=3)
    checked = 0
    for b in range(8):
        n = int(batch.targets.mask[b].sum())
        xy = batch.targets.xy_px[b, :n].numpy().astype(float)
        ok = isolated(xy, cfg.frame_size)
        if ok.any():
            got = centroids(batch.frames[b, 0, 0].numpy(), xy[ok])
            np.testing.assert_allclose(got, xy[ok], atol=0.05)  # σ/√N ≈ 0.01 px; a half-pixel slip fails
            checked += int(ok.sum())
    assert checked >= 5
    assert torch.allclose(batch.targets.photons[batch.targets.mask], torch.tensor(20000.0))
    assert batch.targets.bg.shape == (8, 1, 48, 48) and float(batch.targets.bg.abs().max()) == 0.0


def test_biplane_shift_appears_in_channel_1_and_in_the_indicator_maps():
    cfg = SampleConfig(mode="biplane", channels=2, window=3, three_d=True, frame_size=(48, 48), density_per_um2=0.1,
                       on_time_frames=1e6, photons=(20000.0, 20000.0), bg=(0.0, 0.0), z_range_nm=(0.0, 0.0),
                       shifts_px=[(0.0, 0.0), (2.0, -1.0)], plane_ratios=[0.6, 0.4])
    batch = sample_batch(cfg, 6, seed=4)
    assert batch.frames.shape == (6, 3, 2, 48, 48) and batch.aux.shape == (6, 2, 48, 48)
    assert torch.allclose(batch.aux[:, 0], torch.tensor(0.2)) and torch.allclose(batch.aux[:, 1], torch.tensor(-0.1))
    checked = 0
    for b in range(6):
        n = int(batch.targets.mask[b].sum())
        xy = batch.targets.xy_px[b, :n].numpy().astype(float)
        ok = isolated(xy, cfg.frame_size, margin=7.0)
        if ok.any():
            c1 = centroids(batch.frames[b, 1, 1].numpy(), xy[ok] + [2.0, -1.0])
            np.testing.assert_allclose(c1, xy[ok] + [2.0, -1.0], atol=0.06)
            checked += int(ok.sum())
    assert checked >= 3
    # one linked photon target: the sum over the planes
    assert torch.allclose(batch.targets.photons[batch.targets.mask], torch.tensor(20000.0))
    t = batch.truth
    np.testing.assert_allclose(t["photons_0"] / t["photons"], 0.6, rtol=1e-6)


def test_multicolor_targets_carry_the_dye_ratio_per_channel():
    cfg = SampleConfig(mode="multicolor", channels=2, frame_size=(32, 32), density_per_um2=0.5,
                       dye_ratios=[0.21, 0.02])
    batch = sample_batch(cfg, 4, seed=5)
    m = batch.targets.mask
    ph, code = batch.targets.photons[m].double(), batch.targets.code[m]
    assert ph.shape[1] == 2 and len(set(code.tolist())) == 2
    want = torch.tensor([0.21, 0.02], dtype=torch.float64)[code]
    torch.testing.assert_close(ph[:, 1] / ph[:, 0], want, rtol=1e-5, atol=0)


def test_multicolor_without_dye_ratios_draws_each_channel_s_photons_on_its_own():
    """Independent photons per channel are independent: a ratio of 1 for every emitter taught the network
    nothing about colour (issue 20)."""
    cfg = SampleConfig(mode="multicolor", channels=2, frame_size=(32, 32), density_per_um2=0.5, dye_ratios=[],
                       photons=(1000.0, 5000.0))
    batch = sample_batch(cfg, 8, seed=2)
    ph = batch.targets.photons[batch.targets.mask].double().numpy()
    assert len(ph) > 30
    ratio = ph[:, 1] / ph[:, 0]
    assert np.std(np.log(ratio)) > 0.3, ratio  # uniform 1000–5000 per channel: log-ratio s.d. ≈ 0.6
    assert np.corrcoef(ph[:, 0], ph[:, 1])[0, 1] < 0.9  # the shared on-time of a frame correlates them some (1.0 before)


def test_same_seed_same_batch_other_seed_other_batch():
    cfg = SampleConfig(frame_size=(16, 16))
    a, b, c = sample_batch(cfg, 3, 7), sample_batch(cfg, 3, 7), sample_batch(cfg, 3, 8)
    assert torch.equal(a.frames, b.frames) and not torch.equal(a.frames, c.frames)


@pytest.fixture
def calibration(tmp_path, spline):
    path = tmp_path / "beads_3dcal.mat"
    write_smap_3dcal(path, [spline])
    return path


def test_samples_with_a_calibration_use_its_spline_psf(calibration):
    cal = read_calibration(calibration)
    cfg = SampleConfig(frame_size=(32, 32), three_d=True, z_range_nm=(-400.0, 400.0), bg=(0.0, 0.0),
                       photons=(20000.0, 20000.0), on_time_frames=1e6, density_per_um2=0.3)
    with_spline = sample_batch(cfg, 2, 9, cal)
    gaussian = sample_batch(cfg, 2, 9)
    assert torch.equal(with_spline.targets.xy_px, gaussian.targets.xy_px)  # same emitters ...
    assert not torch.allclose(with_spline.frames, gaussian.frames)  # ... another PSF


def test_train_cli_with_a_calibration_records_it_and_fit_accepts_only_it(calibration, tmp_path, capsys):
    params = {"three_d": True, "z_range_nm": [-400.0, 400.0], "frame_size": [16, 16], "features": 4, "depth": 1,
              "epochs": 1, "steps_per_epoch": 2, "batch_size": 2, "val_samples": 2, "density_per_um2": 1.0,
              "camera": {"preset": "scmos-typical"}}
    (tmp_path / "p.json").write_text(json.dumps(params))
    code = run_main(train_main, ["--params", str(tmp_path / "p.json"), "--calibration", str(calibration),
                                 "--outputs", str(tmp_path / "model")])
    assert code == 0, capsys.readouterr().err
    _, blob = load_model(tmp_path / "model" / "model.pt")
    assert blob["simulator"] == "algorithms.simulation" and blob["camera"] == {"preset": "scmos-typical"}
    assert len(blob["calibration_sha256"]) == 64 and blob["simulation"]["three_d"] is True
    tifffile.imwrite(tmp_path / "movie.tif", np.full((4, 16, 16), 130, np.uint16), photometric="minisblack")
    capsys.readouterr()
    fit = ["--model", str(tmp_path / "model" / "model.pt"), "--frames", str(tmp_path / "movie.tif")]
    assert run_main(fit_main, [*fit, "--calibration", str(calibration), "--outputs", str(tmp_path / "fit")]) == 0
    other = tmp_path / "other_3dcal.mat"
    other.write_bytes(calibration.read_bytes() + b"\0")
    assert run_main(fit_main, [*fit, "--calibration", str(other), "--outputs", str(tmp_path / "fit2")]) == 2
    assert "another calibration" in capsys.readouterr().err


@pytest.mark.parametrize(("content", "params", "message"), [
    (b"not a calibration", {}, "beads_3dcal.mat"),
    (None, {"three_d": True, "z_range_nm": [-900.0, 900.0]}, "calibration's z range"),
    (None, {"camera": {"kind": "emccd", "em_gain": 0.5}}, "em_gain"),
])
def test_train_cli_bad_calibration_or_settings_exit_2(calibration, tmp_path, capsys, content, params, message):
    if content is not None:
        calibration.write_bytes(content)
    (tmp_path / "p.json").write_text(json.dumps(params))
    code = run_main(train_main, ["--params", str(tmp_path / "p.json"), "--calibration", str(calibration),
                                 "--outputs", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o" / "model.pt").exists()
