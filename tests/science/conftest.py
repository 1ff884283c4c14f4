"""Shared science fixtures: a small astigmatic Gaussian PSF, the spline built from its z-stack, and torch
kept to one thread (several threads spin against each other on a busy 2-core machine)."""

from __future__ import annotations

import numpy as np
import pytest

from algorithms.simulation.psf import GaussianPSF, gaussian_stack, spline_from_stack

Z_NODES_NM = np.arange(-600.0, 601.0, 50.0)


@pytest.fixture(scope="session")
def astig_gauss() -> GaussianPSF:
    return GaussianPSF(sigma_px=1.3, astig_gamma_nm=300.0, depth_nm=400.0, roi_px=17)


@pytest.fixture(scope="session")
def gauss_stack(astig_gauss) -> np.ndarray:
    """(Nz, 17, 17) pixel-integrated stack centred on the central pixel's centre, 50 nm steps."""
    return gaussian_stack(astig_gauss, 17, Z_NODES_NM)


@pytest.fixture(scope="session")
def spline(gauss_stack):
    return spline_from_stack(gauss_stack, dz_nm=50.0)


@pytest.fixture(autouse=True, scope="session")
def _few_torch_threads():
    try:
        import torch
    except ImportError:  # evaluation tests need no torch
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
