"""Calibration readers/writers: SMAP 3dcal (v7, v7.3, SXY struct arrays, SXY_g), uiPSF .h5 and bead TIFFs,
built from a simulated bead z-stack; coordinate mapping checked against the stored PSF stack."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import scipy.io
import tifffile

from algorithms.io.calibration import (
    CalibrationError,
    read_calibration,
    write_smap_3dcal,
    write_uipsf_h5,
)
from algorithms.simulation.psf import sample
from tests.science.conftest import Z_NODES_NM


@pytest.mark.parametrize("version", ["7", "7.3"])
@pytest.mark.parametrize("n_channels", [1, 2])
@pytest.mark.parametrize("multichannel", [False, True])
def test_smap_3dcal_round_trip_keeps_coefficients_reference_and_dz(
    tmp_path, spline, gauss_stack, version, n_channels, multichannel
):
    path = tmp_path / "beads_3dcal.mat"
    write_smap_3dcal(
        path, [spline] * n_channels, [gauss_stack] * n_channels, version=version, multichannel=multichannel
    )
    cal = read_calibration(path)
    assert cal.n_channels == n_channels
    for psf in cal.psfs:
        assert np.array_equal(psf.coeff, spline.coeff)
        assert psf.ref == pytest.approx(spline.ref)
        assert psf.dz_nm == 50.0


def test_smap_v73_file_is_hdf5_with_matlab_header(tmp_path, spline):
    path = tmp_path / "x_3dcal.mat"
    write_smap_3dcal(path, [spline], version="7.3")
    assert path.read_bytes()[:10] == b"MATLAB 7.3"
    with h5py.File(path, "r") as f:  # MATLAB order: datasets hold the array transposed
        ref = f["SXY/cspline/coeff"][0, 0]
        assert f[ref].shape == spline.coeff.shape[::-1]


@pytest.mark.parametrize("version", ["7", "7.3"])
def test_smap_coordinate_mapping_matches_the_stored_psf_stack(tmp_path, spline, gauss_stack, version):
    """An emitter at a pixel centre at a z node, rendered from the *read* calibration, equals the stored
    PSF stack (SMAP order x=rows, y=cols, z) at that slice, x along columns."""
    path = tmp_path / "beads_3dcal.mat"
    write_smap_3dcal(path, [spline], [gauss_stack], version=version)
    cal = read_calibration(path)
    stack = cal.stacks[0]  # back in (z, y, x)
    assert np.allclose(stack, gauss_stack)
    norm = stack[len(Z_NODES_NM) // 2].sum()
    for k in (3, 12, 20):
        img = sample(cal.psfs[0], [9.5], [8.5], [Z_NODES_NM[k]], (18, 18))[0]
        assert np.allclose(img[0:16, 1:17], stack[k, :16, :16] / norm, atol=1e-6)


def test_scipy_reads_our_v7_file_as_smap_struct(tmp_path, spline):
    path = tmp_path / "y_3dcal.mat"
    write_smap_3dcal(path, [spline], version="7")
    m = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)
    cs = m["SXY"].cspline
    assert cs.coeff.shape == spline.coeff.shape and cs.x0 == spline.ref[0] + 1


def test_uipsf_h5_voxel_psf_becomes_spline_with_transforms_and_pixel_size(tmp_path, gauss_stack, spline):
    t1 = np.array([[1.0, 0.01, 3.0], [-0.01, 1.0, -2.0], [0.0, 0.0, 1.0]])
    path = tmp_path / "psf_uipsf.h5"
    write_uipsf_h5(path, [gauss_stack, gauss_stack], px_size_nm=110.0, dz_nm=50.0, transforms=[np.eye(3), t1])
    cal = read_calibration(path)
    assert cal.n_channels == 2 and cal.px_size_nm == (110.0, 110.0)
    assert np.allclose(cal.transforms[1], t1) and np.allclose(cal.transforms[0], np.eye(3))
    assert cal.psfs[0].dz_nm == pytest.approx(50.0)
    scale = gauss_stack[len(Z_NODES_NM) // 2].sum()  # uiPSF stacks are used as they are (not renormalised)
    assert np.allclose(cal.psfs[0].coeff, spline.coeff * scale, atol=1e-6)


def test_bead_tiff_stack_becomes_normalised_spline(tmp_path, gauss_stack):
    rng = np.random.default_rng(5)
    beads = rng.poisson(2e5 * gauss_stack + 20.0).astype(np.uint16)
    path = tmp_path / "beads.tif"
    tifffile.imwrite(path, beads)
    cal = read_calibration(path, dz_nm=50.0)
    img = sample(cal.psfs[0], [12.5], [12.5], [0.0], (25, 25))[0]
    assert img.sum() == pytest.approx(1.0, abs=0.02)
    assert np.unravel_index(img.argmax(), img.shape) == (12, 12)


@pytest.mark.parametrize("name", ["cut_3dcal.mat", "cut.h5"])
def test_truncated_files_give_one_line_error_naming_the_file(tmp_path, spline, gauss_stack, name):
    path = tmp_path / name
    if name.endswith(".mat"):
        write_smap_3dcal(path, [spline], version="7")
    else:
        write_uipsf_h5(path, [gauss_stack], 100.0, 50.0)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(CalibrationError) as err:
        read_calibration(path)
    msg = str(err.value)
    assert name in msg and "\n" not in msg


def test_calibration_without_cspline_is_rejected(tmp_path):
    path = tmp_path / "gauss_3dcal.mat"
    scipy.io.savemat(path, {"SXY": {"gauss": {"sigma": 1.0}}})
    with pytest.raises(CalibrationError, match="gauss_3dcal.mat.*cspline"):
        read_calibration(path)


def test_uipsf_without_voxel_psf_is_rejected(tmp_path):
    path = tmp_path / "empty.h5"
    with h5py.File(path, "w") as f:
        f.create_group("res")
        f.attrs["params"] = json.dumps({})
    with pytest.raises(CalibrationError, match="empty.h5.*I_model"):
        read_calibration(path)


def test_uipsf_coordinate_mapping_matches_the_stored_voxel_psf(tmp_path, gauss_stack):
    """uiPSF I_model is (z, y, x) with y along rows: an emitter at a pixel centre at a z node renders the
    stored slice with its central voxel on that pixel."""
    asym = gauss_stack * np.linspace(0.5, 1.5, gauss_stack.shape[2])[None, None, :]  # tell x from y
    path = tmp_path / "asym.h5"
    write_uipsf_h5(path, [asym], px_size_nm=100.0, dz_nm=50.0)
    cal = read_calibration(path)
    stack = cal.stacks[0]
    for k in (2, 12, 22):
        img = sample(cal.psfs[0], [9.5], [8.5], [Z_NODES_NM[k]], (18, 18))[0]
        assert np.allclose(img[0:16, 1:17], stack[k, :16, :16], atol=1e-6 * stack.max())


def test_transforms_from_mat_and_uipsf_and_a_clear_error_for_matlab_objects(tmp_path, gauss_stack):
    from algorithms.io.calibration import read_transforms

    t1 = np.array([[1.0, 0.02, 5.0], [-0.02, 1.0, 1.0], [0.0, 0.0, 1.0]])
    scipy.io.savemat(tmp_path / "t.mat", {"T": t1})
    ts = read_transforms(tmp_path / "t.mat", n_channels=2)
    assert np.allclose(ts[0], np.eye(3)) and np.allclose(ts[1], t1)
    write_uipsf_h5(tmp_path / "u.h5", [gauss_stack] * 2, 100.0, 50.0, [np.eye(3), t1])
    assert np.allclose(read_transforms(tmp_path / "u.h5")[1], t1)
    scipy.io.savemat(tmp_path / "x_trafo.mat", {"transformation": {"type": "affine"}})
    with pytest.raises(CalibrationError, match="x_trafo.mat.*MATLAB object"):
        read_transforms(tmp_path / "x_trafo.mat")
    with pytest.raises(CalibrationError, match="1 transform"):
        read_transforms(tmp_path / "t.mat", n_channels=3)
