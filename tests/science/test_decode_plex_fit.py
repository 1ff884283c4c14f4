"""Fitting plumbing: multi-file movies read in chunks, ADU → photons, channel split, clamped windows; and a
two-colour model trained in seconds taken end to end through the fit CLI (split, colour assignment, QC)."""

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

from algorithms.decode_plex.fit import ChannelSplit, Movie, predict_movie, windows
from algorithms.decode_plex.model import DecodePlexNet
from algorithms.decode_plex.samples import SampleConfig, aux_maps, sample_batch
from algorithms.decode_plex.train import TrainConfig, train
from algorithms.evaluation import evaluate
from algorithms.io.formats import read_table, write_table
from algorithms.io.table import LocTable
from algorithms.simulation.camera import Camera, camera_from_params
from algorithms.simulation.render import simulate

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def stack(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(100, 400, (23, 12, 16)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", data[:10])
    tifffile.imwrite(tmp_path / "b.tif", data[10:])
    return data, [tmp_path / "a.tif", tmp_path / "b.tif"]


def test_several_files_read_as_one_movie_in_any_chunks(stack):
    data, paths = stack
    movie = Movie(paths)
    assert movie.n_frames == 23 and movie.frame_shape == (12, 16)
    parts = [movie.read(s, min(23, s + 7)) for s in range(0, 23, 7)]
    np.testing.assert_array_equal(np.concatenate(parts), data.astype(np.float32))
    np.testing.assert_array_equal(movie.read(8, 12), data[8:12])


def test_mismatched_files_are_refused(tmp_path, stack):
    _, paths = stack
    tifffile.imwrite(tmp_path / "c.tif", np.zeros((2, 5, 5), np.uint16))
    with pytest.raises(ValueError, match="frame size differs between files"):
        Movie([*paths, tmp_path / "c.tif"])


def test_the_models_camera_converts_adu_to_photons():
    cam = camera_from_params({"kind": "emccd", "baseline": 100.0, "e_per_adu": 0.5, "em_gain": 10.0, "qe": 0.9})
    assert cam.inverse(np.array([100.0, 280.0])) == pytest.approx([0.0, 180 * 0.5 / 9.0])


def test_two_halves_split_with_mirror_and_shift():
    frames = np.arange(2 * 4 * 6, dtype=np.float32).reshape(2, 4, 6)
    out = ChannelSplit(2, mirror_second=True, shift_px=(1, 0)).split(frames)
    assert out.shape == (2, 2, 4, 3)
    np.testing.assert_array_equal(out[:, 0], frames[..., :3])
    np.testing.assert_array_equal(out[:, 1], np.roll(frames[..., 3:][..., ::-1], 1, axis=-1))
    with pytest.raises(ValueError, match="even width"):
        ChannelSplit(2).split(frames[..., :5])


def test_windows_clamp_at_the_ends_and_use_neighbours_across_chunks():
    f = np.arange(4, dtype=np.float32).reshape(4, 1, 1, 1)
    w = windows(f, 3, None, None)
    assert w[:, :, 0, 0, 0].tolist() == [[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 3]]
    w = windows(f, 3, np.full((1, 1, 1, 1), -1.0), np.full((1, 1, 1, 1), 9.0))
    assert w[0, :, 0, 0, 0].tolist() == [-1, 0, 1] and w[-1, :, 0, 0, 0].tolist() == [2, 3, 9]


def test_chunked_prediction_equals_one_pass_for_a_window_3_two_camera_model(tmp_path):
    toy = SampleConfig(mode="multicolor", channels=2, window=3, frame_size=(12, 16), shifts_px=[(0, 0), (0.5, 0.0)])
    torch.manual_seed(0)
    net = DecodePlexNet(toy.model_config(features=4, depth=1)).eval()
    with torch.no_grad():
        net.head_prob.net[-1].bias.fill_(0.0)  # an untrained net that detects plenty
    rng = np.random.default_rng(1)
    a = rng.poisson(50, (9, 12, 16)).astype(np.uint16)
    b = rng.poisson(50, (9, 12, 16)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", a)
    tifffile.imwrite(tmp_path / "b.tif", b)
    aux = aux_maps(toy.geometry(), (12, 16))
    kw = dict(camera=Camera(), split=ChannelSplit(2), aux=aux, second=Movie([tmp_path / "b.tif"]), batch_size=2)
    whole = predict_movie(net, Movie([tmp_path / "a.tif"]), chunk=100, **kw)
    pieces = predict_movie(net, Movie([tmp_path / "a.tif"]), chunk=4, **kw)
    assert len(whole) > 0 and len(whole) == len(pieces)
    for col in ("frame", "x", "y", "photons_0", "photons_1"):
        np.testing.assert_allclose(pieces[col], whole[col], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize(("schema", "defaults"), [("decode_plex_train", "TRAIN_DEFAULTS"), ("decode_plex_fit", "FIT_DEFAULTS")])
def test_param_schemas_match_cli_defaults(schema, defaults):
    import algorithms
    from algorithms.decode_plex import cli

    spec = json.loads((Path(algorithms.__file__).parent / "schemas" / f"{schema}.json").read_text())
    want = getattr(cli, defaults)
    assert set(spec["properties"]) == set(want)
    for name, prop in spec["properties"].items():
        assert prop["default"] == want[name], name


# --- End to end: a two-colour model through the fit CLI -------------------------------------------------------

MC_CAMERA = {"kind": "perfect", "baseline": 100.0, "e_per_adu": 0.5}  # ADU = photons · 2 + 100
MC_RATIOS = [0.25, 4.0]  # channel-1 / channel-0 photons of dye 0 and dye 1
MC_TOY = SampleConfig(mode="multicolor", channels=2, three_d=True, frame_size=(32, 32), z_range_nm=(-300.0, 300.0),
                      density_per_um2=0.5, on_time_frames=1e6, photons=(2000.0, 6000.0), bg=(20.0, 50.0),
                      camera=MC_CAMERA, shifts_px=[(0.0, 0.0), (1.0, 0.5)], dye_ratios=MC_RATIOS)


@pytest.fixture(scope="module")
def multicolor_model(tmp_path_factory):
    """A tiny 3D two-colour model, 400 ratiometric steps (~35 s on one core): enough to tell the two dyes apart."""
    out = tmp_path_factory.mktemp("mc_model")
    tc = TrainConfig(epochs=4, steps_per_epoch=100, batch_size=8, lr=3e-3, schedule="cosine", val_samples=16,
                     seed=0, warmup_steps=0)
    train(MC_TOY.model_config(features=8, depth=2), tc, lambda b, s: sample_batch(MC_TOY, b, s), out,
          report=lambda *a, **k: None,
          extra={"camera": MC_CAMERA, "simulation": MC_TOY.to_dict(), "calibration_sha256": "0" * 64})
    return out / "model.pt"


@pytest.fixture(scope="module")
def two_channel_movie(tmp_path_factory):
    """20 independent frames (32 × 40 px per channel, ADU) of the two dyes, stored twice: as the two halves of
    one camera (channel 1 mirrored, as behind a dichroic) and as two cameras; truth with ``code`` = dye."""
    folder = tmp_path_factory.mktemp("mc_movie")
    adu, truths = [], []
    for f in range(20):
        res = simulate(dataclasses.replace(MC_TOY.simulation_config(5000 + f), frame_shape=(32, 40)))
        adu.append(np.rint(res.adu[0]).astype(np.uint16))
        t = res.truth
        truths.append({"frame": np.full(len(t), f), "x": t["x"], "y": t["y"], "z": t["z"], "photons": t["photons"],
                       "code": t["dye"]})
    a = np.stack([c[0] for c in adu])
    b = np.stack([c[1] for c in adu])
    tifffile.imwrite(folder / "halves.tif", np.concatenate([a, b[..., ::-1]], axis=-1))
    tifffile.imwrite(folder / "cam_a.tif", a)
    tifffile.imwrite(folder / "cam_b.tif", b)
    truth = LocTable.from_arrays({"px_size_nm": MC_TOY.px_size_nm},
                                 **{k: np.concatenate([t[k] for t in truths]) for k in truths[0]})
    write_table(truth, folder / "truth.csv")
    assert set(np.unique(truth["code"])) == {0, 1}
    return folder, truth


def _fit(model, outputs, frames, frames_b=(), params=None):
    args = ["-m", "algorithms.decode_plex", "fit", "--model", str(model), "--frames", *map(str, frames),
            "--outputs", str(outputs)]
    if frames_b:
        args += ["--frames-b", *map(str, frames_b)]
    if params is not None:
        (outputs.parent / f"{outputs.name}_params.json").write_text(json.dumps(params))
        args += ["--params", str(outputs.parent / f"{outputs.name}_params.json")]
    env = {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads((outputs / "fit_report.json").read_text())


def test_fit_cli_assigns_colours_from_one_camera_split_in_halves_or_two_cameras(
    multicolor_model, two_channel_movie, tmp_path
):
    """Colour accuracy against the truth (measured 0.98, no rejections, JI 0.74); a wrong split (e.g. the
    mirrored half left mirrored) drops JI to 0.3 and breaks the equality of the two runs."""
    movie, truth = two_channel_movie
    # one camera, channel 1 in the mirrored right half; dye ratios given, so code d is dye d
    halves = _fit(multicolor_model, tmp_path / "halves", [movie / "halves.tif"],
                  params={"dye_ratios": MC_RATIOS, "mirror_second": True})
    # two cameras; dye ratios found as photon-ratio histogram peaks (reported highest ratio first)
    cams = _fit(multicolor_model, tmp_path / "cams", [movie / "cam_a.tif"], [movie / "cam_b.tif"])

    for out, report in ((tmp_path / "halves", halves), (tmp_path / "cams", cams)):
        assert report["frames"] == 20 and report["localizations"] > 0 and report["debias"] == "auto"
        assert report["debiased"] is report["bias_test"]["biased"]  # de-biased only where a bias shows
        assert {"qc_photon_ratio.png", "qc_sigma_vs_z.png", "qc_subpixel.png", "qc_preview.png"} <= set(report["qc"])
        for name in report["qc"]:
            png = (out / name).read_bytes()
            assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000, name
        assert 0.0 <= report["rejection_rate"] <= 0.1, report
    assert halves["dye_ratios"] == MC_RATIOS
    found = cams["dye_ratios"]
    assert found[0] == pytest.approx(MC_RATIOS[1], rel=0.3) and found[1] == pytest.approx(MC_RATIOS[0], rel=0.3)

    a, b = read_table(tmp_path / "halves" / "locs.h5"), read_table(tmp_path / "cams" / "locs.h5")
    # the same photons reach the network either way: identical localizations and per-channel photons
    assert len(a) == len(b)
    for col in ("frame", "x", "y", "z", "photons_0", "photons_1"):
        np.testing.assert_allclose(a[col], b[col], rtol=1e-4, atol=1e-2, err_msg=col)
    for t in (a, b):
        assert set(np.unique(t["code"])) <= {-1, 0, 1}
        assert np.array_equal(t["code"] == -1, t["color_posterior"] < 0.9)
    # found ratios are in the other order: code 0 ↔ ratio 4 ↔ dye 1
    b_as_dyes = b.with_columns(code=np.where(b["code"] >= 0, 1 - b["code"], -1))

    for pred in (a, b_as_dyes):
        m = evaluate(truth, pred)
        assert m["jaccard"] >= 0.6, m  # 400 steps: bright emitters found, dim/overlapping ones missed
        assert m["color_accuracy"] >= 0.9 and m["rejection_rate"] <= 0.1, m
        assert m["rmse_ax"] < 250.0, m  # nm, z range ±300 nm: z is learned, if coarsely


def test_a_file_that_holds_its_channels_fits_as_two_cameras_do(multicolor_model, two_channel_movie, tmp_path):
    """The simulator writes its channels interleaved in one TIFF (axes TCYX): read as frames of two channels,
    not as a movie twice as long (issue 20), and refused where the model or the order does not fit."""
    from algorithms.decode_plex.bundled import GENERIC_2D_EMCCD

    movie, _ = two_channel_movie
    a, b = tifffile.imread(movie / "cam_a.tif"), tifffile.imread(movie / "cam_b.tif")
    tifffile.imwrite(tmp_path / "tcyx.tif", np.stack([a, b], axis=1), metadata={"axes": "TCYX"})
    one = _fit(multicolor_model, tmp_path / "one", [tmp_path / "tcyx.tif"])
    cams = _fit(multicolor_model, tmp_path / "cams", [movie / "cam_a.tif"], [movie / "cam_b.tif"])
    assert one["frames"] == cams["frames"] == 20
    x, y = read_table(tmp_path / "one" / "locs.h5"), read_table(tmp_path / "cams" / "locs.h5")
    assert len(x) == len(y) > 0
    for col in ("frame", "x", "y", "photons_0", "photons_1", "code"):
        np.testing.assert_allclose(x[col], y[col], rtol=1e-5, atol=1e-3, err_msg=col)

    tifffile.imwrite(tmp_path / "ctyx.tif", np.stack([a, b], axis=0), metadata={"axes": "CTYX"})
    for model, frames, extra, words in (
            (GENERIC_2D_EMCCD, tmp_path / "tcyx.tif", [], "holds 2 channels a frame; the model takes 1"),
            (multicolor_model, tmp_path / "tcyx.tif", ["--frames-b", str(movie / "cam_b.tif")], "not a second camera"),
            (multicolor_model, tmp_path / "ctyx.tif", [], "stored one after the other (axes CTYX)")):
        done = subprocess.run([sys.executable, "-m", "algorithms.decode_plex", "fit", "--model", str(model),
                               "--frames", str(frames), *extra, "--outputs", str(tmp_path / "refused")],
                              cwd=REPO, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 2 and words in done.stderr and done.stderr.count("\n") == 1, done.stderr
