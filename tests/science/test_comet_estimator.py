"""COMET drift estimator against simulated ground truth and analytic cases (fixed seeds, stated tolerances)."""

from __future__ import annotations

import numpy as np
import pytest

from algorithms.comet.estimate import CometParams, estimate_drift, merge_blinks
from algorithms.comet.simulate import DRIFT_KINDS, drift_rmse, simulate_drift, simulate_localizations


def _arrays(sim, dims=2):
    t = sim.table
    axes = "xyz"[:dims]
    pos = np.column_stack([t[a] for a in axes])
    sig = np.column_stack([t[f"sigma_{a}"] for a in axes])
    return t["frame"], pos, sig


@pytest.mark.parametrize("kind", DRIFT_KINDS)
def test_simulated_drift_is_seeded_and_starts_at_zero(kind):
    a = simulate_drift(500, kind, 80.0, dims=3, seed=4)
    b = simulate_drift(500, kind, 80.0, dims=3, seed=4)
    assert a.shape == (500, 3)
    np.testing.assert_array_equal(a, b)
    if kind != "constant":
        np.testing.assert_allclose(a[0], 0.0, atol=1e-12)


def test_simulator_precision_follows_photons_and_drift_is_applied():
    sim = simulate_localizations(20_000, 2_000, precision_nm=8.0, spurious_fraction=0.0, seed=2)
    t = sim.table
    assert abs(np.median(t["sigma_x"]) - 8.0) < 0.3
    # brighter localizations are more precise: sigma ∝ photons^-1/2
    np.testing.assert_allclose(t["sigma_x"] * np.sqrt(t["photons"]), 8.0 * np.sqrt(2000.0), rtol=1e-9)
    err = np.column_stack([t["x"], t["y"]]) - sim.sites[sim.site_of] - sim.drift[t["frame"]]
    assert abs(np.std(err / t["sigma_x"][:, None]) - 1.0) < 0.02


def test_constant_drift_gives_zero_relative_drift():
    sim = simulate_localizations(30_000, 3_000, drift_kind="constant", drift_amplitude_nm=150.0, seed=11)
    frame, pos, sig = _arrays(sim)
    res = estimate_drift(frame, pos, sig, CometParams(backend="cpu", split_half=False))
    assert res.drift.shape == (3_000, 2)
    np.testing.assert_array_equal(res.drift[0], 0.0)  # gauge pinned at frame 0
    # a constant offset is no drift at all: what is left is estimation noise (largest at the ends)
    assert np.abs(res.drift - res.drift.mean(0)).max() < 1.5
    assert drift_rmse(res.drift, sim.drift).max() < 0.3


def test_noise_free_sinusoid_is_recovered_below_0p1_nm():
    n_frames = 3_000
    drift = simulate_drift(n_frames, "sinusoid", 50.0, dims=2, seed=5, periods=2.0)
    sim = simulate_localizations(40_000, n_frames, drift=drift, precision_nm=1e-4, spurious_fraction=0.0, seed=5)
    frame, pos, _ = _arrays(sim)
    sig = np.full_like(pos, 3.0)  # kernel width only: the positions themselves carry no noise
    p = CometParams(backend="cpu", split_half=False, knot_frames=100, merge_blinks=False, tol_nm=1e-4,
                    anneal_nm=[4.0, 1.0, 0.0], max_iter=400)
    res = estimate_drift(frame, pos, sig, p)
    rmse = drift_rmse(res.drift, drift)
    assert rmse.max() < 0.1, rmse


def test_2d_100k_localizations_8nm_precision_rmse_below_1nm_and_split_half_is_honest():
    sim = simulate_localizations(100_000, 10_000, precision_nm=8.0, drift_kind="random_walk",
                                 drift_amplitude_nm=150.0, seed=21)
    frame, pos, sig = _arrays(sim)
    res = estimate_drift(frame, pos, sig, CometParams(backend="cpu"))
    rmse = drift_rmse(res.drift, sim.drift)
    assert rmse.max() < 1.0, rmse
    # the split-half estimate is within a factor 3 of the true error
    assert np.all(res.precision_nm > rmse / 3) and np.all(res.precision_nm < rmse * 3), (res.precision_nm, rmse)
    assert res.band.shape == res.drift.shape


def test_3d_drift_is_recovered():
    sim = simulate_localizations(60_000, 6_000, dims=3, precision_nm=8.0, drift_kind="random_walk",
                                 drift_amplitude_nm=100.0, seed=31)
    frame, pos, sig = _arrays(sim, 3)
    res = estimate_drift(frame, pos, sig, CometParams(backend="cpu", split_half=False))
    rmse = drift_rmse(res.drift, sim.drift)
    assert rmse[:2].max() < 1.0 and rmse[2] < 2.5, rmse


@pytest.mark.parametrize(
    "lever",
    [
        {"merge_blinks": False},
        {"precision_weighted": False},
        {"prepass": False, "max_drift_nm": 60.0},
        {"skip_same_window": False},
        {"prune": False},
        {"model": "windows", "knot_frames": 250, "smoothness": 0.0},
    ],
)
def test_each_lever_off_still_recovers_the_drift(lever):
    sim = simulate_localizations(20_000, 2_000, precision_nm=8.0, drift_kind="linear", drift_amplitude_nm=40.0,
                                 seed=41)
    frame, pos, sig = _arrays(sim)
    res = estimate_drift(frame, pos, sig, CometParams(backend="cpu", split_half=False, **lever))
    tol = 2.0 if lever.get("model") == "windows" else 1.5  # windows are piecewise constant: ±v·L/2 error
    assert drift_rmse(res.drift, sim.drift).max() < tol


def test_step_drift_is_tracked_by_short_windows():
    sim = simulate_localizations(30_000, 2_000, precision_nm=6.0, drift_kind="step", drift_amplitude_nm=30.0,
                                 seed=51)
    frame, pos, sig = _arrays(sim)
    p = CometParams(backend="cpu", split_half=False, model="windows", knot_frames=100)
    res = estimate_drift(frame, pos, sig, p)
    step = res.drift[1500:].mean(0) - res.drift[:900].mean(0)
    np.testing.assert_allclose(step, sim.drift[-1] - sim.drift[0], atol=1.0)


def test_blink_merging_joins_consecutive_frames_only():
    frame = np.array([0, 1, 2, 5, 0, 1])
    pos = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [500.0, 0.0], [900.0, 0.0]])
    var = np.full_like(pos, 4.0)
    mframe, mpos, mvar, label = merge_blinks(frame, pos, var, radius_nm=10.0, gap_frames=1)
    assert len(mframe) == 4  # {0,1,2}, {5}, {500 nm}, {900 nm}
    assert label[0] == label[1] == label[2] and len({label[3], label[4], label[5], label[0]}) == 4
    k = label[0]
    np.testing.assert_allclose(mpos[k], [1 / 3, 1 / 3])
    np.testing.assert_allclose(mvar[k], 4.0 / 3)
    assert mframe[k] == 1
