"""Science entrypoints run as platform jobs: a real agent renders, converts and QC-reports a table."""

import io

import numpy as np
import pytest

from algorithms.io.formats import write_table
from algorithms.io.table import LocTable
from tests.integration.conftest import submit, wait_for_status


@pytest.fixture
def table_file(user_session, tmp_path):
    rng = np.random.default_rng(3)
    n = 3000
    table = LocTable.from_arrays(
        meta={"px_size_nm": 100.0},
        frame=rng.integers(0, 500, n), x=rng.uniform(0, 3200, n), y=rng.uniform(0, 3200, n),
        photons=rng.uniform(500, 3000, n), sigma_x=np.full(n, 8.0), sigma_y=np.full(n, 8.0),
    )
    path = tmp_path / "locs.h5"
    write_table(table, path, fmt="locus")
    dataset = user_session.post(f"{user_session.base}/datasets/", json={"name": "locs"}, timeout=10).json()
    response = user_session.post(f"{user_session.base}/datasets/{dataset['id']}/files/",
                                 files={"file": ("locs.h5", io.BytesIO(path.read_bytes()))}, timeout=30)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_drift_correction_runs_as_a_job(user_session, start_agent, tmp_path):
    from algorithms.comet.simulate import simulate_localizations

    sim = simulate_localizations(n_locs=20_000, n_frames=2000, drift_kind="random_walk", seed=5)
    path = tmp_path / "drifted.h5"
    write_table(sim.table, path, fmt="locus")
    dataset = user_session.post(f"{user_session.base}/datasets/", json={"name": "drift"}, timeout=10).json()
    file_id = user_session.post(f"{user_session.base}/datasets/{dataset['id']}/files/",
                                files={"file": ("drifted.h5", io.BytesIO(path.read_bytes()))}, timeout=30).json()["id"]
    start_agent()
    job_id = submit(user_session, "run", {}, {"locs": [file_id]}, application="comet")
    job = wait_for_status(user_session, job_id, {"succeeded", "failed"}, timeout=240)
    assert job["status"] == "succeeded", job["reason"]
    names = {o["name"] for o in job["outputs"]}
    assert {"drift.csv", "drift.png"} <= names, names


@pytest.mark.parametrize(("application", "entrypoint", "params", "expected"), [
    ("render", "render", {"pixel_nm": 20}, ".png"),
    ("render", "qc", {}, ".html"),
    ("io", "convert", {"to": "picasso"}, ".hdf5"),
])
def test_science_entrypoint_runs_as_a_job(user_session, start_agent, table_file, application, entrypoint, params,
                                          expected):
    start_agent()
    job_id = submit(user_session, entrypoint, params, {"table": [table_file]}, application=application)
    job = wait_for_status(user_session, job_id, {"succeeded", "failed"}, timeout=180)
    log = user_session.get(f"{user_session.base}/jobs/{job_id}/logs/").json()["text"]
    assert job["status"] == "succeeded", (job["reason"], log[-2000:])
    names = [o["name"] for o in job["outputs"]]
    assert any(name.endswith(expected) for name in names), names


def _upload(session, dataset_id: str, path) -> str:
    response = session.post(f"{session.base}/datasets/{dataset_id}/files/",
                            files={"file": (path.name, io.BytesIO(path.read_bytes()))}, timeout=30)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _run(session, application: str, entrypoint: str, params: dict, inputs: dict, timeout: float = 600) -> dict:
    job_id = submit(session, entrypoint, params, inputs, application=application)
    job = wait_for_status(session, job_id, {"succeeded", "failed"}, timeout=timeout)
    log = session.get(f"{session.base}/jobs/{job_id}/logs/").json()["text"]
    assert job["status"] == "succeeded", (job["reason"], log[-2000:])
    return {o["name"]: o["id"] for o in job["outputs"]}


def test_decode_plex_train_fit_and_compare_run_as_jobs(user_session, start_agent, tmp_path):
    """train (GPU tier, runs on this CPU) → fit a simulated ADU movie → score it against its truth."""
    import dataclasses
    import json

    import tifffile

    from algorithms.decode_plex.samples import SampleConfig
    from algorithms.simulation.render import simulate

    camera = {"kind": "perfect", "baseline": 100.0, "e_per_adu": 0.5}
    sim = SampleConfig(frame_size=(32, 32), density_per_um2=0.2, photons=(2000.0, 6000.0), bg=(20.0, 50.0),
                       camera=camera)
    res = simulate(dataclasses.replace(sim.simulation_config(11), n_frames=20))
    tifffile.imwrite(tmp_path / "movie.tif", np.rint(res.adu[:, 0]).astype(np.uint16), photometric="minisblack")
    write_table(res.truth.select(res.truth["photons"] >= 100.0), tmp_path / "truth.csv")
    dataset = user_session.post(f"{user_session.base}/datasets/", json={"name": "plex"}, timeout=10).json()
    movie_id = _upload(user_session, dataset["id"], tmp_path / "movie.tif")
    truth_id = _upload(user_session, dataset["id"], tmp_path / "truth.csv")
    # the train and fit entrypoints ask for a GPU: this agent says it has one, torch finds none and uses the CPU
    # (one torch thread: several spin against each other on a busy 2-core machine)
    start_agent(extra_env={"LOCUS_FAKE_GPUS": '[{"name": "CPU runs it", "memory_gb": 24}]', "OMP_NUM_THREADS": "1"})
    trained = _run(user_session, "decode-plex", "train", {
        "frame_size": [32, 32], "density_per_um2": 0.2, "photons": [2000.0, 6000.0], "background": [20.0, 50.0],
        "camera": camera, "features": 8, "epochs": 4, "steps_per_epoch": 60, "batch_size": 8, "lr": 0.003,
        "schedule": "cosine", "warmup_steps": 20, "val_samples": 8}, {})
    assert {"model.pt", "train_history.json", "train_metrics.png"} <= set(trained)
    fitted = _run(user_session, "decode-plex", "fit", {"chunk": 8},
                  {"model": [trained["model.pt"]], "frames": [movie_id]})
    assert {"locs.h5", "locs.csv", "fit_report.json"} <= set(fitted)
    scored = _run(user_session, "evaluation", "compare", {}, {"truth": [truth_id], "pred": [fitted["locs.h5"]]})
    metrics = json.loads(user_session.get(f"{user_session.base}/files/{scored['metrics.json']}/download/",
                                          timeout=30).content)
    assert metrics["jaccard"] > 0.5, metrics
