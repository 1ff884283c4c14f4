"""The registry entry proposed for `comet/1.0` validates with the registry loader and its defaults run."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from algorithms import registry
from algorithms.comet.estimate import CometParams

ROOT = Path(__file__).resolve().parents[2]

# Kept in step with the entry handed over for algorithms/registry.yaml (issue 6).
ENTRY = """
comet:
  "1.0":
    default: true
    run:
      summary: Estimate and remove stage drift from a localization table (COMET-style, no fiducials)
      description: >
        Pairs of localizations across time are brought into register by maximising their Gaussian
        overlap, after blink merging and a coarse cross-correlation pre-pass; the drift is a cubic
        B-spline over frames, 0 at frame 0. Input: one table (nm, 0-based frames; .csv or .h5).
        Outputs: the corrected table in the input's format, drift.csv, drift.png with the split-half
        band, summary.json.
      command: [python, -m, algorithms.comet, run]
      inputs: {locs: {suffixes: [.csv, .h5, .hdf5], count: 1}}
      params: {$ref: schemas/comet_run.json}
      outputs: [table, drift, plot, summary]
      hardware: {gpu: 0, gpu_memory_gb: 0, cpu: 2, memory_gb: 8}
      timeout_s: 7200
      max_attempts: 2
    run_gpu:
      summary: Drift correction as `run`, with the pair cost on a GPU (CUDA kernel, CPU twin tested against it)
      command: [python, -m, algorithms.comet, run]
      inputs: {locs: {suffixes: [.csv, .h5, .hdf5], count: 1}}
      params: {$ref: schemas/comet_run.json}
      outputs: [table, drift, plot, summary]
      hardware: {gpu: 1, gpu_memory_gb: 8, cpu: 2, memory_gb: 16}
      timeout_s: 3600
      max_attempts: 2
"""


def test_proposed_registry_entry_validates_and_its_default_params_are_accepted(tmp_path):
    shutil.copytree(ROOT / "algorithms" / "schemas", tmp_path / "schemas")
    doc = yaml.safe_load((ROOT / "algorithms" / "registry.yaml").read_text())
    doc.update(yaml.safe_load(ENTRY))
    (tmp_path / "registry.yaml").write_text(yaml.safe_dump(doc))
    reg = registry.load(tmp_path / "registry.yaml")
    for name in ("run", "run_gpu"):
        ep = reg.get("comet", "1.0", name)
        params = ep.resolve_params({})
        assert params.pop("px_size_nm") is None  # read by the table reader, not the estimator (comet/run.py)
        CometParams.from_dict(params).validate()
    assert reg.get("comet", None, "run_gpu").queue == "gpu.8"
    assert reg.get("comet", None, "run").queue == "cpu"
