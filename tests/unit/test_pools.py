"""Institution pools (routing, spill-over by the real sweep, pool-first claims), the selftest pinned to a new
worker, revocation handing a running attempt back, and usage sums."""

from datetime import timedelta

import pytest
import redis
from django.utils import timezone
from rest_framework.test import APIClient

from jobs import services, tasks
from jobs.models import Attempt, EnrollmentToken, Institution, Job, JobEvent, Membership, Worker
from tests.conftest import CPU_CAPS, GPU16_CAPS, _enrolled_worker, _make_user, ran_for, submit_gpu_job

pytestmark = pytest.mark.django_db


@pytest.fixture
def lab(user):
    """Institution `lab` with alice as a member."""
    lab = Institution.objects.create(slug="lab", name="Lab")
    Membership.objects.create(user=user, institution=lab)
    return lab


def pool_worker(name: str, caps: dict, slug: str = "lab"):
    client = _enrolled_worker(name, caps)
    Worker.objects.filter(pk=client.worker.pk).update(pools=[slug])
    client.worker.refresh_from_db()
    return client


def submit(owner, **params) -> Job:
    job, _ = services.submit(owner, application="diagnostics", entrypoint="selftest", params=params)
    return job


def queued_messages(settings, queue: str) -> list[bytes]:
    return redis.Redis.from_url(settings.CELERY_BROKER_URL).lrange(queue, 0, -1)


# --- routing -------------------------------------------------------------------------------------------

def test_a_members_job_goes_to_the_pool_and_a_non_members_to_the_shared_tier(user, other_user, lab):
    pool_worker("lab-pc", CPU_CAPS)
    assert submit(user).queue == "pool.lab.cpu"
    assert submit(other_user).queue == "cpu"


def test_no_pool_without_an_enabled_worker_serving_it(user, lab):
    assert submit(user).queue == "cpu"  # the institution exists but nobody serves its pool
    w = pool_worker("lab-pc", CPU_CAPS)
    assert submit(user).queue == "pool.lab.cpu"
    services.revoke_worker(w.worker)
    assert submit(user).queue == "cpu"


def test_a_pool_whose_workers_lack_the_tier_is_skipped(user, lab, test_registry, dataset):
    import io

    pool_worker("lab-cpu", CPU_CAPS)  # serves pool.lab.cpu only
    frames = services.add_file(dataset, "m.tif", io.BytesIO(b"II*\x00"))
    cal = services.add_file(dataset, "c.mat", io.BytesIO(b"MATLAB"))
    inputs = {"frames": [str(frames.pk)], "calibration": [str(cal.pk)]}
    gpu_job, _ = services.submit(user, application="fit", entrypoint="run", inputs=inputs)
    assert gpu_job.queue == "gpu.16"
    pool_worker("lab-gpu", GPU16_CAPS)
    gpu_job, _ = services.submit(user, application="fit", entrypoint="run", inputs=inputs)
    assert gpu_job.queue == "pool.lab.gpu.16"


def test_pool_workers_list_their_pool_before_the_shared_tiers(lab):
    w = pool_worker("lab-gpu", GPU16_CAPS).worker
    assert services.worker_queues(w) == [f"worker.{w.pk}", "pool.lab.cpu", "pool.lab.gpu.8", "pool.lab.gpu.16",
                                         "cpu", "gpu.8", "gpu.16"]


def test_a_pool_worker_pulls_its_pool_job_before_an_older_shared_one(user, other_user, lab):
    w = pool_worker("lab-pc", CPU_CAPS)
    shared = submit(other_user)
    pooled = submit(user)
    assert shared.created_at < pooled.created_at
    first = w.post("/api/v1/worker/claim-next", {"wait_s": 0}, format="json").json()
    assert first["job_id"] == str(pooled.pk)
    second = w.post("/api/v1/worker/claim-next", {"wait_s": 0}, format="json").json()
    assert second["job_id"] == str(shared.pk)


def test_a_shared_worker_never_takes_a_pool_job_before_spill_over(user, lab, worker):
    pool_worker("lab-pc", CPU_CAPS)
    submit(user)
    assert worker.post("/api/v1/worker/claim-next", {"wait_s": 0}, format="json").status_code == 204


# --- spill-over ----------------------------------------------------------------------------------------

def test_the_sweep_spills_an_unclaimed_pool_job_to_the_shared_tier_after_the_wait(
        user, lab, worker, settings, django_capture_on_commit_callbacks):
    redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()
    settings.LOCUS_POOL_SPILLOVER_SECONDS = 600
    pool_worker("lab-pc", CPU_CAPS)
    old, fresh = submit(user), submit(user)
    Job.objects.filter(pk=old.pk).update(queued_at=timezone.now() - timedelta(seconds=601))
    with django_capture_on_commit_callbacks(execute=True):
        result = tasks.sweep_leases()  # the beat task itself
    assert result["spilled"] == 1
    old.refresh_from_db()
    fresh.refresh_from_db()
    assert (old.queue, fresh.queue) == ("cpu", "pool.lab.cpu")
    event = JobEvent.objects.get(job=old, kind="spilled_over")
    assert event.data == {"from_queue": "pool.lab.cpu", "to_queue": "cpu"} and "600 s" in event.message
    assert any(str(old.pk).encode() in m for m in queued_messages(settings, "cpu"))  # a new doorbell
    # now any shared worker may take it; the fresh one still waits for the pool
    claimed = worker.post("/api/v1/worker/claim-next", {"wait_s": 0}, format="json").json()
    assert claimed["job_id"] == str(old.pk)
    assert worker.post("/api/v1/worker/claim-next", {"wait_s": 0}, format="json").status_code == 204
    assert tasks.sweep_leases()["spilled"] == 0  # a second pass moves nothing more


def test_an_institution_may_set_its_own_wait(user, lab, settings):
    settings.LOCUS_POOL_SPILLOVER_SECONDS = 600
    Institution.objects.filter(pk=lab.pk).update(pool_spillover_seconds=30)
    pool_worker("lab-pc", CPU_CAPS)
    job = submit(user)
    Job.objects.filter(pk=job.pk).update(queued_at=timezone.now() - timedelta(seconds=31))
    assert services.sweep()["spilled"] == 1
    job.refresh_from_db()
    assert job.queue == "cpu"


def test_a_claimed_pool_job_is_not_spilled(user, lab, settings):
    settings.LOCUS_POOL_SPILLOVER_SECONDS = 0
    w = pool_worker("lab-pc", CPU_CAPS)
    job = submit(user)
    assert w.post(f"/api/v1/worker/jobs/{job.pk}/claim").status_code == 200
    assert services.sweep()["spilled"] == 0
    job.refresh_from_db()
    assert (job.status, job.queue) == ("running", "pool.lab.cpu")


# --- selftest after enrollment -------------------------------------------------------------------------

def test_enrollment_queues_a_selftest_pinned_to_the_new_worker(staff, settings, django_capture_on_commit_callbacks):
    redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()
    _, raw = EnrollmentToken.issue(staff)
    with django_capture_on_commit_callbacks(execute=True):
        enrolled = APIClient().post("/api/v1/worker/enroll", {"enrollment_token": raw, "name": "new-pc",
                                                              "capabilities": CPU_CAPS}, format="json").json()
    new = Worker.objects.get(pk=enrolled["worker_id"])
    job = new.selftest_job
    assert (job.application, job.entrypoint, job.status) == ("diagnostics", "selftest", "queued")
    assert job.pinned_worker == new and job.owner == staff and job.queue == f"worker.{new.pk}"
    assert job.queue in enrolled["queues"]
    assert queued_messages(settings, job.queue)  # its doorbell waits in the worker's own queue


def test_only_the_pinned_worker_can_claim_its_selftest(staff, worker):
    _, raw = EnrollmentToken.issue(staff)
    new, token = services.enroll(raw, "new-pc", CPU_CAPS, selftest_job=True)
    job = new.selftest_job
    refused = worker.post(f"/api/v1/worker/jobs/{job.pk}/claim")
    assert refused.status_code == 409 and "pinned to another worker" in refused.json()["error"]["message"]
    assert worker.post("/api/v1/worker/claim-next", {"wait_s": 0}, format="json").status_code == 204
    mine = APIClient()
    mine.credentials(HTTP_AUTHORIZATION=f"Worker {token}")
    assert mine.post("/api/v1/worker/claim-next", {"wait_s": 0}, format="json").json()["job_id"] == str(job.pk)


def test_a_selftest_that_sees_fewer_gpus_than_registered_fails(staff):
    from jobs import selftest

    _, raw = EnrollmentToken.issue(staff)
    new, _ = services.enroll(raw, "gpu-pc", GPU16_CAPS, selftest_job=True)
    job = new.selftest_job
    job.status = Job.Status.SUCCEEDED
    verdict = selftest.verdict(job, {"gpus": [], "matmul": {"device": "cpu", "gflops": 3.0}}, new)
    assert not verdict["passed"] and "registered 1 GPU(s) but the job saw 0" in verdict["problems"][0]
    seen = {"gpus": [{"name": "Fake A4000", "memory_gb": 16}], "matmul": {"device": "cuda", "gflops": 900.0}}
    assert selftest.verdict(job, seen, new)["passed"]


@pytest.mark.django_db(transaction=True)
def test_a_finished_selftest_and_its_verdict_commit_together(staff, monkeypatch):
    """The moment the job's end is committed (its notification goes out then), the worker's report is there."""
    from jobs import dispatch

    _, raw = EnrollmentToken.issue(staff)
    new, token = services.enroll(raw, "new-pc", CPU_CAPS, selftest_job=True)
    seen_at_commit = []
    monkeypatch.setattr(dispatch, "send_notification", lambda job_id, event_id: seen_at_commit.append(
        Worker.objects.get(pk=new.pk).selftest_report))
    mine = APIClient()
    mine.credentials(HTTP_AUTHORIZATION=f"Worker {token}")
    run_attempt(mine, new.selftest_job, 1.0, 0.0)
    assert len(seen_at_commit) == 1 and seen_at_commit[0]["passed"] is True
    assert seen_at_commit[0]["job"] == str(new.selftest_job_id)


def test_enrolling_without_an_owner_gives_the_selftest_to_an_inactive_system_user(db):
    _, raw = EnrollmentToken.issue(None)
    new, _ = services.enroll(raw, "pc", CPU_CAPS, selftest_job=True)
    owner = new.selftest_job.owner
    assert owner.username == "locus-system" and not owner.is_active and not owner.has_usable_password()


# --- revoke --------------------------------------------------------------------------------------------

def test_revoking_a_worker_hands_its_running_attempt_back(user, staff, worker, other_worker):
    job = submit(user)
    body = worker.post(f"/api/v1/worker/jobs/{job.pk}/claim").json()
    admin = APIClient()
    admin.force_authenticate(staff)
    assert admin.post(f"/api/v1/workers/{worker.worker.pk}/revoke/").json()["enabled"] is False
    job.refresh_from_db()
    attempt = Attempt.objects.get(pk=body["attempt_id"])
    assert job.status == "queued" and attempt.status == "lost"
    assert JobEvent.objects.filter(job=job, kind="handed_back").exists()
    assert worker.post("/api/v1/worker/heartbeat", {}, format="json").status_code == 401
    # another worker takes it over at once, without waiting for the lease to expire
    assert other_worker.post(f"/api/v1/worker/jobs/{job.pk}/claim").status_code == 200


def test_revoking_cancels_the_workers_queued_selftest(staff):
    _, raw = EnrollmentToken.issue(staff)
    new, _ = services.enroll(raw, "pc", CPU_CAPS, selftest_job=True)
    services.revoke_worker(new)
    assert Job.objects.get(pk=new.selftest_job_id).status == "cancelled"


# --- usage ---------------------------------------------------------------------------------------------

def run_attempt(client, job: Job, cpu_s: float, gpu_s: float, exit_code: int = 0):
    body = client.post(f"/api/v1/worker/jobs/{job.pk}/claim").json()
    ran_for(body["attempt_id"], 4 * 3600)  # long enough for the times reported
    done = client.post(f"/api/v1/worker/attempts/{body['attempt_id']}/complete",
                       {"exit_code": exit_code, "failure_class": "infrastructure" if exit_code else None,
                        "cpu_seconds": cpu_s, "gpu_seconds": gpu_s},
                       format="json", HTTP_X_FENCING_TOKEN=body["fencing_token"])
    assert done.status_code == 200, done.content


def test_usage_is_summed_per_user_institution_worker_and_owner(user, other_user, staff, lab, worker):
    carol = _make_user("carol")
    Membership.objects.create(user=carol, institution=lab, is_admin=True)
    donor = pool_worker("lab-pc", GPU16_CAPS)
    Worker.objects.filter(pk=donor.worker.pk).update(owner=carol, institution=lab)
    Worker.objects.filter(pk=worker.worker.pk).update(owner=staff)
    retried = submit_gpu_job(user)
    run_attempt(donor, retried, 10.0, 3600.0, exit_code=1)  # infrastructure failure: retried
    run_attempt(donor, retried, 5.0, 1800.0)  # every attempt that ran counts
    run_attempt(worker, submit(other_user), 2.5, 0.0)

    alice = APIClient()
    alice.force_authenticate(user)
    mine = alice.get("/api/v1/usage/").json()
    assert mine["user"]["used"] == {"attempts": 2, "cpu_seconds": 15.0, "gpu_seconds": 5400.0,
                                    "cpu_hours": round(15 / 3600, 4), "gpu_hours": 1.5}
    assert mine["user"]["donated"]["attempts"] == 0
    assert [i["slug"] for i in mine["institutions"]] == ["lab"]
    assert mine["institutions"][0]["used"]["gpu_seconds"] == 5400.0
    assert mine["institutions"][0]["donated"]["cpu_seconds"] == 15.0
    assert mine["workers"] == [] and [u["username"] for u in mine["users"]] == ["alice"]

    admin = APIClient()
    admin.force_authenticate(carol)
    theirs = admin.get("/api/v1/usage/").json()
    assert theirs["user"]["donated"]["gpu_hours"] == 1.5 and theirs["user"]["used"]["attempts"] == 0
    assert [(w["name"], w["donated"]["cpu_seconds"]) for w in theirs["workers"]] == [("lab-pc", 15.0)]
    assert [u["username"] for u in theirs["users"]] == ["alice"]  # members with usage; bob is no member

    everyone = APIClient()
    everyone.force_authenticate(staff)
    report = everyone.get("/api/v1/usage/").json()
    assert {u["username"]: u["used"]["cpu_seconds"] for u in report["users"]} == {"alice": 15.0, "bob": 2.5}
    assert {w["name"]: w["donated"]["cpu_seconds"] for w in report["workers"]} == {"lab-pc": 15.0, "worker-1": 2.5}
    assert report["user"]["donated"]["cpu_seconds"] == 2.5  # staff owns worker-1


def test_usage_period_and_bad_dates(user, worker):
    run_attempt(worker, submit(user), 4.0, 0.0)
    client = APIClient()
    client.force_authenticate(user)
    tomorrow = (timezone.now() + timedelta(days=1)).date().isoformat()
    assert client.get("/api/v1/usage/", {"until": tomorrow}).json()["user"]["used"]["cpu_seconds"] == 4.0
    assert client.get("/api/v1/usage/", {"since": tomorrow}).json()["user"]["used"]["cpu_seconds"] == 0.0
    bad = client.get("/api/v1/usage/", {"since": "last tuesday"})
    assert bad.status_code == 400 and "since" in bad.json()["error"]["fields"]
    backwards = client.get("/api/v1/usage/", {"since": tomorrow, "until": "2020-01-01"})
    assert backwards.status_code == 400 and "until" in backwards.json()["error"]["fields"]


def test_worker_api_shows_current_job_gpu_hours_and_selftest(user, staff, worker):
    job = submit(user)
    worker.post(f"/api/v1/worker/jobs/{job.pk}/claim")
    admin = APIClient()
    admin.force_authenticate(staff)
    row = admin.get("/api/v1/workers/").json()[0]
    assert row["current_job"]["application"] == "diagnostics" and row["online"]
    assert row["gpu_hours"] == 0.0 and row["selftest"]["result"] == "none"
    assert str(job.pk) not in str(row)  # the job is alice's: its id is not the worker admin's to see


def test_pool_slugs_must_be_queue_names(staff):
    with pytest.raises(services.InvalidInput) as refused:
        services.issue_enrollment_token(staff, pool_slugs=["Lab A"])
    assert "pools" in refused.value.fields


def test_an_agent_with_explicit_queues_still_consumes_its_own_queue_first():
    from workers.__main__ import _with_own_queue

    wid = "8631cb97-bb0a-4028-b1c6-ef203320831a"
    assert _with_own_queue(["pool.lab.gpu.16", "gpu.16"], wid) == [f"worker.{wid}", "pool.lab.gpu.16", "gpu.16"]
    assert _with_own_queue([f"worker.{wid}", "cpu"], wid) == [f"worker.{wid}", "cpu"]


def test_a_pool_job_waiting_on_an_offline_pool_says_when_it_spills_over(user, lab, settings):
    settings.LOCUS_POOL_SPILLOVER_SECONDS = 300
    w = pool_worker("lab-pc", CPU_CAPS)
    job = submit(user)
    Worker.objects.filter(pk=w.worker.pk).update(last_seen=timezone.now() - timedelta(hours=1))
    services.flag_unschedulable()
    job.refresh_from_db()
    assert job.waiting_reason == "no online worker in pool lab; it moves to the shared queue cpu after 300 s"
