"""The simulation CLI: outputs, JSON progress, exit 2 with one line on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from algorithms.io.calibration import write_smap_3dcal
from algorithms.io.formats import read_table

ROOT = Path(__file__).resolve().parents[2]


def _run(tmp_path: Path, params: dict, *extra: str) -> subprocess.CompletedProcess:
    p = tmp_path / "params.json"
    p.write_text(json.dumps(params))
    cmd = [
        sys.executable,
        "-m",
        "algorithms.simulation",
        "simulate",
        "--params",
        str(p),
        "--outputs",
        str(tmp_path / "out"),
        *extra,
    ]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_cli_writes_frames_truth_preview_and_progress(tmp_path, spline, gauss_stack):
    cal = tmp_path / "beads_3dcal.mat"
    write_smap_3dcal(cal, [spline], [gauss_stack], version="7.3")
    params = {
        "n_frames": 30,
        "frame_shape": [40, 48],
        "camera": "smlm-challenge-emccd",
        "n_channels": 2,
        "photon_model": "biplane",
        "seed": 5,
        "backend": "cpu",
    }
    proc = _run(tmp_path, params, "--calibration", str(cal))
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(x) for x in proc.stdout.splitlines()]
    assert lines[0]["progress"] == 0.0 and lines[-1]["progress"] == 1.0
    out = tmp_path / "out"
    frames = tifffile.imread(out / "frames.tif")
    assert frames.shape == (30, 2, 40, 48) and frames.dtype == np.uint16
    assert frames.mean() > 100  # baseline 100 ADU plus signal
    # The truth is a table like any other: both files read back through the table readers, equal.
    head = (out / "truth.csv").read_text().splitlines()
    assert head[0].split(",")[:5] == ['"id"', '"frame"', '"x [nm]"', '"y [nm]"', '"z [nm]"']
    csv_truth, h5_truth = read_table(out / "truth.csv"), read_table(out / "truth.h5")
    assert len(csv_truth) == len(h5_truth) == len(head) - 1
    assert h5_truth.meta["source_format"] == "locus" and h5_truth["frame"].min() == 0
    np.testing.assert_array_equal(csv_truth["frame"], h5_truth["frame"])
    np.testing.assert_allclose(csv_truth["x"], h5_truth["x"], atol=1e-3)
    assert h5_truth["x"].max() < 48 * 100.0
    np.testing.assert_allclose(csv_truth["photons_c0"] + csv_truth["photons_c1"], csv_truth["photons"], rtol=1e-5)
    assert (out / "preview.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    meta = json.loads((out / "simulation.json").read_text())
    assert meta["camera"]["em_gain"] == 300.0
    assert not list(out.glob(".*.tmp"))


@pytest.mark.parametrize(
    "params, needle",
    [
        ({"camera": {"kind": "scmos", "em_gain": 1}}, "use em_gain: null"),
        ({"flux": {"dist": "fixed", "value": -5}}, "flux value must be >= 0"),
        ({"frame_shape": [8, 8], "psf": {"kind": "gaussian", "roi_px": 15}}, "larger than the frame"),
        ({"n_frames": 2, "colour": 1}, "unknown simulation parameter(s): colour"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(tmp_path, params, needle):
    proc = _run(tmp_path, {"n_frames": 2, **params})
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert "\n" not in err and needle in err and "Traceback" not in err


def test_cli_truncated_calibration_exits_2_naming_the_file(tmp_path, spline):
    cal = tmp_path / "broken_3dcal.mat"
    write_smap_3dcal(cal, [spline], version="7.3")
    cal.write_bytes(cal.read_bytes()[:4000])
    proc = _run(tmp_path, {"n_frames": 2}, "--calibration", str(cal))
    assert proc.returncode == 2 and "broken_3dcal.mat" in proc.stderr and proc.stderr.count("\n") == 1


def test_cli_reads_transforms_from_a_transform_input_slot(tmp_path):
    import scipy.io

    slot = tmp_path / "inputs" / "transform"
    slot.mkdir(parents=True)
    scipy.io.savemat(slot / "t.mat", {"T": [[1.0, 0.0, 2.0], [0.0, 1.0, -1.0], [0.0, 0.0, 1.0]]})
    params = {"n_frames": 3, "n_channels": 2, "frame_shape": [32, 32], "backend": "cpu"}
    proc = _run(tmp_path, params, "--inputs", str(tmp_path / "inputs"))
    assert proc.returncode == 0, proc.stderr
    meta = json.loads((tmp_path / "out" / "simulation.json").read_text())
    assert meta["params"]["transforms"][1][0][2] == 2.0
