"""Camera models: forward/inverse unbiased, EMCCD excess noise, sCMOS maps, presets and impossible settings."""

from __future__ import annotations

import numpy as np
import pytest

from algorithms.simulation.camera import PRESETS, Camera, camera_from_params


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_forward_then_inverse_is_unbiased_within_1pct(preset):
    cam = camera_from_params(preset)
    rng = np.random.default_rng(11)
    lam = np.full((200, 64, 64), 40.0, dtype=np.float32)
    back = cam.inverse(cam.forward(lam, rng))
    assert abs(back.mean() - 40.0) / 40.0 < 0.01


def test_emccd_variance_is_twice_the_mean_at_high_gain():
    cam = Camera(kind="emccd", qe=1.0, em_gain=500.0, read_noise_e=0.0, e_per_adu=1.0)
    rng = np.random.default_rng(12)
    lam = np.full((400, 64, 64), 30.0, dtype=np.float32)
    ph = cam.inverse(cam.forward(lam, rng))
    assert ph.var() / ph.mean() == pytest.approx(2.0, rel=0.03)


def test_perfect_camera_is_poisson():
    rng = np.random.default_rng(13)
    out = Camera().forward(np.full((200, 64, 64), 25.0, dtype=np.float32), rng)
    assert out.var() / out.mean() == pytest.approx(1.0, rel=0.02)
    assert np.all(out == np.round(out))


def test_scmos_maps_are_applied_per_pixel():
    rng = np.random.default_rng(14)
    h, w = 8, 8
    gain = np.linspace(0.3, 3.0, h * w).reshape(h, w)
    offset = np.linspace(90, 120, h * w).reshape(h, w)[::-1]
    rn = np.linspace(0.5, 5.0, h * w).reshape(h, w)
    cam = Camera(kind="scmos", qe=1.0, read_noise_e=rn, e_per_adu=gain, baseline=offset, em_gain=None)
    lam = np.full((20000, h, w), 10.0, dtype=np.float32)
    adu = cam.forward(lam, rng)
    assert np.allclose(adu.mean(0), 10.0 / gain + offset, rtol=0.01)
    assert np.allclose(adu.var(0), (10.0 + rn**2) / gain**2, rtol=0.06)
    assert np.allclose(cam.inverse(adu).mean(0), 10.0, rtol=0.02)


@pytest.mark.parametrize("gain", [0, 1, 300])
def test_em_gain_on_scmos_is_an_error_that_says_use_null(gain):
    with pytest.raises(ValueError, match="use em_gain: null"):
        Camera(kind="scmos", em_gain=gain)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"kind": "emccd", "em_gain": 1}, "em_gain must be a number > 1"),
        ({"kind": "emccd", "em_gain": None}, "em_gain must be a number > 1"),
        ({"kind": "scmos", "qe": 1.3}, "qe"),
        ({"kind": "scmos", "e_per_adu": 0}, "e_per_adu"),
        ({"kind": "emccd", "em_gain": 100, "read_noise_e": np.ones((4, 4))}, "sCMOS cameras only"),
        ({"kind": "cmos"}, "kind"),
    ],
)
def test_impossible_settings_are_rejected_with_a_clear_message(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Camera(**kwargs)


def test_map_of_wrong_shape_is_rejected_on_use():
    cam = Camera(kind="scmos", baseline=np.zeros((4, 4)))
    with pytest.raises(ValueError, match="does not match frames"):
        cam.forward(np.ones((2, 8, 8), dtype=np.float32), np.random.default_rng(0))


def test_negative_photons_are_rejected():
    with pytest.raises(ValueError, match=">= 0"):
        Camera().forward(np.array([[-1.0]]), np.random.default_rng(0))


def test_unknown_preset_and_setting_are_named():
    with pytest.raises(ValueError, match="unknown camera preset 'foo'"):
        camera_from_params("foo")
    with pytest.raises(ValueError, match="unknown camera setting"):
        camera_from_params({"preset": "scmos-typical", "gian": 2})
