"""PSF values and derivatives against theory and finite differences (fixed seeds, stated tolerances)."""

from __future__ import annotations

import numpy as np
import pytest

from algorithms.simulation.psf import GaussianPSF, sample
from tests.science.conftest import Z_NODES_NM


def test_gaussian_psf_at_frame_centre_sums_to_its_photons_within_1e_3():
    psf = GaussianPSF(sigma_px=1.5, roi_px=21)
    img = 3000.0 * sample(psf, [32.0], [32.0], [0.0], (64, 64))[0]
    assert abs(img.sum() - 3000.0) / 3000.0 < 1e-3


def test_astigmatic_gaussian_widths_cross_at_focus_and_swap_sign_with_z(astig_gauss):
    sx, sy, _, _ = astig_gauss.sigmas(np.array([-300.0, 0.0, 300.0]))
    assert sx[1] == pytest.approx(sy[1])
    assert sx[2] < sy[2] and sx[0] > sy[0]  # x focus at +gamma, y focus at -gamma
    assert sx[2] == pytest.approx(1.3)


@pytest.mark.parametrize("which", ["gauss", "spline"])
def test_psf_derivatives_match_central_finite_differences(which, astig_gauss, spline):
    psf = astig_gauss if which == "gauss" else spline
    rng = np.random.default_rng(3)
    n = 20
    # keep clear of half-pixel positions, where a spline ROI jumps by one pixel (truncation, not slope)
    x, y = 12.05 + 0.4 * rng.random(n), 11.55 + 0.4 * rng.random(n)
    z = rng.uniform(-450, 450, n)
    d = sample(psf, x, y, z, (24, 24), derivatives=True)
    assert np.allclose(d[:, 0], sample(psf, x, y, z, (24, 24)))
    # spline coefficients are float32: larger steps keep round-off well below the tolerance
    hx, hz = (1e-5, 1e-3) if which == "gauss" else (2e-2, 2.0)
    for axis, (dx, dy, dz) in ((1, (hx, 0, 0)), (2, (0, hx, 0)), (3, (0, 0, hz))):
        h = dx + dy + dz
        fd = (
            sample(psf, x + dx, y + dy, z + dz, (24, 24)) - sample(psf, x - dx, y - dy, z - dz, (24, 24))
        ) / (2 * h)
        scale = np.abs(d[:, axis]).max()
        tol = 1e-6 if which == "gauss" else 2e-3
        assert np.abs(fd - d[:, axis]).max() / scale < tol, f"axis {axis}"


def test_spline_from_gaussian_stack_reproduces_gaussian_within_1pct_of_peak(astig_gauss, spline):
    rng = np.random.default_rng(4)
    n = 200
    x, y = 12 + rng.random(n), 12 + rng.random(n)
    z = rng.uniform(-550, 550, n)
    # compare where both windows cover (the Gaussian's 17 px window and the spline's 16 cells)
    g = sample(astig_gauss, x, y, z, (24, 24))[:, 5:20, 5:20]
    s = sample(spline, x, y, z, (24, 24))[:, 5:20, 5:20]
    peak = g.max(axis=(1, 2))
    assert (np.abs(g - s).max(axis=(1, 2)) / peak).max() < 0.01


def test_spline_at_grid_points_reproduces_the_stack(gauss_stack, spline):
    nz, ny, nx = gauss_stack.shape
    i, j, k = np.meshgrid(np.arange(ny), np.arange(nx), np.arange(nz), indexing="ij")
    v = spline.evaluate_points(i.ravel(), j.ravel(), k.ravel()).reshape(ny, nx, nz)
    ref = gauss_stack.transpose(1, 2, 0) / gauss_stack[nz // 2].sum()
    assert np.abs(v - ref).max() / ref.max() < 1e-5


def test_spline_rendered_at_pixel_centre_equals_stack_slice(gauss_stack, spline):
    """Coordinate mapping: an emitter at the centre of pixel (r, c) at a z node renders the stack slice
    with its central voxel on pixel (r, c), x along columns."""
    k = 5
    img = sample(spline, [10.5], [8.5], [Z_NODES_NM[k]], (20, 20))[0]
    sl = gauss_stack[k] / gauss_stack[len(Z_NODES_NM) // 2].sum()
    # the spline has Ny-1 cells: rows/cols offsets -8..+7 around the centre pixel
    assert np.allclose(img[0:16, 2:18], sl[:16, :16], atol=1e-6 * sl.max())
    assert np.unravel_index(img.argmax(), img.shape) == (8, 10)


def test_astigmatic_spline_elongates_along_x_below_focus(spline):
    """z < 0: sigma_x(z) > sigma_y(z) for gamma = 300 nm, so the image is wider along columns."""
    img = sample(spline, [10.5], [10.5], [-300.0], (21, 21))[0]
    yy, xx = np.mgrid[0:21, 0:21] + 0.5
    var_x = (img * (xx - 10.5) ** 2).sum() / img.sum()
    var_y = (img * (yy - 10.5) ** 2).sum() / img.sum()
    assert var_x > 1.5 * var_y
