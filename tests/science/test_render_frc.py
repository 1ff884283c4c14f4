"""Rendering puts known points at the right pixels; FRC matches the analytic expectation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from algorithms.io.formats import write_table
from algorithms.io.table import LocTable
from algorithms.render import images, output
from algorithms.render.frc import frc, ring_correlation, threshold_crossing

REPO = Path(__file__).resolve().parents[2]


def test_histogram_peaks_at_expected_pixels():
    grid = images.Grid(0.0, 0.0, 10.0, 50, 40)
    x = np.array([5.0, 123.0, 499.9, 250.0])
    y = np.array([5.0, 87.0, 399.9, 1000.0])  # the last one is outside the grid
    image = images.histogram(x, y, grid)
    assert image.shape == (40, 50)
    assert image.sum() == 3
    assert image[0, 0] == 1 and image[8, 12] == 1 and image[39, 49] == 1  # row from y, column from x


def test_gaussian_global_sigma_centred_and_normalised():
    grid = images.Grid(0.0, 0.0, 2.0, 101, 101)
    image = images.gaussian(np.array([101.0]), np.array([51.0]), grid, 8.0)
    row, col = np.unravel_index(np.argmax(image), image.shape)
    assert (row, col) == (25, 50)
    assert image.sum() == pytest.approx(1.0, abs=1e-4)
    profile = image[25]
    centres = (np.arange(101) + 0.5) * 2.0
    width = np.sqrt((profile * (centres - 101.0) ** 2).sum() / profile.sum())
    assert width == pytest.approx(np.sqrt(8.0**2 + 2.0**2 / 12), rel=0.03)  # σ plus pixel binning


def test_gaussian_per_localization_sigma_within_quantisation():
    grid = images.Grid(0.0, 0.0, 1.0, 301, 101)
    x, y, s = np.array([50.5, 150.5, 250.5]), np.array([50.5] * 3), np.array([3.0, 7.0, 12.0])
    image = images.gaussian(x, y, grid, s)
    assert image.sum() == pytest.approx(3.0, abs=1e-3)
    for xc, sigma in zip(x, s, strict=True):
        profile = image[50, int(xc) - 45:int(xc) + 46]
        c = np.arange(-45, 46)
        width = np.sqrt((profile * c**2).sum() / profile.sum())
        assert width == pytest.approx(sigma, rel=0.10)  # 4 levels per octave: ≤ 9 % off


def test_z_colour_and_overlay_are_rgb_in_range():
    rng = np.random.default_rng(3)
    x, y = rng.uniform(0, 1000, 500), rng.uniform(0, 1000, 500)
    grid = images.Grid.around(x, y, 20.0)
    rgb = images.render_z_color(x, y, np.where(x < 500, -300.0, 300.0), grid, 20.0, (-400, 400))
    assert rgb.shape == (*grid.shape, 3) and rgb.min() >= 0 and rgb.max() <= 1
    left, right = rgb[:, : grid.width // 3].reshape(-1, 3).sum(0), rgb[:, -grid.width // 3:].reshape(-1, 3).sum(0)
    assert left[2] > left[0] and right[0] > right[2]  # turbo: low z blue, high z red
    over = images.overlay([images.histogram(x, y, grid), images.histogram(y, x, grid)])
    assert over.shape == (*grid.shape, 3) and over.max() <= 1


def test_png_and_tiff_outputs_carry_scale(tmp_path):
    image = np.zeros((200, 300), np.float32)
    image[100, 150] = 5.0
    png = output.save_png(image, tmp_path / "r.png", pixel_nm=10.0)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    assert matplotlib.image.imread(png).shape[:2] == (200, 300)
    assert output.nice_length_nm(3000) == 500
    for bits, dtype in ((16, np.uint16), (32, np.float32)):
        tif = output.save_tiff(image, tmp_path / f"r{bits}.tif", pixel_nm=10.0, bits=bits)
        with tifffile.TiffFile(tif) as tf:
            data = tf.asarray()
            assert data.dtype == dtype and np.unravel_index(np.argmax(data), data.shape) == (100, 150)
            assert tf.imagej_metadata["unit"] == "nm"
            num, den = tf.pages[0].tags["XResolution"].value
            assert den / num == pytest.approx(10.0)  # nm per pixel


def _blinking(seed: int, sigma: float, m: float, n_fluor: int = 3000, size_nm: float = 3000.0, frames: int = 10000):
    """Fluorophores uniform in a square, Poisson(2m) localizations each at random frames, precision σ."""
    rng = np.random.default_rng(seed)
    fx, fy = rng.uniform(0, size_nm, n_fluor), rng.uniform(0, size_nm, n_fluor)
    owner = np.repeat(np.arange(n_fluor), rng.poisson(2 * m, n_fluor))
    x = fx[owner] + rng.normal(0, sigma, len(owner))
    y = fy[owner] + rng.normal(0, sigma, len(owner))
    return x, y, rng.integers(0, frames, len(owner))


@pytest.mark.parametrize("sigma,m", [(8.0, 5.0), (15.0, 5.0), (8.0, 20.0)])
def test_frc_resolution_matches_analytic_expectation(sigma, m):
    # Each half holds Poisson(m) localizations per fluorophore, so for uniformly scattered fluorophores
    # E[FRC](q) = m·e/(1 + m·e) with e = exp(-4π²σ²q²); FRC = 1/7 at e = 1/(6m), i.e. R = 2πσ/√ln(6m).
    expected = 2 * np.pi * sigma / np.sqrt(np.log(6 * m))
    x, y, frame = _blinking(1, sigma, m)
    result = frc(x, y, frame, pixel_nm=2.0, n_blocks=20, n_splits=3, seed=0)
    assert result.resolution_nm == pytest.approx(expected, rel=0.08)
    assert all(r == pytest.approx(expected, rel=0.12) for r in result.split_resolutions_nm)


def test_frc_of_identical_images_is_one_and_of_independent_noise_is_near_zero():
    rng = np.random.default_rng(0)
    a = rng.poisson(3.0, (128, 128)).astype(np.float32)
    q, same = ring_correlation(a, a, 1.0)
    assert np.allclose(same[1:], 1.0)
    _, indep = ring_correlation(a, rng.poisson(3.0, (128, 128)).astype(np.float32), 1.0)
    assert abs(indep[5:].mean()) < 0.05
    assert threshold_crossing(q, same) is None


def test_time_block_split_does_not_overestimate_like_random_split():
    # With all localizations of a molecule in one time block, block splits see no shared molecules at
    # all, so there is no correlation at high q; random single-localization splits would find some.
    rng = np.random.default_rng(5)
    n = 2000
    fx, fy = rng.uniform(0, 2000, n), rng.uniform(0, 2000, n)
    owner = np.repeat(np.arange(n), 10)
    frame = owner * 5 + np.tile(np.arange(10), n) // 3  # each molecule's 10 localizations are consecutive
    x, y = fx[owner] + rng.normal(0, 5, len(owner)), fy[owner] + rng.normal(0, 5, len(owner))
    block = frc(x, y, frame, 2.0, n_blocks=20, n_splits=2)
    assert block.resolution_nm is None or block.resolution_nm > 100


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "algorithms.render", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def test_render_cli_and_registry_form(tmp_path):
    rng = np.random.default_rng(2)
    n = 5000
    table = LocTable.from_arrays(frame=rng.integers(0, 500, n), x=rng.uniform(0, 5000, n), y=rng.uniform(0, 4000, n),
                                 z=rng.uniform(-300, 300, n), sigma_x=rng.uniform(5, 15, n),
                                 sigma_y=rng.uniform(5, 15, n), channel=rng.integers(0, 2, n))
    src = write_table(table, tmp_path / "t.h5")[0]
    out = _run("render", str(src), "--png", str(tmp_path / "a.png"), "--tiff", str(tmp_path / "a.tif"),
               "--blur", "precision", "--bits", "16")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "a.png").is_file() and (tmp_path / "a.tif").is_file()
    (tmp_path / "in/table").mkdir(parents=True)
    src.rename(tmp_path / "in/table/t.h5")
    (tmp_path / "p.json").write_text(json.dumps({"color_by": "z", "pixel_nm": 20}))
    out = _run("render", "--inputs", str(tmp_path / "in"), "--outputs", str(tmp_path / "out"), "--params",
               str(tmp_path / "p.json"))
    assert out.returncode == 0, out.stderr
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"render.png", "render.tif", "render.json"}
    (tmp_path / "p.json").write_text(json.dumps({"pixel_nm": -1}))
    bad = _run("render", "--inputs", str(tmp_path / "in"), "--outputs", str(tmp_path / "bad"), "--params",
               str(tmp_path / "p.json"))
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and not (tmp_path / "bad").exists()


def test_qc_report_has_html_and_plots(tmp_path):
    x, y, frame = _blinking(4, 10.0, 5.0, n_fluor=500, size_nm=2000.0, frames=2000)
    n = len(x)
    table = LocTable.from_arrays({"px_size_nm": 100.0}, frame=frame, x=x, y=y, photons=np.full(n, 1000.0),
                                 sigma_x=np.full(n, 10.0), sigma_y=np.full(n, 10.0),
                                 drift_x=frame * 0.01, drift_y=-frame * 0.02)
    src = write_table(table, tmp_path / "t.h5")[0]
    out = _run("qc", str(src), str(tmp_path / "qc"))
    assert out.returncode == 0, out.stderr
    files = {p.name for p in (tmp_path / "qc").iterdir()}
    assert {"qc.html", "qc.json", "qc_subpixel.png", "qc_photons.png", "qc_sigma.png", "qc_per_frame.png",
            "qc_frc.png", "qc_drift.png"} <= files
    page = (tmp_path / "qc/qc.html").read_text()
    for name in files - {"qc.html", "qc.json"}:
        assert f'src="{name}"' in page
    summary = json.loads((tmp_path / "qc/qc.json").read_text())
    assert summary["localizations"] == n and summary["frc"]["resolution_nm"] > 0


def test_frc_refuses_a_single_time_block_and_reports_no_crossing_for_noise():
    rng = np.random.default_rng(9)
    x, y = rng.uniform(0, 1000, 500), rng.uniform(0, 1000, 500)
    with pytest.raises(ValueError, match="both halves"):
        frc(x, y, np.zeros(500, int), 5.0)
    noise = frc(x, y, rng.integers(0, 1000, 500), 5.0, n_splits=2)  # every point seen once: no shared structure
    assert noise.resolution_nm is None or noise.resolution_nm > 200


def test_frc_cli_writes_curve_and_resolution(tmp_path):
    x, y, frame = _blinking(6, 10.0, 5.0, n_fluor=1500, size_nm=2000.0, frames=5000)
    src = write_table(LocTable.from_arrays(frame=frame, x=x, y=y), tmp_path / "t.h5")[0]
    out = _run("frc", str(src), str(tmp_path / "frc"), "--pixel", "2", "--splits", "2")
    assert out.returncode == 0, out.stderr
    report = json.loads((tmp_path / "frc/frc.json").read_text())
    expected = 2 * np.pi * 10.0 / np.sqrt(np.log(6 * 5.0))
    assert report["resolution_nm"] == pytest.approx(expected, rel=0.12)
    assert (tmp_path / "frc/frc.png").read_bytes()[:4] == b"\x89PNG"
