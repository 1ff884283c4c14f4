"""The model registry: a succeeded train registers its model; the same train again reuses it at once (and says
so) unless asked to retrain; models are shared by visibility and fits may use shared ones; a pipeline's train
step is answered from the registry too."""

from __future__ import annotations

import io
import json

import pytest
from django.test import Client
from rest_framework.test import APIClient

from jobs import services
from jobs.models import Dataset, File, Institution, Job, Membership, TrainedModel
from jobs.trained_models import register_bundled
from tests.conftest import GPU16_CAPS, _enrolled_worker, play_attempt

pytestmark = pytest.mark.django_db

MODEL = b"PK\x03\x04 a torch model"
HISTORY = [{"epoch": 0, "loss": 3.2, "val_ji": 0.4}, {"epoch": 1, "loss": 1.1, "val_ji": 0.93, "note": "x"}]


@pytest.fixture(autouse=True)
def gpu_only(settings):
    settings.LOCUS_CPU_ROUTE_AFTER_SECONDS = None  # keep the GPU route: the worker below has a GPU


@pytest.fixture
def gpu_worker(db):
    return _enrolled_worker("gpu-box", GPU16_CAPS)


def train(user, retrain: bool = False, **params) -> Job:
    job, _ = services.submit(user, application="decode-plex", entrypoint="train",
                             params={"epochs": 2, "device": "cuda", **params}, retrain=retrain)
    return job


def trained(user, worker, **params) -> TrainedModel:
    job = train(user, **params)
    play_attempt(worker, job, {"model.pt": MODEL, "train_history.json": json.dumps(HISTORY).encode()})
    return TrainedModel.objects.get(train_job=job)


def test_a_succeeded_train_registers_its_model_with_params_and_metrics(user, gpu_worker):
    model = trained(user, gpu_worker)
    assert model.owner == user and model.visibility == "private" and model.file.name == "model.pt"
    assert model.params["epochs"] == 2 and model.code_version
    assert model.metrics == {"epoch": 1.0, "loss": 1.1, "val_ji": 0.93}
    assert model.train_job.events.filter(kind="model_registered").exists()


def test_the_same_train_again_reuses_the_model_at_once_and_says_so(user, gpu_worker):
    model = trained(user, gpu_worker, device="cpu")
    again = train(user)  # device differs: where it trains does not change the model
    again.refresh_from_db()
    assert again.status == "succeeded" and again.attempt_count == 0 and again.attempts.count() == 0
    copy = again.outputs.get()
    assert copy.name == "model.pt" and copy.sha256 == model.file.sha256 and copy.key != model.file.key
    event = again.events.get(kind="model_reused")
    assert model.name in event.message and "not trained again" in event.message
    assert TrainedModel.objects.count() == 1  # the copy is not a second model

    assert train(user, retrain=True).status == "queued"
    assert train(user, epochs=3).status == "queued"  # other parameters: another model


def test_retrain_through_the_api(api, user, gpu_worker):
    trained(user, gpu_worker)
    body = {"application": "decode-plex", "entrypoint": "train", "params": {"epochs": 2, "device": "cuda"}}
    assert api.post("/api/v1/jobs/", body, format="json").json()["status"] == "succeeded"
    assert api.post("/api/v1/jobs/", {**body, "retrain": True}, format="json").json()["status"] == "queued"


def test_models_are_shared_by_visibility_and_a_fit_may_use_a_shared_one(user, other_user, gpu_worker):
    model = trained(user, gpu_worker)
    bob = APIClient()
    bob.force_authenticate(other_user)
    assert bob.get("/api/v1/models/").json() == [] and train(other_user).status == "queued"
    lab = Institution.objects.create(slug="lab", name="Lab")
    Membership.objects.create(user=user, institution=lab)
    Membership.objects.create(user=other_user, institution=lab)
    alice = APIClient()
    alice.force_authenticate(user)
    assert alice.patch(f"/api/v1/models/{model.pk}/", {"visibility": "institution"}, format="json").status_code == 200
    listed = bob.get("/api/v1/models/").json()
    assert [(m["id"], m["mine"], m["owner"]) for m in listed] == [(str(model.pk), False, "alice")]
    assert train(other_user).status == "succeeded"  # bob's identical train reuses alice's shared model

    movie = services.add_file(Dataset.objects.create(owner=other_user, name="m"), "movie.tif", io.BytesIO(b"II*\x00"))
    fit, _ = services.submit(other_user, application="decode-plex", entrypoint="fit",
                             inputs={"model": [listed[0]["file"]], "frames": [str(movie.pk)]})
    assert fit.status == "queued" and fit.inputs.filter(pk=model.file_id).exists()
    assert bob.patch(f"/api/v1/models/{model.pk}/", {"name": "mine now"}, format="json").status_code == 403
    assert bob.delete(f"/api/v1/models/{model.pk}/").status_code == 403
    assert alice.delete(f"/api/v1/models/{model.pk}/").status_code == 204
    assert not TrainedModel.objects.exists() and model.train_job.outputs.filter(name="model.pt").exists()


def test_a_private_model_file_cannot_be_fitted_by_another_user(user, other_user, gpu_worker):
    model = trained(user, gpu_worker)
    movie = services.add_file(Dataset.objects.create(owner=other_user, name="m"), "movie.tif", io.BytesIO(b"II*\x00"))
    with pytest.raises(services.InvalidInput):
        services.submit(other_user, application="decode-plex", entrypoint="fit",
                        inputs={"model": [str(model.file_id)], "frames": [str(movie.pk)]})


def test_the_models_page_lists_shares_and_removes(user, gpu_worker):
    model = trained(user, gpu_worker)
    browser = Client()
    browser.force_login(user)
    page = browser.get("/models/").content.decode()
    assert f'id="model-{model.pk}"' in page and "val ji <strong>0.930</strong>" in page and "training job" in page
    assert browser.post(f"/models/{model.pk}/share/", {"visibility": "public"}).status_code == 302
    assert TrainedModel.objects.get(pk=model.pk).visibility == "public"
    assert browser.post(f"/models/{model.pk}/delete/").status_code == 302
    assert not TrainedModel.objects.exists()


def test_a_pipelines_train_step_is_answered_from_the_registry(user, gpu_worker, django_capture_on_commit_callbacks):
    trained(user, gpu_worker)  # with the pipeline's own train parameters (defaults + epochs, device)
    with django_capture_on_commit_callbacks(execute=True):
        pipeline, _ = services.submit(user, application="pipeline", entrypoint="validate",
                                      params={"train": {"epochs": 2, "device": "cuda"}})
    steps = {j.step: j for j in pipeline.steps.all()}
    assert steps["train"].status == "succeeded" and steps["train"].events.filter(kind="model_reused").exists()
    assert steps["simulate"].status == "queued" and "fit" not in steps  # fit also needs the simulated movie


def test_the_bundled_model_is_registered_once_public_and_fittable(user, dataset):
    first = register_bundled()
    assert [m.name for m in first] == ["generic-2d-emccd (bundled)"]
    assert register_bundled() == first and TrainedModel.objects.count() == 1  # idempotent
    model = first[0]
    assert model.metrics["prob_threshold"] == 0.55 and model.metrics["jaccard"] > 0.9  # chosen, and validated
    assert model.owner is None and model.visibility == "public" and model.params["camera"] == "smlm-challenge-emccd"
    movie = services.add_file(dataset, "movie.tif", io.BytesIO(b"II*\x00"))
    fit, _ = services.submit(user, application="decode-plex", entrypoint="fit",
                             inputs={"model": [str(model.file_id)], "frames": [str(movie.pk)]})
    assert fit.inputs.filter(pk=model.file_id).exists()
    browser = Client()
    browser.force_login(user)
    page = browser.get("/models/").content.decode()
    assert "bundled with Locus" in page and "detection threshold" in page


def test_a_newer_bundled_model_replaces_the_older_row_and_keeps_its_file(user):
    [current] = register_bundled()
    older_file = File.objects.create(owner=current.file.owner, key="bundled/models/old/generic-2d-emccd.pt",
                                     name="generic-2d-emccd.pt", size=3, sha256="0" * 64)
    current.delete()
    older = TrainedModel.objects.create(name="generic-2d-emccd (bundled)", owner=None, visibility="public",
                                        file=older_file, params={}, reuse_key="0" * 64)
    [newer] = register_bundled()
    assert list(TrainedModel.objects.filter(owner=None)) == [newer] and newer.pk != older.pk
    assert File.objects.filter(pk=older_file.pk).exists()  # jobs that fitted with it still find their input


def test_a_train_that_chose_its_threshold_shows_it_among_its_metrics(user, gpu_worker):
    job = train(user)
    play_attempt(gpu_worker, job, {"model.pt": MODEL, "train_history.json": json.dumps(HISTORY).encode(),
                                   "detection.json": json.dumps({"prob_threshold": 0.6, "curve": []}).encode()})
    assert TrainedModel.objects.get(train_job=job).metrics["prob_threshold"] == 0.6


def test_the_train_form_offers_train_again_and_rerun_trains_again(user, gpu_worker):
    model = trained(user, gpu_worker)
    browser = Client()
    browser.force_login(user)
    form = browser.get("/jobs/new/?application=decode-plex&entrypoint=train").content.decode()
    assert 'id="retrain"' in form
    assert browser.post(f"/jobs/{model.train_job_id}/rerun/").status_code == 302
    again = Job.objects.filter(application="decode-plex").exclude(pk=model.train_job_id).get()
    assert again.status == "queued"  # trained again, not answered with its own model


def test_the_fit_pickers_offer_the_models_a_user_may_use_by_name_and_no_other(user, other_user, gpu_worker):
    [bundled] = register_bundled()
    private = trained(other_user, gpu_worker)
    browser = Client()
    browser.force_login(user)
    form = browser.get("/jobs/new/?application=pipeline&entrypoint=localize").content.decode()
    assert 'data-group="models"' in form and f'value="{bundled.file_id}"' in form
    assert f'value="{private.file_id}"' not in form  # bob's private model is not offered
    assert f'data-label="{bundled.name}" checked' in form  # the only model, in a slot that needs one

    mine = trained(user, gpu_worker)
    form = browser.get("/jobs/new/?application=decode-plex&entrypoint=fit").content.decode()
    assert f'value="{mine.file_id}"' in form and form.count(f'value="{mine.file_id}"') == 1  # not also as output
    assert f'data-label="{mine.name}" checked' not in form and f'data-label="{bundled.name}" checked' not in form

    # "localize a movie with it" on the Models page puts the model in its slot; another's private model is ignored
    page = browser.get("/models/").content.decode()
    assert f"application=pipeline&entrypoint=localize&file={bundled.file_id}" in page
    picked = browser.get(f"/jobs/new/?application=pipeline&entrypoint=localize&file={mine.file_id}"
                         f"&file={private.file_id}").content.decode()
    assert f'data-label="{mine.name}" checked' in picked and f'value="{private.file_id}"' not in picked
