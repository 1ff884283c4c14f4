"""CRLB against theory and against a maximum-likelihood fit of simulated isolated emitters."""

from __future__ import annotations

import numpy as np
import pytest

from algorithms.simulation.camera import camera_from_params
from algorithms.simulation.crlb import crlb_from_fisher, crlb_single, fisher_multichannel, fit_mle
from algorithms.simulation.geometry import ChannelGeometry, translation
from algorithms.simulation.psf import GaussianPSF, sample


def test_gaussian_crlb_without_background_approaches_the_photon_limit():
    """No background, big window: var(x) → (σ² + a²/12)/N for a pixelated Gaussian (Mortensen 2010)."""
    psf = GaussianPSF(sigma_px=1.5, roi_px=31)
    cr = crlb_single(psf, [15.5], [15.5], [0.0], 10000.0, 1e-6, (31, 31))[0]
    limit = np.sqrt((1.5**2 + 1 / 12) / 10000.0)
    assert cr[0] == pytest.approx(limit, rel=0.02)
    assert cr[3] == pytest.approx(np.sqrt(10000.0), rel=0.01)  # photons: Poisson


def test_crlb_scales_as_one_over_sqrt_photons_and_emccd_doubles_the_variance():
    psf = GaussianPSF(sigma_px=1.3, roi_px=15)
    a = crlb_single(psf, [7.5], [7.5], [0.0], 1000.0, 1e-6, (15, 15))[0, 0]
    b = crlb_single(psf, [7.5], [7.5], [0.0], 4000.0, 1e-6, (15, 15))[0, 0]
    assert a / b == pytest.approx(2.0, rel=1e-3)
    emccd = camera_from_params({"preset": "smlm-challenge-emccd", "qe": 1.0, "spurious_e": 0.0})
    c = crlb_single(psf, [7.5], [7.5], [0.0], 4000.0, 20.0, (15, 15), emccd)[0, 0]
    d = crlb_single(psf, [7.5], [7.5], [0.0], 4000.0, 20.0, (15, 15))[0, 0]
    assert (c / d) ** 2 == pytest.approx(2.0, rel=0.01)  # read noise / gain² is negligible


def test_2d_gaussian_z_is_reported_unidentifiable():
    cr = crlb_single(GaussianPSF(1.3), [7.5], [7.5], [0.0], 1000.0, 10.0, (15, 15))[0]
    assert np.isinf(cr[2]) and np.all(np.isfinite(cr[[0, 1, 3, 4]]))


@pytest.mark.parametrize("which", ["gauss2d", "spline3d"])
def test_mle_fit_of_1000_emitters_reaches_the_crlb_within_15pct(which, spline):
    """5000 photons, background 50 photons/px, Poisson noise: the empirical variance of an MLE fit is within
    15 % of the CRLB (x, y; and z for the 3-D spline)."""
    rng = np.random.default_rng(41)
    n, size = 1000, 15
    psf = GaussianPSF(sigma_px=1.3, roi_px=size) if which == "gauss2d" else spline
    x, y = 7.0 + rng.random(n), 7.0 + rng.random(n)
    z = np.zeros(n) if which == "gauss2d" else rng.uniform(-300, 300, n)
    data = rng.poisson(5000.0 * sample(psf, x, y, z, (size, size)) + 50.0)
    fit = fit_mle(psf, data, fit_z=which != "gauss2d")
    cr = crlb_single(psf, x, y, z, 5000.0, 50.0, (size, size))
    err = fit[:, :3] - np.stack([x, y, z], 1)
    ok = np.all(np.isfinite(fit), axis=1)
    assert ok.mean() > 0.99
    axes = [0, 1] if which == "gauss2d" else [0, 1, 2]
    ratio = err[ok][:, axes].var(0) / (cr[ok][:, axes] ** 2).mean(0)
    assert np.all(np.abs(ratio - 1.0) < 0.15), ratio
    assert np.abs(err[ok][:, axes].mean(0)).max() < 0.2 * np.sqrt((cr[:, axes] ** 2).mean(0)).max()


def test_multichannel_with_linked_photons_beats_one_channel_and_matches_two_identical_channels():
    psf = GaussianPSF(sigma_px=1.3, roi_px=15)
    one = crlb_from_fisher(
        fisher_multichannel([psf], ChannelGeometry.identity(1), 20.0, 20.0, 0.0, 2000.0, [10.0], (15, 15))[
            None
        ]
    )[0]
    geo = ChannelGeometry([np.eye(3), translation(30.0, 2.0)])
    two = crlb_from_fisher(
        fisher_multichannel(
            [psf, psf], geo, 20.0, 20.0, 0.0, 2000.0, [10.0, 10.0], (15, 15), ratios=[0.5, 0.5]
        )[None]
    )[0]
    # the same photons split into two identical channels with half the background each would be equal;
    # with the full background in each channel it is a little worse than one channel
    assert two[0] > one[0] and two[0] < one[0] * 1.3
    assert np.isfinite(two[[0, 1, 3, 4, 5]]).all() and np.isinf(two[2]) and len(two) == 6


def test_splitting_photons_and_background_over_two_channels_keeps_the_fisher_information(astig_gauss):
    """Poisson thinning: two channels each with N/2 and b/2 carry exactly the information of one channel with
    N and b (the channel offset is a whole-pixel translation, so the sub-pixel position is the same)."""
    one = fisher_multichannel(
        [astig_gauss], ChannelGeometry.identity(1), 20.3, 19.8, 120.0, 3000.0, [40.0], (17, 17)
    )
    geo = ChannelGeometry([np.eye(3), translation(37.0, -5.0)])
    two = fisher_multichannel(
        [astig_gauss] * 2, geo, 20.3, 19.8, 120.0, 3000.0, [20.0, 20.0], (17, 17), ratios=[0.5, 0.5]
    )
    c1 = crlb_from_fisher(one[None])[0]
    c2 = crlb_from_fisher(two[None])[0]
    assert np.allclose(c2[:4], c1[:4], rtol=1e-6)


def test_multichannel_position_derivatives_follow_the_transform(astig_gauss):
    """A channel rotated by 90° swaps which axis it measures best: the Fisher information of x in channel k
    equals that of y in the reference when the PSF there is astigmatic."""
    rot = np.array([[0.0, -1.0, 64.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    ref = fisher_multichannel(
        [astig_gauss], ChannelGeometry.identity(1), 20.5, 20.5, 250.0, 3000.0, [10.0], (17, 17)
    )
    rotated = fisher_multichannel(
        [astig_gauss, astig_gauss],
        ChannelGeometry([np.eye(3), rot]),
        20.5,
        20.5,
        250.0,
        3000.0,
        [10.0, 10.0],
        (17, 17),
        ratios=[0.0, 1.0],
    )
    assert rotated[0, 0] == pytest.approx(ref[1, 1], rel=1e-6)
    assert rotated[1, 1] == pytest.approx(ref[0, 0], rel=1e-6)


def test_scmos_read_noise_raises_the_crlb_like_extra_background(astig_gauss):
    """sCMOS branch: zero read noise (qe 1) is the Poisson CRLB; read-noise variance σ² (e⁻², qe 1) adds to each
    pixel's variance exactly as σ² photons of extra background would (Huang et al. 2013), so the CRLB equals the
    Poisson one at background b + σ², and grows with σ. Tolerance 1e-9 relative: these are the same sums."""
    x, y, z, n_ph, bg, shape = [8.3], [7.6], [150.0], 2000.0, 20.0, (17, 17)

    def scmos(read_noise_e):
        return camera_from_params({"kind": "scmos", "qe": 1.0, "em_gain": None, "read_noise_e": read_noise_e})

    poisson = crlb_single(astig_gauss, x, y, z, n_ph, bg, shape)[0]
    np.testing.assert_allclose(crlb_single(astig_gauss, x, y, z, n_ph, bg, shape, scmos(0.0))[0], poisson, rtol=1e-9)
    previous = poisson
    for rn in (1.6, 3.0, 6.0):
        cr = crlb_single(astig_gauss, x, y, z, n_ph, bg, shape, scmos(rn))[0]
        assert np.all(cr > previous), (rn, cr, previous)  # every parameter loses precision
        np.testing.assert_allclose(cr, crlb_single(astig_gauss, x, y, z, n_ph, bg + rn**2, shape)[0], rtol=1e-9)
        previous = cr
    # a per-pixel map that is the same everywhere is the scalar
    flat = crlb_single(astig_gauss, x, y, z, n_ph, bg, shape, scmos(np.full(shape, 3.0)))[0]
    np.testing.assert_allclose(flat, crlb_single(astig_gauss, x, y, z, n_ph, bg, shape, scmos(3.0))[0], rtol=1e-12)


def test_scmos_quantum_efficiency_acts_as_fewer_photons_and_read_noise_as_background():
    """qe < 1: detected electrons are Poisson(qe·μ) plus read noise σ (e⁻), so the position CRLB equals the
    Poisson one for qe·N photons on qe·b + σ² background (exact; tolerance 1e-9 relative)."""
    psf = GaussianPSF(sigma_px=1.3, roi_px=15)
    for rn in (0.0, 2.0):
        cam = camera_from_params({"kind": "scmos", "qe": 0.8, "em_gain": None, "read_noise_e": rn})
        with_qe = crlb_single(psf, [7.2], [7.7], [0.0], 3000.0, 30.0, (15, 15), cam)[0]
        fewer = crlb_single(psf, [7.2], [7.7], [0.0], 0.8 * 3000.0, 0.8 * 30.0 + rn**2, (15, 15))[0]
        np.testing.assert_allclose(with_qe[:2], fewer[:2], rtol=1e-9)
