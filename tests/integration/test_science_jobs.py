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
