"""Outputs are files like any other (design §9, issue 15 point 1): the API lists a dataset's files and a job's
outputs by id, every input picker of the new-job form offers job outputs grouped by job beside uploads,
"New job with these files" and "Use as input…" pre-fill the form, and the siblings a format needs (a Picasso
`.hdf5` table's `.yaml`) travel with the table: into the frozen spec, the claim payload and the worker's
scratch folder, where the reader finds them."""

from __future__ import annotations

import io
import re
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from jobs import services
from jobs.models import Dataset, File, Job
from tests.unit.test_worker_api import call, claim, put_output
from tests.unit.worker_fake_portal import FakePortal, sha256
from workers.client import Backoff, WorkerClient
from workers.runner import AttemptRun, RunnerSettings

pytestmark = pytest.mark.django_db

HDF5, YAML = b"\x89HDF\r\n\x1a\n picasso locs", b"Pixelsize: 100\n"


@pytest.fixture
def browser(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def add(dataset: Dataset, name: str, data: bytes) -> File:
    return services.add_file(dataset, name, io.BytesIO(data))


def finished_job(user, worker, outputs: dict[str, bytes], age_minutes: int = 0) -> Job:
    """A `diagnostics checksum` job a worker ran, with `outputs` (relative paths → bytes) registered."""
    dataset = Dataset.objects.create(owner=user, name=f"seed {len(outputs)} {age_minutes}")
    seed = add(dataset, "seed.txt", b"seed")
    job, _ = services.submit(user, application="diagnostics", entrypoint="checksum",
                             inputs={"files": [str(seed.pk)]}, notify="never")
    body = claim(worker, job.pk).json()
    done = call(worker, body, "complete", {"exit_code": 0, "failure_class": None, "outputs": [
        put_output(body, worker, name, data) for name, data in outputs.items()]})
    assert done.json()["job_status"] == "succeeded", done.content
    if age_minutes:
        Job.objects.filter(pk=job.pk).update(created_at=timezone.now() - timedelta(minutes=age_minutes))
    job.refresh_from_db()
    return job


def output(job: Job, path: str) -> File:
    return job.outputs.get(key__endswith=f"/{path}")


# --- the API ---------------------------------------------------------------------------------------------

def test_a_datasets_files_are_listed_by_get_with_the_ids_inputs_take(api, other_api, dataset):
    """`GET /api/v1/datasets/<id>/files/` answered 405: only the upload (POST) was routed."""
    b, a = add(dataset, "b.tif", b"bb"), add(dataset, "a.tif", b"a")
    response = api.get(f"/api/v1/datasets/{dataset.pk}/files/")
    assert response.status_code == 200, response.content
    assert [(f["id"], f["name"], f["size"]) for f in response.json()] == [(str(a.pk), "a.tif", 1),
                                                                          (str(b.pk), "b.tif", 2)]
    assert other_api.get(f"/api/v1/datasets/{dataset.pk}/files/").status_code == 404  # not 403: no leak
    assert api.options(f"/api/v1/datasets/{dataset.pk}/files/").status_code == 200


def test_files_list_filters_by_job_dataset_kind_and_suffix(api, other_api, user, worker, dataset):
    upload = add(dataset, "movie.tif", b"frames")
    job = finished_job(user, worker, {"locs.hdf5": HDF5, "locs.yaml": YAML, "render.png": b"png"})

    def ids(query: str, client: APIClient = api) -> set[str]:
        response = client.get(f"/api/v1/files/?{query}")
        assert response.status_code == 200, response.content
        return {f["id"] for f in response.json()}

    outputs = {str(f.pk) for f in job.outputs.all()}
    assert ids(f"job={job.pk}") == outputs
    assert ids(f"job={job.pk}&suffix=.hdf5,yaml") == {str(output(job, "locs.hdf5").pk),
                                                      str(output(job, "locs.yaml").pk)}
    assert ids(f"dataset={dataset.pk}") == {str(upload.pk)}
    assert ids("kind=output") == outputs
    assert str(upload.pk) in ids("kind=upload") and not ids("kind=upload") & outputs
    assert ids(f"job={job.pk}", other_api) == set()  # someone else's job: nothing, and no sign it exists
    bad = api.get("/api/v1/files/?job=not-an-id")
    assert bad.status_code == 400 and bad.json()["error"]["fields"]["job"]
    assert api.get("/api/v1/files/?kind=everything").status_code == 400


def test_a_jobs_outputs_carry_file_ids_that_a_new_job_takes_as_inputs(api, user, worker):
    job = finished_job(user, worker, {"ch0/locs.csv": b"frame,x [nm],y [nm]\n0,1,2\n"})
    outputs = api.get(f"/api/v1/jobs/{job.pk}/outputs/").json()
    assert [(o["path"], o["job"]) for o in outputs] == [("ch0/locs.csv", str(job.pk))]
    response = api.post("/api/v1/jobs/", {"application": "comet", "entrypoint": "run",
                                          "inputs": {"locs": [outputs[0]["id"]]}}, format="json")
    assert response.status_code == 201, response.content
    assert [i["name"] for i in response.json()["inputs"]] == ["locs.csv"]


# --- siblings travel with their table ---------------------------------------------------------------------

def test_a_picasso_table_from_a_dataset_brings_its_yaml_into_the_spec_and_the_claim(user, worker, dataset):
    """COMET's slot takes one file: the .yaml could not be attached, and the reader had no pixel size."""
    table = add(dataset, "locs.hdf5", HDF5)
    yaml = add(dataset, "locs.yaml", YAML)
    add(dataset, "other.yaml", b"Pixelsize: 160\n")  # another table's: stays home
    job, _ = services.submit(user, application="comet", entrypoint="run", inputs={"locs": [str(table.pk)]})
    assert [(i["slot"], i["name"], i.get("sibling_of")) for i in job.spec["inputs"]] == [
        ("locs", "locs.hdf5", None), ("locs", "locs.yaml", str(table.pk))]
    assert job.spec["inputs"][1]["sha256"] == sha256(YAML) and job.spec["inputs"][1]["size"] == len(YAML)
    assert set(job.inputs.all()) == {table, yaml}  # so a dataset in use cannot be deleted under it

    body = claim(worker, job.pk).json()
    items = {i["name"]: i for i in body["inputs"]}
    assert set(items) == {"locs.hdf5", "locs.yaml"} and items["locs.yaml"]["slot"] == "locs"
    assert items["locs.yaml"]["sibling_of"] == str(table.pk)
    path = items["locs.yaml"]["url"].split("://", 1)[1].split("/", 1)[1]
    got = APIClient().get("/" + path)  # the scoped transfer URL serves the sibling's bytes
    assert got.status_code == 200 and b"".join(got.streaming_content) == YAML


def test_a_picasso_raw_movie_brings_the_yaml_that_describes_its_frames(user, dataset):
    movie = add(dataset, "movie.raw", bytes(2 * 8 * 8))
    add(dataset, "movie.yaml", b"Width: 8\nHeight: 8\nFrames: 1\nData Type: uint16\nByte Order: <\n")
    model = add(dataset, "model.pt", b"weights")
    job, _ = services.submit(user, application="decode-plex", entrypoint="fit",
                             inputs={"frames": [str(movie.pk)], "model": [str(model.pk)]}, params={"device": "cpu"})
    assert [(i["slot"], i["name"], i.get("sibling_of")) for i in job.spec["inputs"] if i["slot"] == "frames"] == [
        ("frames", "movie.raw", None), ("frames", "movie.yaml", str(movie.pk))]


def test_a_picasso_table_among_a_jobs_outputs_brings_the_yaml_of_its_own_folder(user, worker):
    job = finished_job(user, worker, {"ch0/locs.hdf5": HDF5, "ch0/locs.yaml": YAML,
                                      "ch1/locs.hdf5": HDF5 + b"1", "ch1/locs.yaml": b"Pixelsize: 160\n"})
    table = output(job, "ch1/locs.hdf5")
    new, _ = services.submit(user, application="comet", entrypoint="run", inputs={"locs": [str(table.pk)]})
    assert [(i["file"], i.get("sibling_of")) for i in new.spec["inputs"]] == [
        (str(table.pk), None), (str(output(job, "ch1/locs.yaml").pk), str(table.pk))]


def test_a_sibling_is_not_added_twice_nor_to_an_any_file_slot(user, dataset):
    table, yaml = add(dataset, "locs.hdf5", HDF5), add(dataset, "locs.yaml", YAML)
    picked_both, _ = services.submit(user, application="render", entrypoint="render",
                                     inputs={"table": [str(table.pk), str(yaml.pk)]})
    assert [i["name"] for i in picked_both.spec["inputs"]] == ["locs.hdf5", "locs.yaml"]
    assert not any(i.get("sibling_of") for i in picked_both.spec["inputs"])
    checksum, _ = services.submit(user, application="diagnostics", entrypoint="checksum",
                                  inputs={"files": [str(table.pk)]})
    assert [i["name"] for i in checksum.spec["inputs"]] == ["locs.hdf5"]  # takes files as they are


def test_rerun_clone_and_requeue_leave_the_sibling_to_submit(browser, user, dataset):
    table = add(dataset, "locs.hdf5", HDF5)
    add(dataset, "locs.yaml", YAML)
    job, _ = services.submit(user, application="comet", entrypoint="run", inputs={"locs": [str(table.pk)]})
    assert services.picked_inputs(job.spec) == {"locs": [str(table.pk)]}
    response = browser.post(f"/jobs/{job.pk}/rerun/")
    copy = Job.objects.exclude(pk=job.pk).get()
    assert response["Location"] == f"/jobs/{copy.pk}/"
    assert copy.spec["inputs"] == job.spec["inputs"]
    page = browser.get(f"/jobs/new/?clone={job.pk}").content.decode()
    assert re.search(rf'value="{table.pk}"[^>]*checked', page)


def test_the_worker_lays_the_sibling_beside_the_table_and_comet_reads_the_pixel_size(tmp_path):
    """The claim's items as the portal sends them, run by the real agent and the real COMET entrypoint."""
    import numpy as np

    from algorithms.io.formats import write_table
    from algorithms.io.table import LocTable

    rng = np.random.default_rng(7)
    owner = np.repeat(np.arange(150), rng.poisson(6, 150))
    n = len(owner)
    fx, fy, frame = rng.uniform(0, 2000, 150), rng.uniform(0, 2000, 150), np.sort(rng.integers(0, 300, n))
    table = LocTable.from_arrays({"px_size_nm": 100.0}, frame=frame, x=fx[owner] + rng.normal(0, 8, n),
                                 y=fy[owner] + rng.normal(0, 8, n), photons=rng.gamma(4, 250, n),
                                 bg=rng.uniform(5, 15, n), sigma_x=np.full(n, 8.0), sigma_y=np.full(n, 8.0))
    written = write_table(table, tmp_path / "locs.hdf5", fmt="picasso")
    assert [p.name for p in written] == ["locs.hdf5", "locs.yaml"]
    portal = FakePortal(lease_s=5).start()
    try:
        _, token = portal.add_worker()
        client = WorkerClient(portal.url, token, timeout_s=10, backoff=Backoff(retries=3, base_s=0.01))
        inputs = []
        for path in written:
            data = path.read_bytes()
            inputs.append({"slot": "locs", "name": path.name, "size": len(data), "sha256": sha256(data),
                           "url": portal.add_file(path.name, data),
                           **({"sibling_of": "table-id"} if path.suffix == ".yaml" else {})})
        spec = {"application": "comet", "version": "1.0", "entrypoint": "run", "code_version": "test",
                "command": ["python", "-m", "algorithms.comet", "run"], "params": {}, "timeout_s": 120,
                "hardware": {"gpu": 0, "gpu_memory_gb": 0, "cpu": 1, "memory_gb": 1}}
        job_id = portal.add_job(spec, inputs)
        body = client.claim(job_id)
        outcome = AttemptRun(client, body, RunnerSettings(scratch=tmp_path / "scratch", grace_s=1.0)).run()
        done = portal.attempts[body["attempt_id"]]
        assert outcome.job_status == "succeeded", done.log[-2000:]
        assert {o["name"] for o in done.completion["outputs"]} >= {"locs_undrifted.hdf5", "locs_undrifted.yaml",
                                                                    "drift.csv"}
        assert '"file": "locs.hdf5"' in done.log  # the table, not the .yaml beside it, was read
    finally:
        portal.stop()


# --- the browser form ---------------------------------------------------------------------------------------

def test_pickers_offer_job_outputs_grouped_by_job_newest_first_beside_uploads(browser, user, worker, dataset):
    add(dataset, "upload.csv", b"frame,x [nm],y [nm]\n")
    older = finished_job(user, worker, {"old.csv": b"frame,x [nm],y [nm]\n"}, age_minutes=60)
    newer = finished_job(user, worker, {"locs.hdf5": HDF5, "locs.yaml": YAML, "render.png": b"png"})
    page = browser.get("/jobs/new/?application=comet&entrypoint=run").content.decode()
    locs = page.split('data-slot="locs"')[1].split("</form>")[0]
    assert locs.index("Uploaded files") < locs.index("upload.csv") < locs.index("Job outputs")
    assert locs.index(f'data-group="job-{newer.pk}"') < locs.index(f'data-group="job-{older.pk}"')
    assert f"diagnostics · checksum · {str(newer.pk)[:8]} · " in locs  # application · entrypoint · id · date
    assert "locs.hdf5" in locs and "+ locs.yaml" in locs  # the .yaml goes with its table, not on its own
    assert 'data-name="locs.yaml"' not in locs and "render.png" not in locs and "old.csv" in locs
    # A slot that takes .yaml files on their own still offers the .yaml beside no table of its kind.
    render = browser.get("/jobs/new/?application=render&entrypoint=render").content.decode()
    assert 'data-name="locs.hdf5"' in render and 'data-name="locs.yaml"' not in render


def test_many_outputs_fold_into_groups_with_a_filter_and_the_selection_stays_open(browser, user, worker):
    job = finished_job(user, worker, {f"run{i:02d}.csv": b"frame,x [nm],y [nm]\n" for i in range(14)})
    picked = output(job, "run07.csv")
    page = browser.get(f"/jobs/new/?application=comet&entrypoint=run&file={picked.pk}").content.decode()
    assert 'class="pick-filter"' in page and "file_pick.js" in page
    assert re.search(rf'data-group="job-{job.pk}" open', page)  # folded, except where something is picked
    assert re.search(rf'value="{picked.pk}"[^>]*checked', page)
    assert '<span class="tag picked">run07.csv</span>' in page


def test_new_job_with_these_files_prefills_the_slots_from_a_jobs_outputs(browser, user, worker):
    """The button opened an empty form."""
    job = finished_job(user, worker, {"locs.hdf5": HDF5, "locs.yaml": YAML, "notes.txt": b"n"})
    table = output(job, "locs.hdf5")
    detail = browser.get(f"/jobs/{job.pk}/").content.decode()
    assert f'id="new-job-with-outputs" href="/jobs/new/?job={job.pk}"' in detail
    steps = browser.get(f"/jobs/new/?job={job.pk}").content.decode()
    assert 'id="offered-files"' in steps and f'href="?application=comet&amp;job={job.pk}"' in steps
    form = browser.get(f"/jobs/new/?application=comet&entrypoint=run&job={job.pk}").content.decode()
    assert re.search(rf'name="input.locs" value="{table.pk}"[^>]*checked', form)
    assert 'id="unplaced">Not used: notes.txt' in form  # the .yaml is not "unused": it goes with the table
    submitted = browser.post(f"/jobs/new/?application=comet&entrypoint=run&job={job.pk}",
                             {"input.locs": [str(table.pk)], "notify": "never"})
    new = Job.objects.get(application="comet")
    assert submitted.status_code == 302 and [i["name"] for i in new.spec["inputs"]] == ["locs.hdf5", "locs.yaml"]


def test_where_more_files_fit_a_slot_than_it_takes_none_is_guessed(browser, user, worker):
    job = finished_job(user, worker, {"drift.csv": b"frame,drift_x_nm\n", "locs.hdf5": HDF5, "locs.yaml": YAML})
    form = browser.get(f"/jobs/new/?application=comet&entrypoint=run&job={job.pk}").content.decode()
    boxes = re.findall(r'<input type="checkbox" name="input.locs"[^>]*>', form)
    assert len(boxes) == 2 and not any("checked" in box for box in boxes)
    assert re.search(r'data-choose-for="locs">drift.csv, locs.hdf5 all fit locs, which takes exactly 1', form)
    assert 'id="unplaced"' not in form


def test_new_job_with_these_files_from_a_dataset_prefills_its_files(browser, user, dataset):
    table = add(dataset, "locs.hdf5", HDF5)
    add(dataset, "locs.yaml", YAML)
    page = browser.get(f"/datasets/{dataset.pk}/").content.decode()
    assert f'href="/jobs/new/?dataset={dataset.pk}"' in page
    form = browser.get(f"/jobs/new/?application=render&entrypoint=render&dataset={dataset.pk}").content.decode()
    assert re.search(rf'value="{table.pk}"[^>]*checked', form) and 'id="unplaced"' not in form


def test_use_as_input_lists_the_entrypoints_that_take_the_output(browser, user, worker):
    job = finished_job(user, worker, {"locs.hdf5": HDF5, "locs.yaml": YAML})
    table = output(job, "locs.hdf5")
    page = browser.get(f"/jobs/{job.pk}/").content.decode()
    menu = page.split('data-use-as="locs.hdf5"')[1].split("</details>")[0]
    assert (f'href="/jobs/new/?application=comet&amp;version=1.0&amp;entrypoint=run&amp;file={table.pk}"'
            in menu)
    assert 'data-next="render · render"' in menu and 'data-next="simulation' not in menu
    assert 'data-use-as="locs.yaml"' not in page and "goes with locs.hdf5" in page
    form = browser.get(f"/jobs/new/?application=comet&version=1.0&entrypoint=run&file={table.pk}").content.decode()
    assert re.search(rf'name="input.locs" value="{table.pk}"[^>]*checked', form)


def test_a_link_cannot_offer_someone_elses_file(browser, other_user):
    theirs = Dataset.objects.create(owner=other_user, name="theirs")
    file = add(theirs, "locs.csv", b"frame,x [nm],y [nm]\n")
    page = browser.get(f"/jobs/new/?application=comet&entrypoint=run&file={file.pk}&dataset={theirs.pk}")
    assert page.status_code == 200 and str(file.pk) not in page.content.decode()

