"""The bundled DECODE-Plex model (algorithms/decode_plex/models/): the sidecar describes the file that ships, and
the model localizes the demo's movie through the fit CLI into a table the next steps (QC) accept."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from algorithms.decode_plex.bundled import GENERIC_2D_EMCCD, demo_movie, sidecar_path, training_params
from algorithms.decode_plex.train import load_model
from algorithms.evaluation import evaluate
from algorithms.evaluation.matching import match
from algorithms.io.formats import read_table

REPO = Path(__file__).resolve().parents[2]
ENV = {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}


def test_sidecar_describes_the_shipped_model_file():
    side = json.loads(sidecar_path().read_text())
    data = GENERIC_2D_EMCCD.read_bytes()
    assert side["sha256"] == hashlib.sha256(data).hexdigest() and side["size_bytes"] == len(data)
    assert len(data) < 5 * 2**20  # "a few MB at most": it is committed to the repository
    net, blob = load_model(GENERIC_2D_EMCCD)
    params = training_params()
    assert {k: blob["train_params"][k] for k in params} == params  # trained with the committed params file
    assert side["train_params"] == blob["train_params"] and side["code_version"] == blob["code_version"]
    assert side["parameters"] == net.n_parameters()
    assert blob["camera"] == "smlm-challenge-emccd" and net.cfg.channels == 1 and not net.cfg.three_d
    # validated on a movie drawn independently of training, and good enough to ship
    val = side["validation"]
    assert val["conditions"]["seed"] != params["seed"]
    assert val["conditions"]["density_per_um2"] != params["density_per_um2"]
    assert val["jaccard"] >= 0.85 and val["rmse_lat_over_crlb"] <= 1.5, val


def test_bundled_model_localizes_the_demo_movie_into_a_table_qc_accepts(tmp_path):
    movie, truth = demo_movie(n_frames=200)
    (tmp_path / "movie.tif").write_bytes(movie)
    fit = subprocess.run([sys.executable, "-m", "algorithms.decode_plex", "fit", "--model", str(GENERIC_2D_EMCCD),
                          "--frames", str(tmp_path / "movie.tif"), "--outputs", str(tmp_path / "fit")],
                         cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert fit.returncode == 0, fit.stderr
    pred = read_table(tmp_path / "fit" / "locs.h5")
    m = evaluate(truth, pred)
    # blinks of 1500-5000 photons on 30-60 photons/px along filaments; the truth keeps partial blinks (down to a
    # few photons), which make most of the misses and of the error. Measured: JI 0.89, precision 0.99, RMSE
    # 22.5 nm over all pairs, 12.3 nm over emitter-frames of ≥ 2000 photons (its checkpoint after 2 of 12 epochs: 15.1)
    assert m["jaccard"] >= 0.85 and m["precision"] >= 0.97 and m["rmse_lat"] <= 30.0, m
    pairs = match(truth, pred)
    bright = truth["photons"][pairs.truth] >= 2000
    t, q = pairs.truth[bright], pairs.pred[bright]
    rmse_bright = np.sqrt(np.mean((pred["x"][q] - truth["x"][t]) ** 2 + (pred["y"][q] - truth["y"][t]) ** 2))
    assert rmse_bright <= 14.0, rmse_bright
    # one pixel size, a number: QC, the SMAP and DECODE writers take it as such (a per-axis list broke them)
    assert pred.meta["px_size_nm"] == 100.0 and pred.meta["px_size_xy_nm"] == [100.0, 100.0]

    (tmp_path / "in" / "table").mkdir(parents=True)
    (tmp_path / "in" / "table" / "locs.h5").write_bytes((tmp_path / "fit" / "locs.h5").read_bytes())
    qc = subprocess.run([sys.executable, "-m", "algorithms.render", "qc", "--inputs", str(tmp_path / "in"),
                         "--outputs", str(tmp_path / "qc")], cwd=REPO, env=ENV, capture_output=True, text=True,
                        timeout=300)
    assert qc.returncode == 0, qc.stderr[-2000:]
    summary = json.loads((tmp_path / "qc" / "qc.json").read_text())
    assert summary["localizations"] == len(pred) and np.isfinite(summary["subpixel_chi2_dof_x"])
