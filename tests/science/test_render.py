"""Frame rendering: the vectorised CPU twin against an independent per-emitter loop, photon bookkeeping
of the whole pipeline, and the CUDA kernels against the twin (GPU only)."""

from __future__ import annotations

import numpy as np
import pytest

from algorithms.simulation.psf import GaussianPSF
from algorithms.simulation.render import SimulationConfig, render_psf, simulate
from compute import spline as sk


def _emitters(n: int, t: int, h: int, w: int, seed: int, z_range: tuple[float, float]):
    rng = np.random.default_rng(seed)
    frame = np.sort(rng.integers(0, t, n))
    # some emitters partly or fully outside the frame to exercise clipping
    y, x = rng.uniform(-5, h + 5, n), rng.uniform(-5, w + 5, n)
    z = rng.uniform(*z_range, n)
    photons = rng.uniform(500, 5000, n)
    return frame, y, x, z, photons


def test_cpu_twin_matches_per_emitter_loop(spline):
    t, h, w = 20, 40, 50
    frame, y, x, z, ph = _emitters(300, t, h, w, 51, (-550, 550))
    zs = spline.z_sp(z)
    twin = sk.render_frames_cpu(spline.coeff, spline.ref[:2], frame, y, x, zs, ph, (t, h, w))
    loop = sk.render_frames_loop(spline.coeff, spline.ref[:2], frame, y, x, zs, ph, (t, h, w))
    assert np.abs(twin - loop).max() <= 1e-5 * np.abs(loop).max()


def test_rendered_photons_inside_the_frame_add_up(spline):
    t, h, w = 5, 64, 64
    rng = np.random.default_rng(52)
    frame, y, x = rng.integers(0, t, 50), rng.uniform(16, 48, 50), rng.uniform(16, 48, 50)
    out = render_psf(spline, frame, x, y, np.zeros(50), np.full(50, 1000.0), (t, h, w))
    assert out.sum() == pytest.approx(50 * 1000.0, rel=2e-3)
    g = render_psf(GaussianPSF(1.2, roi_px=15), frame, x, y, np.zeros(50), np.full(50, 1000.0), (t, h, w))
    assert g.sum() == pytest.approx(50 * 1000.0, rel=1e-3)


def test_simulation_frames_hold_truth_photons_plus_background(spline):
    from algorithms.io.calibration import Calibration

    cfg = SimulationConfig.from_dict(
        {
            "n_frames": 100,
            "frame_shape": [64, 64],
            "emitters_per_frame": 1,
            "z_range_nm": [-250, 250],
            "background": {"value": 20.0},
            "camera": "scmos-typical",
            "n_channels": 2,
            "photon_model": "biplane",
            "plane_ratios": [1.0, 0.7],
            "transforms": [np.eye(3).tolist(), [[1, 0, 1.5], [0, 1, -2.0], [0, 0, 1]]],
            "seed": 3,
            "backend": "cpu",
        }
    )
    res = simulate(cfg, Calibration([spline]))
    tr = res.truth
    assert res.photons.shape == (100, 2, 64, 64) and res.adu.shape == (100, 2, 64, 64)
    assert np.allclose(tr["photons_c1"], 0.7 * tr["photons_c0"])
    inner = (tr["x"] > 1200) & (tr["x"] < 5200) & (tr["y"] > 1200) & (tr["y"] < 5200)
    # emitters near focus and away from the edges deposit their photons in the frame (within 1 %)
    signal = res.photons - res.background
    f_ok = np.setdiff1d(np.arange(cfg.n_frames), np.unique(tr["frame"][~inner]))
    assert len(f_ok) >= 10 and np.isin(tr["frame"], f_ok).sum() >= 10
    m = np.isin(tr["frame"], f_ok)
    assert signal[f_ok, 0].sum() == pytest.approx(tr["photons_c0"][m].sum(), rel=0.01)
    back = res.camera.inverse(res.adu)
    assert back.mean() == pytest.approx(res.photons.mean(), rel=0.01)
    assert tr.is_3d and np.all(np.diff(tr["frame"]) >= 0)


def test_roi_larger_than_frame_is_rejected(spline):
    from algorithms.io.calibration import Calibration

    cfg = SimulationConfig.from_dict({"frame_shape": [8, 8], "n_frames": 2})
    with pytest.raises(ValueError, match="larger than the frame"):
        simulate(cfg, Calibration([spline]))


def test_negative_flux_is_rejected():
    cfg = SimulationConfig.from_dict({"n_frames": 2, "flux": {"dist": "fixed", "value": -10}})
    with pytest.raises(ValueError, match="flux value must be >= 0"):
        simulate(cfg)


# ---------------------------------------------------------------------------------------------------- GPU


def _cupy():
    cupy = pytest.importorskip("cupy")
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            pytest.skip("no CUDA device")
    except Exception:
        pytest.skip("no CUDA device")
    return cupy


@pytest.mark.gpu
def test_cuda_render_kernel_matches_cpu_twin(spline):
    cupy = _cupy()
    t, h, w = 30, 40, 50
    frame, y, x, z, ph = _emitters(2000, t, h, w, 53, (-550, 550))
    zs = spline.z_sp(z)
    cpu = sk.render_frames_cpu(spline.coeff, spline.ref[:2], frame, y, x, zs, ph, (t, h, w))
    gpu = cupy.asnumpy(sk.render_frames_cuda(spline.coeff, spline.ref[:2], frame, y, x, zs, ph, (t, h, w)))
    assert np.abs(gpu - cpu).max() <= 1e-5 * np.abs(cpu).max()


@pytest.mark.gpu
@pytest.mark.parametrize("derivatives", [False, True])
def test_cuda_roi_kernel_matches_cpu_twin(spline, derivatives):
    cupy = _cupy()
    rng = np.random.default_rng(54)
    y, x, z = rng.uniform(0, 30, 500), rng.uniform(0, 30, 500), spline.z_sp(rng.uniform(-550, 550, 500))
    cpu, r0, c0 = sk.spline_rois_cpu(spline.coeff, spline.ref[:2], y, x, z, derivatives)
    gpu, gr0, gc0 = sk.spline_rois_cuda(spline.coeff, spline.ref[:2], y, x, z, derivatives)
    gpu = cupy.asnumpy(gpu)
    assert np.array_equal(r0, gr0) and np.array_equal(c0, gc0)
    scale = np.abs(cpu).max(axis=(-2, -1), keepdims=True)
    assert np.abs(gpu - cpu).max() <= 1e-5 * scale.max()


@pytest.mark.gpu
def test_cuda_simulation_stays_on_device_and_matches_cpu_expected_photons(spline):
    cupy = _cupy()
    from algorithms.io.calibration import Calibration

    base = {"n_frames": 20, "frame_shape": [40, 40], "camera": "smlm-challenge-emccd", "seed": 9}
    cpu = simulate(SimulationConfig.from_dict({**base, "backend": "cpu"}), Calibration([spline]))
    gpu = simulate(SimulationConfig.from_dict({**base, "backend": "cuda"}), Calibration([spline]))
    assert isinstance(gpu.adu, cupy.ndarray)
    assert np.abs(cupy.asnumpy(gpu.photons) - cpu.photons).max() <= 1e-5 * cpu.photons.max()
    assert float(gpu.camera.inverse(gpu.adu).mean()) == pytest.approx(float(cpu.photons.mean()), rel=0.02)


@pytest.mark.gpu
@pytest.mark.parametrize("preset", ["smlm-challenge-emccd", "scmos-typical"])
def test_camera_on_device_is_unbiased_and_emccd_keeps_excess_noise(preset):
    cupy = _cupy()
    from algorithms.simulation.camera import camera_from_params

    cam = camera_from_params(preset)
    lam = cupy.full((200, 64, 64), 40.0, dtype=cupy.float32)
    back = cam.inverse(cam.forward(lam, cupy.random.RandomState(7)))
    assert isinstance(back, cupy.ndarray)
    assert abs(float(back.mean()) - 40.0) / 40.0 < 0.01
    if preset.endswith("emccd"):
        assert float(back.var()) / 40.0 == pytest.approx(2.0 / 0.9, rel=0.05)  # F = 2, qe 0.9


def test_backgrounds_uniform_per_frame_and_channel_and_smooth_in_space():
    from algorithms.simulation.render import backgrounds

    rng = np.random.default_rng(55)
    flat = backgrounds(400, 2, (32, 32), {"low": 10.0, "high": 30.0}, rng)
    assert flat.shape == (400, 2, 32, 32)
    assert np.all(flat.std(axis=(2, 3)) < 1e-4)  # one level per frame and channel
    assert flat[:, :, 0, 0].min() >= 10 and flat[:, :, 0, 0].max() <= 30
    assert flat[:, :, 0, 0].mean() == pytest.approx(20.0, rel=0.03)
    smooth = backgrounds(3, 1, (64, 64), {"value": 50.0, "smooth_amplitude": 0.4, "smooth_scale_px": 10}, rng)
    img = smooth[0, 0]
    assert (
        img.min() >= 50 * 0.6 - 1e-3
        and img.max() <= 50 * 1.4 + 1e-3
        and img.mean() == pytest.approx(50, rel=0.02)
    )
    assert np.abs(np.diff(img, axis=1)).max() < 0.1 * (img.max() - img.min())  # smooth: small pixel steps
    with pytest.raises(ValueError, match="smooth_amplitude"):
        backgrounds(1, 1, (8, 8), {"value": 1.0, "smooth_amplitude": 1.5}, rng)


def test_biplane_ratios_from_psf_norms_put_the_recorded_photons_into_each_plane(spline):
    from algorithms.io.calibration import Calibration
    from algorithms.simulation.psf import SplinePSF

    dimmer = SplinePSF(spline.coeff * np.float32(0.6), spline.ref, spline.dz_nm)
    cfg = SimulationConfig.from_dict(
        {
            "n_frames": 60,
            "frame_shape": [64, 64],
            "emitters_per_frame": 1,
            "z_range_nm": [0, 0],
            "n_channels": 2,
            "photon_model": "biplane",
            "plane_ratios": "psf",
            "background": {"value": 0.0},
            "seed": 8,
            "backend": "cpu",
        }
    )
    res = simulate(cfg, Calibration([spline, dimmer]))
    tr = res.truth
    assert np.allclose(tr["photons_c1"], 0.6 * tr["photons_c0"], rtol=1e-3)
    inner = (tr["x"] > 1200) & (tr["x"] < 5200) & (tr["y"] > 1200) & (tr["y"] < 5200)
    f_ok = np.setdiff1d(np.arange(60), np.unique(tr["frame"][~inner]))
    m = np.isin(tr["frame"], f_ok)
    assert m.sum() >= 10
    for k in (0, 1):
        assert res.photons[f_ok, k].sum() == pytest.approx(tr[f"photons_c{k}"][m].sum(), rel=0.01)
    assert res.frames_photons().shape == res.photons.shape


def test_z_range_beyond_the_calibration_is_rejected(spline):
    from algorithms.io.calibration import Calibration

    cfg = SimulationConfig.from_dict({"n_frames": 2, "z_range_nm": [-900, 300]})
    with pytest.raises(ValueError, match="leaves the calibration's z range"):
        simulate(cfg, Calibration([spline]))


def test_negative_spline_wings_never_reach_the_camera(spline):
    from algorithms.io.calibration import Calibration
    from algorithms.simulation.psf import SplinePSF

    ringing = SplinePSF(spline.coeff.copy(), spline.ref, spline.dz_nm)
    ringing.coeff[..., 0] -= 1e-4  # a small negative offset everywhere: negative wings
    cfg = SimulationConfig.from_dict(
        {"n_frames": 5, "background": {"value": 0.0}, "seed": 2, "backend": "cpu"}
    )
    res = simulate(cfg, Calibration([ringing]))
    assert res.photons.min() >= 0.0


def test_biplane_planes_focused_apart_see_an_emitter_sharp_in_one_and_blurred_in_the_other():
    """focal_offsets_nm: channel k's PSF is at z − offset_k, so an emitter at +400 nm is in focus in the plane
    focused there and 800 nm out of focus in the other (issue 20: no real biplane before)."""
    cfg = SimulationConfig.from_dict({
        "n_frames": 200, "frame_shape": [21, 21], "n_channels": 2, "photon_model": "biplane", "plane_ratios": [0.5, 0.5],
        "structure": {"kind": "positions", "positions_nm": [[1050.0, 1050.0, 400.0]]}, "emitters_per_frame": 1,
        "on_time_frames": 3, "flux": {"dist": "fixed", "value": 5000}, "background": {"value": 0},
        "psf": {"kind": "gaussian", "sigma_px": 1.2, "astig_gamma_nm": 0.0, "depth_nm": 400.0},
        "focal_offsets_nm": [-400.0, 400.0], "seed": 1, "backend": "cpu"})
    movie = np.asarray(simulate(cfg).photons)  # expected photons (T, C, H, W), no background
    frames = movie[int(np.argmax(movie.sum(axis=(1, 2, 3))))]  # a frame the emitter is fully on in
    peak = frames.reshape(2, -1).max(1)
    width = GaussianPSF(1.2, 0.0, 400.0).sigmas(np.array([800.0]))[0][0] / 1.2  # σ grows √5 ≈ 2.24×
    assert peak[1] / peak[0] == pytest.approx(width**2, rel=0.15)
    with pytest.raises(ValueError, match="one value per channel"):
        SimulationConfig.from_dict({"n_channels": 2, "focal_offsets_nm": [0.0]})


def test_training_passes_the_planes_focus_on_and_takes_z_from_defocus():
    from algorithms.decode_plex.cli import TRAIN_DEFAULTS, build_train

    p = {**TRAIN_DEFAULTS, "mode": "biplane", "channels": 2, "three_d": True, "focal_offsets_nm": [-250, 250]}
    sim, _, _ = build_train(p)
    cfg = sim.simulation_config(0)
    assert cfg.focal_offsets_nm == [-250.0, 250.0] and cfg.psf["astig_gamma_nm"] == 0.0
    from algorithms.cli import BadInput

    with pytest.raises(BadInput, match="one value per channel"):
        build_train({**p, "focal_offsets_nm": [100]})


def test_each_dye_blinks_with_its_own_on_time_and_keeps_its_share_of_the_density():
    cfg = SimulationConfig.from_dict({
        "n_frames": 3000, "frame_shape": [32, 32], "n_dyes": 2, "n_channels": 2, "photon_model": "ratiometric",
        "transmission": [[0.8, 0.2], [0.2, 0.8]], "density_per_um2": 0.4, "on_time_frames": [1.0, 6.0],
        "seed": 3, "backend": "cpu"})
    truth = simulate(cfg).truth
    for dye, tau in ((0, 1.0), (1, 6.0)):
        ids = truth["id"][truth["dye"] == dye]
        frames_per_blink = len(ids) / len(np.unique(ids))  # frames each fluorophore is seen in, ≈ τ + 1
        assert frames_per_blink == pytest.approx(tau + 1.0, rel=0.2), (dye, frames_per_blink)
        per_frame = len(ids) / cfg.n_frames / (32 * 32 * 0.01)  # emitter-frames per µm² per frame
        assert per_frame == pytest.approx(0.2, rel=0.2)
    with pytest.raises(ValueError, match="one positive value per dye"):
        simulate(SimulationConfig.from_dict({"n_frames": 5, "n_dyes": 2, "on_time_frames": [1.0]}))
