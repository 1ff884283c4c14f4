"""Worker API and state machine: enrollment, claim, leases, fencing, outputs, completion, the sweeper."""

from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone
from rest_framework.test import APIClient

from jobs import services, states
from jobs.models import Attempt, EnrollmentToken, File, Job
from tests.conftest import GPU16_CAPS, _enrolled_worker, ran_for, sha256

pytestmark = pytest.mark.django_db


def new_job(api, **params):
    return api.post("/api/v1/jobs/", {"application": "diagnostics", "entrypoint": "selftest", "params": params},
                    format="json").json()["id"]


def claim(worker, job_id):
    return worker.post(f"/api/v1/worker/jobs/{job_id}/claim")


def call(worker, claim_body, verb, body=None, token=None):
    return worker.post(f"/api/v1/worker/attempts/{claim_body['attempt_id']}/{verb}", body or {}, format="json",
                       HTTP_X_FENCING_TOKEN=token or claim_body["fencing_token"])


def put_output(claim_body, worker, name: str, data: bytes) -> dict:
    target = call(worker, claim_body, "outputs", {"name": name, "size": len(data), "sha256": sha256(data)}).json()
    path = target["url"].split("://", 1)[1].split("/", 1)[1]
    response = APIClient().put("/" + path, data, content_type="application/octet-stream")
    assert response.status_code == 201, response.content
    return {"name": name, "key": target["key"], "size": len(data), "sha256": sha256(data)}


def test_enrollment_token_is_one_time(db):
    _, raw = EnrollmentToken.issue(None)
    client = APIClient()
    first = client.post("/api/v1/worker/enroll", {"enrollment_token": raw, "name": "pc", "capabilities": GPU16_CAPS},
                        format="json")
    assert first.status_code == 201
    # its own queue first (the pinned selftest), then the shared tiers its 16 GB card covers
    assert first.json()["queues"] == [f"worker.{first.json()['worker_id']}", "cpu", "gpu.8", "gpu.16"]
    again = client.post("/api/v1/worker/enroll", {"enrollment_token": raw, "name": "pc2"}, format="json")
    assert again.status_code == 403


def test_user_token_cannot_reach_worker_api_and_worker_token_cannot_reach_user_api(api, worker):
    assert api.post("/api/v1/worker/heartbeat", {}, format="json").status_code == 401
    assert worker.get("/api/v1/jobs/").status_code == 401


def test_full_attempt_succeeds_with_verified_outputs_and_one_email(api, worker, user, django_capture_on_commit_callbacks):
    job_id = api.post("/api/v1/jobs/", {"application": "diagnostics", "entrypoint": "selftest", "notify": "always"},
                      format="json").json()["id"]  # the default emails a success only when the job took long
    body = claim(worker, job_id).json()
    assert body["spec"]["params"]["matrix_size"] == 512 and body["fencing_token"]
    assert Job.objects.get(pk=job_id).status == "running"
    hb = call(worker, body, "heartbeat", {"progress": {"progress": 0.5, "stage": "matmul"}}).json()
    assert hb["directive"] == "continue"
    assert Job.objects.get(pk=job_id).progress == 0.5
    call(worker, body, "log", {"text": "hello\n"})
    out = put_output(body, worker, "report.json", b'{"ok": true}')
    ran_for(body["attempt_id"], 10)
    with django_capture_on_commit_callbacks(execute=True):
        done = call(worker, body, "complete", {"exit_code": 0, "failure_class": None, "outputs": [out],
                                               "cpu_seconds": 1.5})
    assert done.status_code == 200 and done.json()["job_status"] == "succeeded"
    job = Job.objects.get(pk=job_id)
    assert job.status == "succeeded" and job.progress == 1.0
    assert [f.name for f in job.outputs.all()] == ["report.json"]
    assert [e.kind for e in job.events.all()][:3] == ["submitted", "claimed", "succeeded"]
    assert len(mail.outbox) == 1 and "succeeded" in mail.outbox[0].subject
    detail = api.get(f"/api/v1/jobs/{job_id}/").json()
    assert detail["attempts"][0]["cpu_seconds"] == 1.5
    log = api.get(f"/api/v1/jobs/{job_id}/logs/?offset=0").json()
    assert log["text"] == "hello\n" and log["complete"]
    assert api.get(f"/api/v1/jobs/{job_id}/logs/?offset=2").json()["text"] == "llo\n"


def test_duplicate_delivery_gets_409_and_changes_nothing(api, worker, other_worker):
    job_id = new_job(api)
    assert claim(worker, job_id).status_code == 200
    second = claim(other_worker, job_id)
    assert second.status_code == 409 and second.json()["error"]["status"] == "running"
    assert Attempt.objects.filter(job_id=job_id).count() == 1


def test_worker_without_the_hardware_gets_409(api, worker, test_registry, dataset):
    from tests.conftest import upload

    frames = upload(api, dataset.pk, "m.tif", b"t").json()["id"]
    cal = upload(api, dataset.pk, "c.mat", b"m").json()["id"]
    job = api.post("/api/v1/jobs/", {"application": "fit", "entrypoint": "run",
                                     "inputs": {"frames": [frames], "calibration": [cal]}}, format="json").json()
    assert claim(worker, job["id"]).status_code == 409
    gpu = _enrolled_worker("gpu", GPU16_CAPS)
    body = claim(gpu, job["id"]).json()
    assert {i["slot"] for i in body["inputs"]} == {"frames", "calibration"}
    # The input URL is job-scoped and works without any credential while the attempt runs.
    url = body["inputs"][0]["url"]
    path = "/" + url.split("://", 1)[1].split("/", 1)[1]
    assert APIClient().get(path).status_code == 200
    assert APIClient().get(path[:-3] + "xyz").status_code == 403


def test_stale_fencing_token_is_rejected_without_change(api, worker):
    job_id = new_job(api)
    body = claim(worker, job_id).json()
    for verb, payload in [("heartbeat", {}), ("log", {"text": "x"}), ("complete", {"exit_code": 0})]:
        response = call(worker, body, verb, payload, token="stale")
        assert response.status_code == 409, verb
    job = Job.objects.get(pk=job_id)
    assert job.status == "running" and job.log_size == 0


def test_worker_token_on_another_workers_attempt_is_403(api, worker, other_worker):
    body = claim(worker, new_job(api)).json()
    assert call(other_worker, body, "heartbeat").status_code == 403
    assert call(other_worker, body, "complete", {"exit_code": 0}).status_code == 403


def test_lease_expiry_requeues_then_fails_when_attempts_run_out(api, worker, other_worker,
                                                                django_capture_on_commit_callbacks):
    job_id = new_job(api)
    max_attempts = Job.objects.get(pk=job_id).max_attempts
    for n in range(1, max_attempts + 1):
        body = claim(worker, job_id).json()
        assert body["attempt"] == n
        later = timezone.now() + timedelta(seconds=3600)
        with django_capture_on_commit_callbacks(execute=False):
            assert states.expire_leases(now=later) == 1
        # The old attempt's late calls are fenced off.
        assert call(worker, body, "complete", {"exit_code": 0}).status_code == 409
    job = Job.objects.get(pk=job_id)
    assert job.status == "failed" and job.failure_class == "infrastructure"
    assert list(job.attempts.values_list("status", flat=True)) == ["lost"] * max_attempts
    assert [e.kind for e in job.events.all()].count("requeued") == max_attempts - 1


def test_running_job_cancel_tells_the_worker_and_fences_it(api, worker):
    job_id = new_job(api)
    body = claim(worker, job_id).json()
    assert api.post(f"/api/v1/jobs/{job_id}/cancel/").json()["status"] == "cancelled"
    assert call(worker, body, "heartbeat").json()["directive"] == "cancel"
    assert call(worker, body, "complete", {"exit_code": 0}).status_code == 409
    assert Job.objects.get(pk=job_id).status == "cancelled"
    assert api.post(f"/api/v1/jobs/{job_id}/cancel/").status_code == 409


@pytest.mark.parametrize(("exit_code", "failure_class"), [(2, "input"), (1, "algorithm")])
def test_failing_algorithm_fails_the_job_without_retry(api, worker, exit_code, failure_class):
    job_id = new_job(api)
    body = claim(worker, job_id).json()
    response = call(worker, body, "complete", {"exit_code": exit_code, "failure_class": failure_class,
                                               "reason": "bad things"})
    assert response.json()["job_status"] == "failed"
    job = Job.objects.get(pk=job_id)
    assert job.failure_class == failure_class and job.attempt_count == 1


def test_infrastructure_failure_is_retried(api, worker):
    job_id = new_job(api)
    body = claim(worker, job_id).json()
    response = call(worker, body, "complete", {"exit_code": -9, "failure_class": "infrastructure"})
    assert response.json()["job_status"] == "queued"
    assert claim(worker, job_id).json()["attempt"] == 2


def test_complete_with_missing_or_altered_output_is_400_and_job_keeps_running(api, worker):
    job_id = new_job(api)
    body = claim(worker, job_id).json()
    out = put_output(body, worker, "report.json", b"abc")
    bad = {**out, "sha256": "0" * 64}
    assert call(worker, body, "complete", {"exit_code": 0, "outputs": [bad]}).status_code == 400
    foreign = {**out, "key": "users/1/elsewhere/x"}
    assert call(worker, body, "complete", {"exit_code": 0, "outputs": [foreign]}).status_code == 400
    assert Job.objects.get(pk=job_id).status == "running" and File.objects.filter(job_id=job_id).count() == 0


def test_upload_with_wrong_bytes_is_refused(api, worker):
    body = claim(worker, new_job(api)).json()
    target = call(worker, body, "outputs", {"name": "r.json", "size": 3, "sha256": sha256(b"abc")}).json()
    path = "/" + target["url"].split("://", 1)[1].split("/", 1)[1]
    assert APIClient().put(path, b"abd", content_type="application/octet-stream").status_code == 400
    assert APIClient().put(path, b"abcdef", content_type="application/octet-stream").status_code == 413


def test_claim_next_takes_the_oldest_job_it_can_run(api, worker):
    first, second = new_job(api), new_job(api)
    response = worker.post("/api/v1/worker/claim-next", {"wait_s": 0}, format="json")
    assert response.status_code == 200 and response.json()["job_id"] == first
    assert worker.post("/api/v1/worker/claim-next", {"wait_s": 0}, format="json").json()["job_id"] == second
    assert worker.post("/api/v1/worker/claim-next", {"wait_s": 0}, format="json").status_code == 204


def test_unschedulable_jobs_are_flagged(api, worker, test_registry, dataset):
    from tests.conftest import upload

    frames = upload(api, dataset.pk, "m.tif", b"t").json()["id"]
    cal = upload(api, dataset.pk, "c.mat", b"m").json()["id"]
    job = api.post("/api/v1/jobs/", {"application": "fit", "entrypoint": "run",
                                     "inputs": {"frames": [frames], "calibration": [cal]}}, format="json").json()
    services.flag_unschedulable()
    assert Job.objects.get(pk=job["id"]).waiting_reason == "no online worker with ≥ 12 GB GPU memory"
    _enrolled_worker("gpu", GPU16_CAPS)
    services.flag_unschedulable()
    assert Job.objects.get(pk=job["id"]).waiting_reason == ""


@pytest.mark.parametrize(("preference", "outcome", "emails"),
                         [("always", 0, 1), ("failure", 0, 0), ("failure", 1, 1), ("never", 1, 0)])
def test_email_honours_the_preference(api, worker, preference, outcome, emails, django_capture_on_commit_callbacks):
    job_id = api.post("/api/v1/jobs/", {"application": "diagnostics", "entrypoint": "selftest",
                                        "notify": preference}, format="json").json()["id"]
    body = claim(worker, job_id).json()
    with django_capture_on_commit_callbacks(execute=True):
        call(worker, body, "complete", {"exit_code": outcome, "failure_class": "algorithm" if outcome else None})
    assert len(mail.outbox) == emails
    from jobs.tasks import send_job_email

    send_job_email(job_id)  # a redelivered task sends nothing more
    assert len(mail.outbox) == emails


def test_nul_and_lone_surrogates_from_a_worker_are_cleaned_not_a_500(api, worker):
    body = claim(worker, new_job(api)).json()
    raw = '{"progress": {"progress": 0.5, "stage": "a\\u0000b", "\\ud800": "x"}}'
    response = worker.post(f"/api/v1/worker/attempts/{body['attempt_id']}/heartbeat", raw,
                           content_type="application/json", HTTP_X_FENCING_TOKEN=body["fencing_token"])
    assert response.status_code == 200
    assert Job.objects.get(pk=body["job_id"]).progress_detail["stage"] == "ab"
    log = worker.post(f"/api/v1/worker/attempts/{body['attempt_id']}/log", '{"text": "x\\u0000y\\udfff\\n"}',
                      content_type="application/json", HTTP_X_FENCING_TOKEN=body["fencing_token"])
    assert log.status_code == 200
    assert api.get(f"/api/v1/jobs/{body['job_id']}/logs/").json()["text"] == "xy?\n"
    caps = worker.post("/api/v1/worker/heartbeat", '{"capabilities": {"cpu_count": 2, "name": "\\u0000\\ud800"}}',
                       content_type="application/json")
    assert caps.status_code == 200


def test_params_with_nul_are_refused(api):
    response = api.post("/api/v1/jobs/", '{"application": "diagnostics", "entrypoint": "checksum", '
                        '"params": {"copy": "\\u0000"}}', content_type="application/json")
    assert response.status_code == 400


def test_shutdown_handback_requeues_without_using_an_attempt(api, worker, other_worker):
    """A fleet restarted more often than max_attempts must not fail a job that did nothing wrong."""
    job_id = new_job(api)
    max_attempts = Job.objects.get(pk=job_id).max_attempts
    for _ in range(max_attempts + 1):
        body = claim(worker, job_id).json()
        response = call(worker, body, "complete", {"exit_code": -15, "failure_class": "infrastructure",
                                                   "reason": "worker shutting down", "handback": True})
        assert response.status_code == 200 and response.json()["job_status"] == "queued"
        assert Attempt.objects.get(pk=body["attempt_id"]).status == "released"
    job = Job.objects.get(pk=job_id)
    assert job.attempt_count == max_attempts + 1 and states.attempts_used(job) == 0
    kinds = list(job.events.values_list("kind", flat=True))
    assert kinds.count("released") == max_attempts + 1 and kinds.count("requeued") == max_attempts + 1
    # Real failures still count: the job fails after max_attempts of them, released ones not included.
    for n in range(max_attempts):
        body = claim(other_worker, job_id).json()
        status = call(other_worker, body, "complete", {"exit_code": -9, "failure_class": "infrastructure"}).json()
        assert status["job_status"] == ("failed" if n == max_attempts - 1 else "queued")


def test_handback_after_the_lease_was_lost_is_409_and_changes_nothing(api, worker):
    job_id = new_job(api)
    body = claim(worker, job_id).json()
    Attempt.objects.filter(pk=body["attempt_id"]).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    states.expire_leases()
    response = call(worker, body, "complete", {"exit_code": -15, "failure_class": "infrastructure",
                                               "handback": True})
    assert response.status_code == 409
    assert Attempt.objects.get(pk=body["attempt_id"]).status == "lost"
    assert states.attempts_used(Job.objects.get(pk=job_id)) == 1
