"""Readers accept what writers write (issue 15, point 7), as a matrix generated from the registry: every file
the registry's entrypoints write goes into every input slot of the registry that names its suffix, and the
entrypoint behind that slot runs on it as a worker runs it (`command --inputs --outputs --params`, resolved
params). A file of the slot's kind (a localization table in a table slot, a movie in a frames slot, a model in a
model slot) must be accepted; a file of another kind (a drift curve in a .csv slot, a table where a calibration
goes) must be refused with exit 2 and one line that says so — never a traceback, never a silent result."""

from __future__ import annotations

import contextlib
import io
import json
import runpy
import shutil
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from algorithms.registry import Entrypoint, load

REGISTRY = load()
BUNDLED = Path(__file__).resolve().parents[2] / "algorithms" / "decode_plex" / "models" / "generic-2d-emccd.pt"
# The platform sends a Picasso table's .yaml with it and never offers the .yaml alone where its table goes
# (jobs.siblings): the matrix does the same.
SIBLINGS = {".hdf5": ".yaml"}
# What each slot takes, by kind; a slot not named here takes localization tables.
SLOT_KINDS = {"frames": {"movie", "image"}, "model": {"model"}, "calibration": {"calibration"},
              "transform": {"transform"}}
# Small, fast parameters for each program (the rest are the registry's defaults).
PARAMS = {
    "simulation/simulate": {"n_frames": 40, "frame_shape": [32, 32], "emitters_per_frame": 6, "seed": 3},
    "decode-plex/train": {"features": 8, "epochs": 1, "steps_per_epoch": 4, "batch_size": 2, "val_samples": 2},
    "decode-plex/fit": {"chunk": 16},
    "comet/run": {"split_half": False},
    "render/render": {"pixel_nm": 50},
    "io/convert": {"px_size_nm": 100.0},
    "evaluation/compare": {"px_size_nm": 100.0},
}


@dataclass
class Run:
    rc: int
    stderr: str
    outputs: list[Path]


def run(entry: Entrypoint, inputs: dict[str, list[Path]], workdir: Path, **params) -> Run:
    """The entrypoint in this process, as the worker agent calls it; an exception other than exit escapes."""
    slots = workdir / "inputs"
    for slot, files in inputs.items():
        (slots / slot).mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copy(f, slots / slot / f.name)
            if (sibling := SIBLINGS.get(f.suffix)) and f.with_suffix(sibling).exists():
                shutil.copy(f.with_suffix(sibling), slots / slot / f.with_suffix(sibling).name)
    (workdir / "outputs").mkdir(parents=True)
    resolved = entry.resolve_params({**PARAMS.get(f"{entry.application}/{entry.name}", {}), **params})
    (workdir / "params.json").write_text(json.dumps(resolved))
    module, *rest = entry.command[2:]
    argv = [module, *rest, "--inputs", str(slots), "--outputs", str(workdir / "outputs"),
            "--params", str(workdir / "params.json")]
    err = io.StringIO()
    saved = sys.argv
    sys.argv = argv
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        rc = 0
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else 1
    except Exception:  # a crash: listed with its traceback, as the worker would report it
        rc, err = -1, io.StringIO(traceback.format_exc())
    finally:
        sys.argv = saved
    return Run(rc, err.getvalue(), sorted(p for p in (workdir / "outputs").rglob("*") if p.is_file()))


def entry(key: str) -> Entrypoint:
    app, name = key.split("/")
    return REGISTRY.get(app, None, name)


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict[str, tuple[str, Path]]:
    """Every file the registry's writers produce on a small chain of real runs: {label: (kind, path)}."""
    from algorithms.comet.simulate import simulate_localizations
    from algorithms.io.formats import write_table

    tmp = tmp_path_factory.mktemp("writers")
    files: dict[str, tuple[str, Path]] = {}
    kinds = {"frames.tif": "movie", "model.pt": "model", "drift.csv": "drift"}

    def keep(key: str, result: Run, **kind_of: str) -> dict[str, Path]:
        assert result.rc == 0, f"{key}: {result.stderr}"
        found = {p.name: p for p in result.outputs}
        for name, path in found.items():
            if path.suffix in {".csv", ".h5", ".hdf5", ".yaml", ".mat", ".tif", ".tiff", ".pt"}:
                files[f"{key} → {name}"] = (kind_of.get(name, kinds.get(name, "table")), path)
        return found

    sim = keep("simulation/simulate", run(entry("simulation/simulate"), {}, tmp / "sim"))
    fit = keep("decode-plex/fit", run(entry("decode-plex/fit"), {"model": [BUNDLED], "frames": [sim["frames.tif"]]},
                                      tmp / "fit"))
    keep("decode-plex/train", run(entry("decode-plex/train"), {}, tmp / "train"), **{"checkpoint.pt": "checkpoint"})
    drifted = tmp / "drifted.h5"
    write_table(simulate_localizations(n_locs=4000, n_frames=400, seed=5).table, drifted, fmt="locus")
    keep("comet/run", run(entry("comet/run"), {"locs": [drifted]}, tmp / "comet"))
    for fmt in entry("io/convert").params_schema["properties"]["to"]["enum"]:
        keep(f"io/convert to {fmt}", run(entry("io/convert"), {"table": [fit["locs.h5"]]}, tmp / f"to-{fmt}", to=fmt))
    keep("render/render", run(entry("render/render"), {"table": [fit["locs.h5"]]}, tmp / "render"),
         **{"render.tif": "image", "render.tiff": "image"})
    return files


def readers() -> list[tuple[Entrypoint, str]]:
    """(entrypoint, slot) for every slot of every program, once per command (a GPU twin runs the same code)."""
    seen, found = set(), []
    for e in REGISTRY.entrypoints():
        if e.is_pipeline:
            continue
        for slot in e.inputs.values():
            key = (e.command[:4], slot.name)
            if slot.suffixes and key not in seen:
                seen.add(key)
                found.append((e, slot.name))
    return found


def companions(e: Entrypoint, slot: str, written: dict[str, tuple[str, Path]]) -> dict[str, list[Path]]:
    """The other inputs an entrypoint needs, each of its own kind."""
    by_label = {label: path for label, (_, path) in written.items()}
    need = {"decode-plex/fit": {"model": [BUNDLED], "frames": [by_label["simulation/simulate → frames.tif"]]},
            "evaluation/compare": {"truth": [by_label["simulation/simulate → truth.csv"]],
                                   "pred": [by_label["decode-plex/fit → locs.csv"]]}}
    return {k: v for k, v in need.get(f"{e.application}/{e.name}", {}).items() if k != slot}


def test_every_written_file_is_accepted_where_its_kind_goes_and_refused_clearly_elsewhere(written, tmp_path):
    assert {kind for kind, _ in written.values()} >= {"table", "movie", "model", "drift", "image"}
    outcomes, wrong = [], []
    for e, slot in readers():
        suffixes = e.inputs[slot].suffixes
        takes = SLOT_KINDS.get(slot, {"table"})
        for label, (kind, path) in written.items():
            if path.suffix not in suffixes:
                continue
            if path.suffix == ".yaml" and ".hdf5" in suffixes:
                continue  # it travels with its table
            workdir = tmp_path / f"{len(outcomes):03d}"
            result = run(e, {**companions(e, slot, written), slot: [path]}, workdir)
            outcomes.append((f"{e.application}/{e.name}", slot, label, result.rc))
            if kind in takes:
                ok = result.rc == 0
            else:
                message = result.stderr.strip().splitlines()
                ok = result.rc == 2 and len(message) == 1 and message[0].startswith("error: ")
            if not ok:
                wrong.append(f"{e.application}/{e.name} [{slot}] ← {label} ({kind}): rc {result.rc}: "
                             f"{result.stderr.strip()[-300:]}")
            shutil.rmtree(workdir, ignore_errors=True)
    assert len(outcomes) >= 40, outcomes
    assert not wrong, "\n".join(wrong)


def test_every_table_a_writer_produced_reads_back_as_the_table_it_was_written_from(written):
    """Accepted is not enough: each format the converter writes holds the fit's frames and positions (frame
    base and pixel convention included), read back through the readers every slot uses."""
    from algorithms.io.formats import read_table

    source = read_table(written["decode-plex/fit → locs.h5"][1])
    order = np.lexsort((source["x"], source["frame"]))
    checked = []
    for label, (kind, path) in written.items():
        if not label.startswith("io/convert") or kind != "table" or path.suffix == ".yaml":
            continue
        table = read_table(path)
        back = np.lexsort((table["x"], table["frame"]))
        assert len(table) == len(source), label
        np.testing.assert_array_equal(table["frame"][back], source["frame"][order], err_msg=label)
        for axis in ("x", "y"):
            np.testing.assert_allclose(table[axis][back], source[axis][order], atol=1e-3, err_msg=label)
        checked.append(label)
    assert len(checked) >= 6, checked


def test_every_program_that_reads_a_table_asks_for_its_pixel_size():
    """A table in pixels is readable in the browser only when the form has a pixel-size field."""
    missing = [f"{e.application}/{e.name}" for e, slot in readers()
               if slot not in SLOT_KINDS and "px_size_nm" not in e.params_schema.get("properties", {})]
    assert not missing, missing
