"""Fitting plumbing: multi-file movies read in chunks, ADU → photons, channel split, clamped windows."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch

from algorithms.decode_plex.fit import ChannelSplit, Movie, predict_movie, windows
from algorithms.decode_plex.model import DecodePlexNet
from algorithms.decode_plex.samples import SampleConfig, aux_maps
from algorithms.simulation.camera import Camera, camera_from_params


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
    import json
    from pathlib import Path

    import algorithms
    from algorithms.decode_plex import cli

    spec = json.loads((Path(algorithms.__file__).parent / "schemas" / f"{schema}.json").read_text())
    want = getattr(cli, defaults)
    assert set(spec["properties"]) == set(want)
    for name, prop in spec["properties"].items():
        assert prop["default"] == want[name], name
