"""Pipelines (design §9): declared beside the registry, a job per step started when its inputs exist, the
outputs of one step as the inputs of the next, failure naming the step, cancel, re-run from a step, and the
sweep answering a lost doorbell. Workers are played through the worker API, as an agent would."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from django.core import mail

from algorithms import registry as reg
from jobs import pipelines, services, tasks
from jobs.models import Job
from jobs.registry import get_registry
from tests.conftest import play_attempt

pytestmark = pytest.mark.django_db

REGISTRY = """
diagnostics:
  "1.0":
    checksum:
      summary: Checksums
      command: [python, -m, algorithms.diagnostics, checksum]
      inputs: {files: {suffixes: [], count: "1.."}}
      params: {type: object, additionalProperties: false,
               properties: {copy: {type: boolean, default: false}}}
      outputs: [checksums]
      hardware: {gpu: 0, gpu_memory_gb: 0, cpu: 1, memory_gb: 1}
      timeout_s: 900
      max_attempts: 1
"""
PIPELINES = """
chain:
  summary: Copy the movies, copy the copies, then checksum both reports
  inputs: {files: {suffixes: [.tif], count: "1.."}}
  steps:
    first: {run: diagnostics/checksum, inputs: {files: "input:files"}, params: {copy: true}}
    second: {run: diagnostics/checksum, inputs: {files: "first:copy-*.tif"}}
    report: {run: diagnostics/checksum, inputs: {files: ["first:checksums.json", "second:checksums.json"]}}
"""


def write_registry(tmp_path, pipelines_yaml: str) -> Path:
    path = tmp_path / "registry.yaml"
    path.write_text(REGISTRY)
    (tmp_path / "pipelines.yaml").write_text(pipelines_yaml)
    return path


@pytest.fixture
def chain_registry(tmp_path, settings):
    settings.LOCUS_REGISTRY_PATH = str(write_registry(tmp_path, PIPELINES))
    get_registry.cache_clear()
    yield get_registry()
    get_registry.cache_clear()


@pytest.fixture
def movie(dataset):
    return services.add_file(dataset, "movie.tif", io.BytesIO(b"II*\x00movie"))


def submit_chain(api, movie, capture) -> Job:
    with capture(execute=True):
        response = api.post("/api/v1/jobs/", {"application": "pipeline", "entrypoint": "chain", "notify": "always",
                                              "inputs": {"files": [str(movie.pk)]}}, format="json")
    assert response.status_code == 201, response.content
    return Job.objects.get(pk=response.json()["id"])


def step(pipeline: Job, name: str) -> Job:
    return Job.objects.get(parent=pipeline, step=name)


def test_each_step_starts_when_the_one_before_succeeded_with_its_outputs_as_inputs(
        api, worker, movie, chain_registry, django_capture_on_commit_callbacks):
    pipeline = submit_chain(api, movie, django_capture_on_commit_callbacks)
    assert pipeline.status == "running" and pipeline.queue == "pipeline" and pipeline.attempts.count() == 0
    assert [j.step for j in pipeline.steps.all()] == ["first"]
    first = step(pipeline, "first")
    assert first.status == "queued" and first.queue == "cpu" and first.params["copy"] is True
    assert [f.pk for f in first.inputs.all()] == [movie.pk] and first.notify == "never"

    with django_capture_on_commit_callbacks(execute=True):
        play_attempt(worker, first, {"copy-movie.tif": b"II*\x00movie", "checksums.json": b"{}", "log.txt": b"x"})
    second = step(pipeline, "second")
    assert [f.output_path for f in second.inputs.all()] == ["copy-movie.tif"]  # the pattern, not log.txt
    assert [f.job_id for f in second.inputs.all()] == [first.pk]
    assert not pipeline.steps.filter(step="report").exists()  # it needs `second` too

    with django_capture_on_commit_callbacks(execute=True):
        play_attempt(worker, second, {"checksums.json": b'{"second": 1}'})
    report = step(pipeline, "report")
    assert sorted((f.job.step, f.name) for f in report.inputs.all()) == [("first", "checksums.json"),
                                                                          ("second", "checksums.json")]
    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        play_attempt(worker, report, {"checksums.json": b"{}"})
    pipeline.refresh_from_db()
    assert pipeline.status == "succeeded" and pipeline.progress == 1.0
    assert len(mail.outbox) == 1 and "succeeded" in mail.outbox[0].subject  # the pipeline's, not a step's
    detail = api.get(f"/api/v1/jobs/{pipeline.pk}/").json()
    assert [(s["step"], s["status"]) for s in detail["steps"]] == [
        ("first", "succeeded"), ("second", "succeeded"), ("report", "succeeded")]
    assert detail["steps"][0]["outputs"][0]["path"] == "checksums.json"
    paths = [o["path"] for o in api.get(f"/api/v1/jobs/{pipeline.pk}/outputs/").json()]
    assert paths == ["first/checksums.json", "first/copy-movie.tif", "first/log.txt", "second/checksums.json",
                     "report/checksums.json"]  # what the Python client downloads, one folder per step
    assert api.get(f"/api/v1/jobs/{first.pk}/").json()["parent"] == str(pipeline.pk)


def test_a_failing_step_fails_the_pipeline_naming_it(api, worker, movie, chain_registry,
                                                      django_capture_on_commit_callbacks):
    pipeline = submit_chain(api, movie, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        play_attempt(worker, step(pipeline, "first"), {"copy-movie.tif": b"II*\x00", "checksums.json": b"{}"})
    with django_capture_on_commit_callbacks(execute=True):
        play_attempt(worker, step(pipeline, "second"), {}, exit_code=1)
    pipeline.refresh_from_db()
    assert pipeline.status == "failed" and pipeline.reason.startswith("step second (diagnostics checksum) failed")
    assert not pipeline.steps.filter(step="report").exists()
    chain = api.get(f"/api/v1/jobs/{pipeline.pk}/").json()["steps"]
    assert [s["status"] for s in chain] == ["succeeded", "failed", "not run"]


def test_a_step_whose_inputs_were_not_written_fails_the_pipeline_with_the_reason(
        api, worker, movie, chain_registry, django_capture_on_commit_callbacks):
    pipeline = submit_chain(api, movie, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        play_attempt(worker, step(pipeline, "first"), {"checksums.json": b"{}"})  # no copy-*.tif
    pipeline.refresh_from_db()
    assert pipeline.status == "failed"
    assert pipeline.reason.startswith("step second could not start: inputs.files: needs at least 1 file(s), got 0")


def test_cancelling_a_pipeline_cancels_its_running_step_and_starts_no_other(
        api, worker, movie, chain_registry, django_capture_on_commit_callbacks):
    pipeline = submit_chain(api, movie, django_capture_on_commit_callbacks)
    first = step(pipeline, "first")
    body = worker.post(f"/api/v1/worker/jobs/{first.pk}/claim").json()
    with django_capture_on_commit_callbacks(execute=True):
        assert api.post(f"/api/v1/jobs/{pipeline.pk}/cancel/").status_code == 200
    pipeline.refresh_from_db()
    first.refresh_from_db()
    assert pipeline.status == "cancelled" and first.status == "cancelled"
    beat = worker.post(f"/api/v1/worker/attempts/{body['attempt_id']}/heartbeat", {}, format="json",
                       HTTP_X_FENCING_TOKEN=body["fencing_token"])
    assert beat.json()["directive"] == "cancel"
    assert pipeline.steps.count() == 1


def test_rerun_from_a_step_reuses_the_steps_before_it(api, worker, movie, chain_registry,
                                                      django_capture_on_commit_callbacks):
    pipeline = submit_chain(api, movie, django_capture_on_commit_callbacks)
    first = step(pipeline, "first")
    with django_capture_on_commit_callbacks(execute=True):
        play_attempt(worker, first, {"copy-movie.tif": b"II*\x00", "checksums.json": b"{}"})
    with django_capture_on_commit_callbacks(execute=True):
        play_attempt(worker, step(pipeline, "second"), {}, exit_code=1)
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(f"/api/v1/jobs/{pipeline.pk}/rerun/", {"from_step": "second"}, format="json")
    assert response.status_code == 201, response.content
    again = Job.objects.get(pk=response.json()["id"])
    assert again.status == "running" and again.spec["pipeline"]["reused"] == {"first": str(first.pk)}
    assert [j.step for j in again.steps.all()] == ["second"]  # first is not run again
    second = step(again, "second")
    assert [f.job_id for f in second.inputs.all()] == [first.pk]
    assert "reusing first" in again.events.get(kind="rerun").message
    bad = api.post(f"/api/v1/jobs/{pipeline.pk}/rerun/", {"from_step": "nope"}, format="json")
    assert bad.status_code == 400 and "step" in bad.json()["error"]["fields"]


def test_the_sweep_advances_a_pipeline_whose_doorbell_was_lost(api, worker, movie, chain_registry,
                                                               django_capture_on_commit_callbacks):
    pipeline = submit_chain(api, movie, django_capture_on_commit_callbacks)
    play_attempt(worker, step(pipeline, "first"), {"copy-movie.tif": b"II*\x00", "checksums.json": b"{}"})
    assert not pipeline.steps.filter(step="second").exists()  # no commit callbacks: the doorbell was lost
    with django_capture_on_commit_callbacks(execute=True):
        tasks.sweep_leases()
    assert step(pipeline, "second").status == "queued"
    with django_capture_on_commit_callbacks(execute=True):
        tasks.sweep_leases()  # a second pass changes nothing
    assert pipeline.steps.filter(step="second").count() == 1


def test_pipelines_are_listed_with_their_steps_and_params_per_step(api, chain_registry):
    apps = {a["name"]: a for a in api.get("/api/v1/applications/").json()}
    chain = apps["pipeline"]["versions"][0]["entrypoints"][0]
    assert chain["name"] == "chain" and list(chain["inputs"]) == ["files"] and chain["queue"] == "pipeline"
    assert [(s["name"], s["needs"]) for s in chain["steps"]] == [("first", []), ("second", ["first"]),
                                                                  ("report", ["first", "second"])]
    assert set(chain["params"]["properties"]) == {"first", "second", "report"}
    assert chain["params"]["properties"]["first"]["properties"]["copy"]["default"] is True


def test_step_params_are_validated_at_submission_naming_the_step(api, movie, chain_registry):
    response = api.post("/api/v1/jobs/", {"application": "pipeline", "entrypoint": "chain",
                                          "inputs": {"files": [str(movie.pk)]},
                                          "params": {"second": {"copy": "yes please"}}}, format="json")
    assert response.status_code == 400 and list(response.json()["error"]["fields"]) == ["params.second.copy"]
    assert not Job.objects.exists()


def test_the_packaged_pipelines_load_and_wire_real_outputs():
    registry = reg.load()
    localize = registry.get("pipeline", None, "localize")
    assert [s.name for s in localize.steps] == ["fit", "drift", "render", "qc"]
    assert [s.needs for s in localize.steps] == [(), ("fit",), ("drift",), ("drift",)]
    validate = registry.get("pipeline", None, "validate")
    assert validate.steps[2].needs == ("train", "simulate")


@pytest.mark.parametrize(("yaml_text", "problem"), [
    ("p: {summary: s, steps: {a: {run: nope/x}}}", "unknown application 'nope'"),
    ("p: {summary: s, steps: {a: {run: diagnostics/checksum, inputs: {files: 'b:x.tif'}},"
     " b: {run: diagnostics/checksum, inputs: {files: 'a:x'}}}}", "'b' is not a step declared before this one"),
    ("p: {summary: s, steps: {a: {run: diagnostics/checksum, inputs: {nope: 'input:x'}}}}", "no input slot 'nope'"),
    ("p: {summary: s, steps: {a: {run: diagnostics/checksum}}}", "required slot 'files'"),
    ("p: {summary: s, inputs: {f: {suffixes: [.tif]}}, steps: {a: {run: diagnostics/checksum,"
     " inputs: {files: 'input:g'}}}}", "the pipeline has no input slot 'g'"),
    ("p: {summary: s, steps: {a: {run: diagnostics/checksum, params: {copy: 3}, inputs: {files: 'input:f'}}}}",
     "a.params"),
    ("p: {summary: s, steps: {input: {run: diagnostics/checksum}}}", "not 'input'"),
])
def test_the_loader_refuses_bad_pipelines_naming_the_key(tmp_path, yaml_text, problem):
    with pytest.raises(reg.RegistryError) as caught:
        reg.load(write_registry(tmp_path, yaml_text))
    assert problem in str(caught.value)


def test_a_pipeline_job_is_never_offered_to_a_worker(api, worker, movie, chain_registry,
                                                     django_capture_on_commit_callbacks):
    pipeline = submit_chain(api, movie, django_capture_on_commit_callbacks)
    refused = worker.post(f"/api/v1/worker/jobs/{pipeline.pk}/claim")
    assert refused.status_code == 409
    assert pipelines.advance(pipeline.pk) == "running"


def test_the_pipeline_page_shows_the_chain_and_every_steps_outputs_and_reruns_from_a_step(
        api, user, worker, movie, chain_registry, django_capture_on_commit_callbacks):
    from django.test import Client

    pipeline = submit_chain(api, movie, django_capture_on_commit_callbacks)
    png = b"\x89PNG\r\n\x1a\n" + b"0" * 16
    with django_capture_on_commit_callbacks(execute=True):
        play_attempt(worker, step(pipeline, "first"), {"copy-movie.tif": b"II*\x00", "checksums.json": b"{}",
                                                   "drift.png": png})
    browser = Client()
    browser.force_login(user)
    page = browser.get(f"/jobs/{pipeline.pk}/").content.decode()
    assert 'id="steps-table"' in page and 'id="step-first"' in page and 'id="step-report"' in page
    assert "drift.png" in page  # a step's image shows on the pipeline's page
    assert 'id="pipeline-log-note"' in page and "A pipeline runs nothing itself" in page
    live = browser.get(f"/jobs/{pipeline.pk}/live/").json()
    assert "status-waiting" in live["sections"]["steps"] and "status-queued" in live["sections"]["steps"]
    step_page = browser.get(f"/jobs/{step(pipeline, 'first').pk}/").content.decode()
    assert 'id="pipeline-link"' in step_page and f"/jobs/{pipeline.pk}/" in step_page

    with django_capture_on_commit_callbacks(execute=True):
        play_attempt(worker, step(pipeline, "second"), {}, exit_code=1)
    page = browser.get(f"/jobs/{pipeline.pk}/").content.decode()
    assert 'id="rerun-from-second"' in page
    with django_capture_on_commit_callbacks(execute=True):
        response = browser.post(f"/jobs/{pipeline.pk}/rerun/", {"from_step": "second"})
    again = Job.objects.filter(queue="pipeline").exclude(pk=pipeline.pk).get()
    assert response.status_code == 302 and response["Location"] == f"/jobs/{again.pk}/"
    assert [j.step for j in again.steps.all()] == ["second"]


def test_a_pipeline_is_submitted_from_the_new_job_form_with_a_sub_form_per_step(
        user, dataset, chain_registry, django_capture_on_commit_callbacks):
    from django.test import Client

    movie = services.add_file(dataset, "movie.tif", io.BytesIO(b"II*\x00movie"))
    browser = Client()
    browser.force_login(user)
    form = browser.get("/jobs/new/?application=pipeline&entrypoint=chain").content.decode()
    assert form.count("<fieldset") >= 3 and 'name="p.second.copy"' in form
    with django_capture_on_commit_callbacks(execute=True):
        response = browser.post("/jobs/new/", {"application": "pipeline", "version": "1.0", "entrypoint": "chain",
                                               "input.files": [str(movie.pk)], "p.first.copy": "on",
                                               "notify": "failure"})
    assert response.status_code == 302, response.content.decode()[-2000:]
    pipeline = Job.objects.get(queue="pipeline")
    assert response["Location"] == f"/jobs/{pipeline.pk}/" and pipeline.notify == "failure"
    assert pipeline.params["first"]["copy"] is True and pipeline.params["second"]["copy"] is False
    assert [j.step for j in pipeline.steps.all()] == ["first"]
