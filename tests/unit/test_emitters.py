"""Emitters: blinking statistics against the continuous-time model, flux distributions, structures."""

from __future__ import annotations

import numpy as np
import pytest

from algorithms.simulation.emitters import draw_flux, frame_emitters, sample_fluorophores


def test_blinking_gives_the_asked_mean_photons_and_density_per_frame():
    rng = np.random.default_rng(31)
    tau, flux, n_frames = 3.0, 2000.0, 2000
    fl = sample_fluorophores(
        n_frames,
        (6400.0, 6400.0),
        rng,
        density_per_um2=0.5,
        on_time_frames=tau,
        flux={"dist": "fixed", "value": flux},
    )
    em = frame_emitters(fl, n_frames)
    per_frame = np.bincount(em.frame, minlength=n_frames)
    # emitters touching a frame: density × area (the model's definition), within 3 %
    assert per_frame.mean() == pytest.approx(0.5 * 6.4 * 6.4, rel=0.03)
    # photons: every fluorophore's total equals flux × its on-time clipped to the movie
    tot = np.bincount(em.id, weights=em.photons, minlength=len(fl))
    on = np.clip(np.minimum(fl.t0 + fl.t_on, n_frames) - np.maximum(fl.t0, 0), 0, None)
    assert np.allclose(tot, flux * on, rtol=1e-9, atol=1e-6)
    assert np.all(em.photons > 0) and np.all(np.diff(em.frame) >= 0)


def test_ids_are_kept_across_consecutive_frames():
    rng = np.random.default_rng(32)
    fl = sample_fluorophores(200, (3200.0, 3200.0), rng, mean_per_frame=5, on_time_frames=5.0)
    em = frame_emitters(fl, 200)
    for i in np.unique(em.id)[:50]:
        f = em.frame[em.id == i]
        assert np.all(np.diff(f) == 1)
        assert np.all(em.x_nm[em.id == i] == fl.x_nm[i])


def test_flux_distributions():
    rng = np.random.default_rng(33)
    u = draw_flux(100000, {"dist": "uniform", "low": 1000, "high": 3000}, rng)
    assert u.min() >= 1000 and u.max() <= 3000 and u.mean() == pytest.approx(2000, rel=0.01)
    n = draw_flux(100000, {"dist": "normal", "mean": 4000, "std": 300}, rng)
    assert n.std() == pytest.approx(300, rel=0.02)
    pc = draw_flux(10, {"dist": "fixed", "value": [100, 200, 300]}, rng, n_channels=3)
    assert pc.shape == (10, 3)
    with pytest.raises(ValueError, match=">= 0"):
        draw_flux(10, {"dist": "uniform", "low": -5, "high": 10}, rng)


def test_structures_stay_in_the_field_and_z_range():
    rng = np.random.default_rng(34)
    for structure in ("uniform", {"kind": "filaments", "n_filaments": 3}):
        fl = sample_fluorophores(
            50, (5000.0, 4000.0), rng, mean_per_frame=20, z_range_nm=(-300, 200), structure=structure
        )
        assert fl.x_nm.min() >= 0 and fl.x_nm.max() < 5000 and fl.y_nm.max() < 4000
        assert fl.z_nm.min() >= -300 and fl.z_nm.max() <= 200
    pos = np.array([[100.0, 200.0, 10.0], [300.0, 400.0, -20.0]])
    fl = sample_fluorophores(10, (1000.0, 1000.0), rng, mean_per_frame=1, positions_nm=pos)
    assert np.array_equal(fl.x_nm, pos[:, 0]) and np.array_equal(fl.z_nm, pos[:, 2])


def test_filaments_are_concentrated_on_curves():
    """Filament positions occupy far fewer 100 nm bins than uniform ones."""
    rng = np.random.default_rng(35)
    f = sample_fluorophores(
        100, (6400.0, 6400.0), rng, mean_per_frame=50, structure={"kind": "filaments", "n_filaments": 4}
    )
    u = sample_fluorophores(100, (6400.0, 6400.0), rng, mean_per_frame=50)
    bins = lambda fl: len(set(zip((fl.x_nm // 100).astype(int), (fl.y_nm // 100).astype(int), strict=True)))  # noqa: E731
    assert bins(f) < 0.5 * bins(u)
