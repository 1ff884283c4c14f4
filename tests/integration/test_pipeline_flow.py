"""A packaged pipeline end to end: a real worker agent runs each step, the portal's own Celery worker answers
the doorbell of each step's end, and the image, the drift plot and the QC report end up on one page."""

import io

import pytest
from django.test import Client

from algorithms.io.formats import write_table
from locus_client import Locus
from tests.integration.conftest import submit, wait_for_status

pytestmark = pytest.mark.integration


def test_drift_render_pipeline_runs_its_steps_in_order_on_real_processes(user, user_session, start_agent,
                                                                         portal_celery, tmp_path):
    from algorithms.comet.simulate import simulate_localizations

    sim = simulate_localizations(n_locs=20_000, n_frames=2000, drift_kind="random_walk", seed=7)
    path = tmp_path / "drifted.h5"
    write_table(sim.table, path, fmt="locus")
    s = user_session
    dataset = s.post(f"{s.base}/datasets/", json={"name": "pipeline"}, timeout=10).json()
    file_id = s.post(f"{s.base}/datasets/{dataset['id']}/files/",
                     files={"file": ("drifted.h5", io.BytesIO(path.read_bytes()))}, timeout=30).json()["id"]
    start_agent()
    pipeline_id = submit(s, "drift-render", {"render": {"pixel_nm": 20}}, {"locs": [file_id]},
                         application="pipeline")
    job = wait_for_status(s, pipeline_id, {"succeeded", "failed", "cancelled"}, timeout=300)
    assert job["status"] == "succeeded", (job["reason"], job["steps"])
    chain = {step["step"]: step for step in job["steps"]}
    assert list(chain) == ["drift", "render", "qc"] and {c["status"] for c in chain.values()} == {"succeeded"}
    assert chain["drift"]["finished_at"] <= chain["render"]["started_at"]  # a step starts after its input exists
    drift_outputs = {o["path"] for o in chain["drift"]["outputs"]}
    assert {"drift.png", "drifted_undrifted.h5"} <= drift_outputs
    render_job = s.get(f"{s.base}/jobs/{chain['render']['job']}/").json()
    assert [i["name"] for i in render_job["inputs"]] == ["drifted_undrifted.h5"]
    assert render_job["parent"] == pipeline_id and render_job["queue"] == "cpu"

    browser = Client()
    browser.force_login(user)
    page = browser.get(f"/jobs/{pipeline_id}/").content.decode()
    for name in ("render.png", "drift.png", "qc.json"):
        assert name in page, name

    # The Python client: every step's outputs in a folder of its own; a re-run from `render` runs only it
    # (`qc` needs `drift`, not `render`, so both are reused).
    locus = Locus(s.base.removesuffix("/api/v1"), s.headers["Authorization"].split()[1])
    files = locus.download_outputs(pipeline_id, tmp_path / "out")
    assert {"drift/drift.png", "render/render.png"} <= {p.relative_to(tmp_path / "out").as_posix() for p in files}
    again = locus.rerun(pipeline_id, "render")
    job = wait_for_status(s, again["id"], {"succeeded", "failed", "cancelled"}, timeout=300)
    assert job["status"] == "succeeded", job["reason"]
    assert [(c["step"], c["reused"], c["job"] == chain[c["step"]]["job"]) for c in job["steps"]] == [
        ("drift", True, True), ("render", False, False), ("qc", True, True)]
