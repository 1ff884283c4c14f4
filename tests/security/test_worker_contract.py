"""Issue 18's findings, one regression test each: what a worker, a look-alike username or a hostile number
could break. Each of these failed (500, a stored bad row, another user's job, a lock-out dodged) before the
worker API's contract, the claim check, the username normal form and the request checks.
"""

from __future__ import annotations

import io
import json
import threading

import pytest
from django.apps import apps as django_apps
from django.core.cache import cache
from django.db import IntegrityError, connection
from django.test import Client
from rest_framework.test import APIClient

from jobs import services
from jobs.models import Attempt, EnrollmentToken, File, Institution, Job, Membership, Worker
from tests.conftest import CPU_CAPS, GPU16_CAPS, _enrolled_worker, _make_user, ran_for, sha256

pytestmark = pytest.mark.django_db

BAD_TYPED_CAPS = {"cpu_count": 8, "memory_gb": "16", "gpus": [{"name": "A100", "memory_gb": "80"}]}


def claim(worker, job):
    return worker.post(f"/api/v1/worker/jobs/{job.pk}/claim")


def call(worker, body, verb, data=None):
    return worker.post(f"/api/v1/worker/attempts/{body['attempt_id']}/{verb}", data or {}, format="json",
                       HTTP_X_FENCING_TOKEN=body["fencing_token"])


def selftest_job(user) -> Job:
    job, _ = services.submit(user, application="diagnostics", entrypoint="selftest")
    return job


def everything_still_reads(api, staff_client) -> None:
    """What a stored bad worker row broke site-wide: submissions, the sweep, the workers and usage views."""
    submitted = api.post("/api/v1/jobs/", {"application": "diagnostics", "entrypoint": "selftest"}, format="json")
    assert submitted.status_code == 201, submitted.content
    services.sweep()
    assert staff_client.get("/api/v1/workers/").status_code == 200
    assert staff_client.get("/api/v1/usage/").status_code == 200
    browser = Client()
    browser.force_login(staff_client.handler._force_user)
    assert browser.get("/workers/").status_code == 200
    assert browser.get("/usage/").status_code == 200


@pytest.fixture
def staff_api(staff) -> APIClient:
    client = APIClient()
    client.force_authenticate(staff)
    return client


@pytest.fixture
def lab(user):
    lab = Institution.objects.create(slug="lab", name="Lab")
    Membership.objects.create(user=user, institution=lab)
    return lab


# --- F1: capabilities of the wrong type --------------------------------------------------------------------

def test_capabilities_as_strings_are_stored_as_numbers_and_nothing_breaks(api, staff_api, worker, lab):
    Worker.objects.filter(pk=worker.worker.pk).update(institution=lab, pools=["lab"])
    response = worker.post("/api/v1/worker/heartbeat", {"capabilities": BAD_TYPED_CAPS}, format="json")
    assert response.status_code == 200, response.content
    assert "gpu.80" in response.json()["queues"]
    caps = Worker.objects.get(pk=worker.worker.pk).capabilities
    assert caps["memory_gb"] == 16.0 and caps["gpus"][0]["memory_gb"] == 80.0
    everything_still_reads(api, staff_api)


@pytest.mark.parametrize("caps", [
    {"memory_gb": "lots"}, {"memory_gb": 1e999}, {"cpu_count": -1}, {"gpus": [5]}, {"gpus": "A100"},
    {"gpus": [{"name": "x"}]}, {"gpus": [{"memory_gb": "nan"}]}, {"hostname": "h" * 1000}, "caps",
])
def test_capabilities_that_cannot_be_numbers_are_refused_and_nothing_is_stored(api, staff_api, worker, caps):
    before = Worker.objects.get(pk=worker.worker.pk).capabilities
    body = json.dumps({"capabilities": caps})  # Python's json writes 1e999 as Infinity, as an agent would
    response = worker.post("/api/v1/worker/heartbeat", body, content_type="application/json")
    assert response.status_code == 400 and response.json()["error"]["fields"]
    assert Worker.objects.get(pk=worker.worker.pk).capabilities == before
    everything_still_reads(api, staff_api)


def test_enroll_with_bad_capabilities_spends_no_token_and_makes_no_worker(db):
    _, raw = EnrollmentToken.issue(None)
    bad = APIClient().post("/api/v1/worker/enroll", {"enrollment_token": raw, "capabilities": {"gpus": [1]}},
                           format="json")
    assert bad.status_code == 400 and "capabilities" in json.dumps(bad.json()["error"]["fields"])
    assert not Worker.objects.exists()
    good = APIClient().post("/api/v1/worker/enroll", {"enrollment_token": raw, "capabilities": BAD_TYPED_CAPS},
                            format="json")
    assert good.status_code == 201, good.content


def test_a_bad_row_stored_before_the_contract_is_read_safely_and_mended(api, staff_api, worker, lab):
    Worker.objects.filter(pk=worker.worker.pk).update(
        institution=lab, pools=["lab"],
        capabilities={"memory_gb": "16", "cpu_count": [4], "gpus": [{"memory_gb": "80"}, "x", None],
                      "code_version": {"a": 1}})
    everything_still_reads(api, staff_api)
    assert claim(worker, selftest_job(_make_user("dave"))).status_code in (200, 409)

    migration = __import__("jobs.migrations.0007_mend_worker_reported_rows", fromlist=["mend"])
    migration.mend(django_apps, connection.schema_editor())
    caps = Worker.objects.get(pk=worker.worker.pk).capabilities
    assert caps == {"cpu_count": 0, "memory_gb": 0.0, "code_version": "",
                    "gpus": [{"name": "", "memory_gb": 0.0, "compute_capability": None}]}


# --- F2: unbounded CPU / GPU seconds ----------------------------------------------------------------------

@pytest.mark.parametrize("field", ["cpu_seconds", "gpu_seconds"])
@pytest.mark.parametrize("value", [1e308, "1e999", "nan", -5, "Infinity"])
def test_non_finite_or_huge_seconds_are_refused(user, worker, field, value):
    body = claim(worker, selftest_job(user)).json()
    response = call(worker, body, "complete", {"exit_code": 0, field: value})
    assert response.status_code == 400 and field in response.json()["error"]["fields"]
    assert Job.objects.get(pk=body["job_id"]).status == "running"


def test_reported_seconds_are_capped_by_the_attempts_wall_time(user, staff_api):
    gpu = _enrolled_worker("gpu-box", GPU16_CAPS)  # 8 CPU cores, one GPU
    job, _ = services.submit(user, application="simulation", entrypoint="simulate-gpu")
    body = claim(gpu, job).json()
    ran_for(body["attempt_id"], 100)
    assert call(gpu, body, "complete", {"exit_code": 0, "cpu_seconds": 5e8, "gpu_seconds": 5e8}).status_code == 200
    attempt = Attempt.objects.get(pk=body["attempt_id"])
    assert 800 <= attempt.cpu_seconds < 810 and 100 <= attempt.gpu_seconds < 101
    cpu_job = selftest_job(user)  # needs no GPU: no GPU time at all
    body = claim(gpu, cpu_job).json()
    ran_for(body["attempt_id"], 100)
    call(gpu, body, "complete", {"exit_code": 0, "cpu_seconds": 50, "gpu_seconds": 100})
    attempt = Attempt.objects.get(pk=body["attempt_id"])
    assert attempt.cpu_seconds == 50 and attempt.gpu_seconds == 0


def test_old_infinite_seconds_do_not_break_the_usage_pages_and_are_mended(user, staff, staff_api, worker):
    body = claim(worker, selftest_job(user)).json()
    call(worker, body, "complete", {"exit_code": 0})
    Attempt.objects.filter(pk=body["attempt_id"]).update(cpu_seconds=float("inf"), gpu_seconds=float("nan"),
                                                         failure_class="bogus")
    assert staff_api.get("/api/v1/usage/").status_code == 200
    assert staff_api.get("/api/v1/workers/").status_code == 200
    browser = Client()
    browser.force_login(staff)
    assert browser.get("/usage/").status_code == 200 and browser.get("/workers/").status_code == 200
    migration = __import__("jobs.migrations.0007_mend_worker_reported_rows", fromlist=["mend"])
    migration.mend(django_apps, connection.schema_editor())
    attempt = Attempt.objects.get(pk=body["attempt_id"])
    assert (attempt.cpu_seconds, attempt.gpu_seconds, attempt.failure_class) == (0.0, 0.0, "algorithm")


# --- F3: look-alike usernames -----------------------------------------------------------------------------

@pytest.mark.parametrize("alias", ["ｃarol", "ᶜarol", "CAROL", "Carol"])
def test_a_locked_out_user_stays_locked_out_under_a_look_alike_name(db, settings, alias):
    settings.LOCUS_LOGIN_MAX_FAILURES = 3
    cache.clear()
    _make_user("carol")
    for _ in range(3):
        Client().post("/accounts/login/", {"username": "carol", "password": "wrong"})
    locked = Client().post("/accounts/login/", {"username": alias, "password": "pw-carol"})
    assert locked.status_code == 429


def test_a_look_alike_name_logs_in_as_the_one_account(db):
    carol = _make_user("carol")
    client = Client()
    assert client.post("/accounts/login/", {"username": "ｃAROL", "password": "pw-carol"}).status_code == 302
    assert client.session["_auth_user_id"] == str(carol.pk)


@pytest.mark.parametrize("alias", ["ｃarol", "ᶜarol", "CAROL", "locus-system", "LOCUS-SYSTEM"])
def test_signing_up_as_a_look_alike_is_a_form_error_not_a_500(db, alias):
    _make_user("carol")
    response = Client().post("/accounts/signup/", {
        "username": alias, "email": "x@example.org", "password1": "a-long-password-7", "password2":
        "a-long-password-7"})
    assert response.status_code == 400 and "This username is taken." in response.content.decode()


# --- F4: non-finite params and the idempotency fallback ---------------------------------------------------

@pytest.mark.parametrize("raw", ["1e999", "-1e999"])
def test_non_finite_params_are_a_400_naming_the_field(api, user, dataset, test_registry, raw):
    older = selftest_job(user)
    frames = services.add_file(dataset, "movie.tif", io.BytesIO(b"II*\x00frames"))
    calibration = services.add_file(dataset, "beads.mat", io.BytesIO(b"MATLAB"))
    # `threshold` has a minimum and no maximum: the schema alone lets infinity through.
    body = (f'{{"application": "fit", "entrypoint": "run", "params": {{"threshold": {raw}}}, "inputs": '
            f'{{"frames": ["{frames.pk}"], "calibration": ["{calibration.pk}"]}}}}')
    response = api.post("/api/v1/jobs/", body, content_type="application/json")
    assert response.status_code == 400, response.content
    assert list(response.json()["error"]["fields"]) == ["params.threshold"]
    assert response.json().get("id") != str(older.pk)
    assert Job.objects.filter(owner=user).count() == 1


def test_a_failed_insert_without_idempotency_key_never_answers_with_another_job(user, monkeypatch):
    selftest_job(user)  # an older job of the user's, without a key

    def fails(*args, **kwargs):
        raise IntegrityError("CHECK constraint failed: JSON_VALID")  # what SQLite answered for Infinity

    monkeypatch.setattr(Job.objects, "create", fails)
    with pytest.raises(IntegrityError):
        services.submit(user, application="diagnostics", entrypoint="selftest")


def test_one_input_file_given_a_thousand_times_is_refused(api, dataset):
    frames = services.add_file(dataset, "a.tif", io.BytesIO(b"II*\x00"))
    response = api.post("/api/v1/jobs/", {"application": "diagnostics", "entrypoint": "checksum",
                                          "inputs": {"files": [str(frames.pk)] * 1000}}, format="json")
    assert response.status_code == 400 and "inputs.files" in response.json()["error"]["fields"]


# --- F5: claiming another pool's job by id, and hand-backs forever ---------------------------------------

def test_a_worker_cannot_claim_a_job_of_a_pool_it_does_not_serve(user, lab):
    theirs = _enrolled_worker("lab-pc", CPU_CAPS)
    Worker.objects.filter(pk=theirs.worker.pk).update(institution=lab, pools=["lab"])
    job = selftest_job(user)
    assert job.queue == "pool.lab.cpu"
    stranger = _enrolled_worker("elsewhere", CPU_CAPS)  # serves only the shared tiers
    refused = claim(stranger, job)
    assert refused.status_code == 409 and "does not serve" in refused.json()["error"]["message"]
    assert not Attempt.objects.filter(job=job).exists()
    assert claim(theirs, job).status_code == 200


def test_hand_backs_are_bounded_per_job(user, worker, settings):
    settings.LOCUS_MAX_HANDBACKS = 3
    job = selftest_job(user)
    for _ in range(3):
        body = claim(worker, job).json()
        call(worker, body, "complete", {"exit_code": None, "failure_class": "infrastructure", "handback": True})
        assert Job.objects.get(pk=job.pk).status == "queued"
    for _ in range(job.max_attempts):  # from now on each hand-back uses an attempt
        body = claim(worker, job).json()
        call(worker, body, "complete", {"exit_code": None, "failure_class": "infrastructure", "handback": True})
    job.refresh_from_db()
    assert job.status == "failed" and "handed back more than 3 times" in job.reason


# --- F6: the storage quota under parallel uploads ---------------------------------------------------------

@pytest.mark.django_db(transaction=True)
def test_the_quota_holds_under_parallel_uploads(settings):
    settings.LOCUS_USER_QUOTA_BYTES = 1_000_000
    owner = _make_user("erin")
    from jobs.models import Dataset

    dataset = Dataset.objects.create(owner=owner, name="parallel")
    start, outcomes = threading.Barrier(8), []

    def upload(i: int) -> None:
        try:
            start.wait()
            services.add_file(dataset, f"part{i}.bin", io.BytesIO(bytes([i]) * 400_000), size_hint=400_000)
            outcomes.append("stored")
        except services.TooLarge:
            outcomes.append("refused")
        finally:
            connection.close()

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["refused"] * 6 + ["stored"] * 2
    assert services.used_bytes(owner) == 800_000
    from django.core.files.storage import default_storage

    for f in File.objects.filter(owner=owner):
        assert default_storage.exists(f.key)


# --- F7, F8, F10 and the smaller findings ----------------------------------------------------------------

@pytest.mark.parametrize("depth", [40, 5000, 100_000])
def test_deeply_nested_json_is_a_400_in_the_error_shape_even_unauthenticated(db, depth):
    body = "[" * depth + "]" * depth
    response = Client().post("/api/v1/worker/enroll", body, content_type="application/json")
    assert response.status_code == 400 and response.json()["error"]["code"] == "malformed"


@pytest.mark.parametrize("query", ["application=%00", "status=%00x", "%00=1", "application=a%01b"])
def test_control_characters_in_query_strings_are_a_400(api, user, query):
    response = api.get(f"/api/v1/jobs/?{query}")
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid"
    browser = Client()
    browser.force_login(user)
    assert browser.get(f"/jobs/?{query}").status_code == 400


@pytest.mark.parametrize("exit_code", [2**40, -(2**40), 2**31])
def test_an_exit_code_beyond_32_bits_is_a_400(user, worker, exit_code):
    body = claim(worker, selftest_job(user)).json()
    response = call(worker, body, "complete", {"exit_code": exit_code})
    assert response.status_code == 400 and "exit_code" in response.json()["error"]["fields"]
    assert Attempt.objects.get(pk=body["attempt_id"]).status == "running"


def test_an_unknown_failure_class_is_refused(user, worker):
    body = claim(worker, selftest_job(user)).json()
    response = call(worker, body, "complete", {"exit_code": 1, "failure_class": "bogus"})
    assert response.status_code == 400 and "failure_class" in response.json()["error"]["fields"]


def test_an_oversized_progress_document_is_refused_and_not_stored(user, worker):
    body = claim(worker, selftest_job(user)).json()
    big = {"progress": 0.5, "metrics": {"blob": "x" * (8 * 1024 * 1024)}}
    response = call(worker, body, "heartbeat", {"progress": big})
    assert response.status_code == 400 and "progress" in response.json()["error"]["fields"]
    assert Job.objects.get(pk=body["job_id"]).progress_detail == {}


def test_a_diverged_loss_in_progress_is_stored_as_null_and_keeps_the_lease(user, worker):
    body = claim(worker, selftest_job(user)).json()
    raw = '{"progress": {"progress": 0.25, "metrics": {"loss": NaN, "best": Infinity}}}'
    response = worker.post(f"/api/v1/worker/attempts/{body['attempt_id']}/heartbeat", raw,
                           content_type="application/json", HTTP_X_FENCING_TOKEN=body["fencing_token"])
    assert response.status_code == 200, response.content
    job = Job.objects.get(pk=body["job_id"])
    assert job.progress == 0.25 and job.progress_detail["metrics"] == {"loss": None, "best": None}


def test_a_json_body_over_the_limit_answers_the_json_error_shape(api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = api.post("/api/v1/jobs/", json.dumps({"application": "x" * 2000}), content_type="application/json")
    assert response.status_code == 413 and response.json()["error"]["code"] == "too_large"


def test_an_outputs_display_name_comes_from_its_stored_key(user, worker):
    body = claim(worker, selftest_job(user)).json()
    data = b'{"ok": true}'
    target = call(worker, body, "outputs", {"name": "report.json", "size": len(data), "sha256": sha256(data)}).json()
    path = target["url"].split("://", 1)[1].split("/", 1)[1]
    assert APIClient().put("/" + path, data, content_type="application/octet-stream").status_code == 201
    done = call(worker, body, "complete", {"exit_code": 0, "outputs": [
        {"name": "invoice<script>.exe", "key": target["key"], "size": len(data), "sha256": sha256(data)}]})
    assert done.status_code == 200, done.content
    assert [f.name for f in Job.objects.get(pk=body["job_id"]).outputs.all()] == ["report.json"]
