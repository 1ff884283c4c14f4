"""Two colours at the dissertation's ratios (appendix A.1: 0.21 and 0.02 photons in channel 1 per photon in
channel 0), simulator → fit → evaluation: colour assigned from the photons measured in each channel, where the
network's own per-channel photons left every localization at the average split (issue 20: colour accuracy at
chance, 0.47–0.53; here every one rejected)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from algorithms.decode_plex.postprocess import color_table
from algorithms.decode_plex.samples import SampleConfig, sample_batch
from algorithms.decode_plex.train import TrainConfig, train
from algorithms.evaluation import evaluate
from algorithms.io.formats import read_table, write_table
from algorithms.io.table import LocTable
from algorithms.simulation.render import simulate

REPO = Path(__file__).resolve().parents[2]
RATIOS = [0.21, 0.02]
SIM = SampleConfig(mode="multicolor", channels=2, three_d=False, frame_size=(32, 32), camera="perfect",
                   dye_ratios=RATIOS, photons=(1000.0, 8000.0), bg=(10.0, 60.0), density_per_um2=0.3)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A small model, 600 steps (~1 min on one core): it detects well and learns channel 1's photons poorly."""
    out = tmp_path_factory.mktemp("colour_model")
    tc = TrainConfig(epochs=6, steps_per_epoch=100, batch_size=16, lr=1e-3, schedule="cosine", val_samples=32,
                     seed=0, warmup_steps=50)
    train(SIM.model_config(features=16, depth=2), tc, lambda b, s: sample_batch(SIM, b, s), out,
          report=lambda *a, **k: None, extra={"camera": "perfect", "simulation": SIM.to_dict()})
    return out / "model.pt"


@pytest.fixture(scope="module")
def movie(tmp_path_factory) -> Path:
    """Another seed and a tenth of the training density (0.03 µm⁻²), 64 × 64 px, written as the simulator
    writes it: channels interleaved (TCYX) and the truth as a table with its `dye`."""
    folder = tmp_path_factory.mktemp("colour_movie")
    cfg = dataclasses.replace(SIM.simulation_config(777), n_frames=400, frame_shape=(64, 64), density_per_um2=0.03)
    res = simulate(cfg)
    tifffile.imwrite(folder / "frames.tif", np.clip(np.rint(res.adu), 0, 65535).astype(np.uint16),
                     metadata={"axes": "TCYX"})
    write_table(res.truth.select(res.truth["photons"] >= SIM.min_target_photons), folder / "truth.h5", fmt="locus")
    return folder


def test_two_colours_are_told_apart_at_low_density(model, movie, tmp_path):
    (tmp_path / "params.json").write_text(json.dumps({"dye_ratios": RATIOS}))
    done = subprocess.run([sys.executable, "-m", "algorithms.decode_plex", "fit", "--model", str(model), "--frames",
                           str(movie / "frames.tif"), "--params", str(tmp_path / "params.json"), "--outputs",
                           str(tmp_path / "fit")], cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "fit" / "fit_report.json").read_text())
    assert report["frames"] == 400 and report["color_photons"] == "photometry"
    truth, pred = read_table(movie / "truth.h5"), read_table(tmp_path / "fit" / "locs.h5")
    m = evaluate(truth, pred)
    assert m["tp"] > 200 and m["jaccard"] > 0.8, m
    # Measured: JI 0.945; colour right for 0.968 of all, 0.998 of those assigned, 3.0 % rejected (dim or partial
    # blinks) — the dissertation reports 0.998 with 3 % rejected. The network's own photons: every one rejected.
    assert m["color_accuracy_assigned"] >= 0.98 and m["rejection_rate"] <= 0.08, m

    # The same localizations coloured from the network's own per-channel photons: at chance or rejected.
    network = LocTable({k: v for k, v in pred.columns.items() if not k.startswith("photometry")}, dict(pred.meta))
    m_net = evaluate(truth, color_table(network, RATIOS))
    print(json.dumps({k: m[k] for k in ("jaccard", "tp", "color_accuracy", "color_accuracy_assigned",
                                        "rejection_rate")}), m_net["color_accuracy"], m_net["rejection_rate"])
    assert m_net["color_accuracy"] < m["color_accuracy"] - 0.3, (m_net["color_accuracy"], m["color_accuracy"])
