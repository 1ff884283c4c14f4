"""`python -m algorithms.comet run`: outputs, format round trips, parameter schema, bad inputs (exit 2)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import h5py
import numpy as np
import pytest

from algorithms.cli import BadInput
from algorithms.comet.estimate import CometParams
from algorithms.comet.run import main
from algorithms.comet.simulate import drift_rmse, simulate_localizations
from algorithms.comet.tableio import read_table, write_table
from algorithms.io.table import LocTable

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sim():
    return simulate_localizations(20_000, 2_000, precision_nm=8.0, drift_kind="random_walk",
                                  drift_amplitude_nm=60.0, seed=7)


@pytest.mark.parametrize("suffix", [".csv", ".h5"])
def test_run_writes_corrected_table_drift_plot_and_summary(tmp_path, sim, suffix, capsys):
    src = tmp_path / f"locs{suffix}"
    write_table(sim.table, src, suffix.strip(".").replace("csv", "csv"))
    out = tmp_path / "out"
    assert main(["run", "--locs", str(src), "--outputs", str(out)]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert lines[-1]["progress"] == 1.0 and "split_half_precision_nm" in lines[-1]["metrics"]
    assert all(0.0 <= x["progress"] <= 1.0 for x in lines)
    corrected, _ = read_table(out / f"locs_undrifted{suffix}")
    assert set(corrected.columns) == set(sim.table.columns)  # every column kept
    drift = np.loadtxt(out / "drift.csv", delimiter=",", skiprows=1)
    assert drift.shape == (2_000, 1 + 2 + 2)  # frame, drift x/y, band x/y
    assert drift_rmse(drift[:, 1:3], sim.drift).max() < 1.5
    # corrected = input - drift of the frame
    np.testing.assert_allclose(corrected["x"], sim.table["x"] - drift[sim.table["frame"], 1], atol=1e-4)  # drift.csv: 4 decimals
    assert (out / "drift.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stats"]["pairs"] > 0 and len(summary["split_half_precision_nm"]) == 2


@pytest.mark.parametrize("fmt", ["csv", "h5"])
def test_format_round_trip_keeps_every_column(tmp_path, fmt):
    t = LocTable.from_arrays(frame=[0, 1, 2], x=[1.5, 2.5, 3.25], y=[4.0, 5.0, 6.0], z=[-10.0, 0.0, 10.0],
                             sigma_x=[5.0, 6.0, 7.0], sigma_y=[5.0, 6.0, 7.0], sigma_z=[12.0, 14.0, 16.0],
                             photons=[1000.0, 2000.0, 3000.0], channel=[0, 1, 0])
    path = tmp_path / f"t.{fmt}"
    write_table(t, path, fmt)
    back, got_fmt = read_table(path)
    assert got_fmt == fmt and list(back.columns) == list(t.columns)
    for name in t.columns:
        np.testing.assert_allclose(back[name], t[name], rtol=0, atol=1e-6)


def test_registry_form_reads_the_table_from_inputs_locs(tmp_path, sim):
    (tmp_path / "in" / "locs").mkdir(parents=True)
    write_table(sim.table, tmp_path / "in" / "locs" / "t.h5", "h5")
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"split_half": False, "backend": "cpu"}))
    args = ["run", "--inputs", str(tmp_path / "in"), "--outputs", str(tmp_path / "out"), "--params", str(params)]
    assert main(args) == 0
    assert (tmp_path / "out" / "t_undrifted.h5").is_file()


def test_params_schema_matches_the_estimator_parameters():
    schema = json.loads((ROOT / "algorithms" / "schemas" / "comet_run.json").read_text())
    # px_size_nm is for reading the table (in pixels, without its pixel size), not for the estimator.
    assert set(schema["properties"]) == {f.name for f in fields(CometParams)} | {"px_size_nm"}
    defaults = CometParams()
    for name, prop in schema["properties"].items():
        if name != "px_size_nm":
            assert prop["default"] == getattr(defaults, name), name


def _write_csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text(header + "\n" + "".join(r + "\n" for r in rows))
    return path


def _bad_inputs(tmp: Path) -> dict[str, tuple[Path, str]]:
    no_units = tmp / "nounits.h5"
    with h5py.File(no_units, "w") as f:
        for name, col in {"frame": [0, 1], "x": [1.0, 2.0], "y": [1.0, 2.0]}.items():
            f.create_dataset(name, data=np.asarray(col))
    return {
        "empty": (_write_csv(tmp / "empty.csv", "frame,x,y", []), "no localizations"),
        "missing": (_write_csv(tmp / "missing.csv", "frame,x", ["0,1", "1,2"]), "lacks column(s) y"),
        "one_frame": (_write_csv(tmp / "one.csv", "frame,x,y", ["3,1,1", "3,2,2"]), "one frame"),
        "nan": (_write_csv(tmp / "nan.csv", "frame,x,y", ["0,1,nan", "1,2,2"]), "NaN"),
        "pixels": (_write_csv(tmp / "px.csv", "frame,x [px],y [px]", ["0,1,1", "1,2,2"]), "--px-size"),
        "no_units": (no_units, "does not state its units"),
        "missing_file": (tmp / "nothere.csv", "not found"),
    }


@pytest.mark.parametrize("case", ["empty", "missing", "one_frame", "nan", "pixels", "no_units", "missing_file"])
def test_bad_input_exits_2_with_one_line_message(tmp_path, case):
    path, expected = _bad_inputs(tmp_path)[case]
    proc = subprocess.run(
        [sys.executable, "-m", "algorithms.comet", "run", "--locs", str(path), "--outputs", str(tmp_path / "o")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and expected in err, err


def test_unknown_parameter_is_bad_input(tmp_path, sim, capsys):
    write_table(sim.table, tmp_path / "t.csv", "csv")
    (tmp_path / "p.json").write_text(json.dumps({"sigma": 3}))
    from algorithms.cli import run_main

    code = run_main(main, ["run", "--locs", str(tmp_path / "t.csv"), "--outputs", str(tmp_path / "o"),
                           "--params", str(tmp_path / "p.json")])
    assert code == 2 and "unknown parameter(s): sigma" in capsys.readouterr().err


def test_a_table_in_pixels_takes_its_pixel_size_from_the_job_parameters(tmp_path):
    """The form's Camera pixel size reaches the reader (it was a command-line flag only)."""
    rng = np.random.default_rng(1)
    rows = [f"{f},{x:.3f},{y:.3f}" for f, x, y in zip(rng.integers(1, 401, 3000), rng.uniform(0, 100, 3000),
                                                     rng.uniform(0, 100, 3000), strict=True)]
    inputs = tmp_path / "in"
    (inputs / "locs").mkdir(parents=True)
    _write_csv(inputs / "locs" / "px.csv", "frame,x [px],y [px]", rows)
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"knot_frames": 100}))
    args = ["run", "--inputs", str(inputs), "--outputs", str(tmp_path / "out"), "--params", str(params)]
    with pytest.raises(BadInput, match="Camera pixel size"):  # refused, saying how to give it in the form
        main(args)
    params.write_text(json.dumps({"knot_frames": 100, "px_size_nm": 107.0}))
    assert main(args) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["input"] == "px.csv"
