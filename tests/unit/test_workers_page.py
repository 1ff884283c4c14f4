"""The workers page: who may see it, what it shows, enrollment tokens with their commands, revocation; and the
usage page."""

import re

import pytest
from django.test import Client
from django.utils import timezone

from jobs import services
from jobs.models import EnrollmentToken, Institution, Job, Membership, Worker
from tests.conftest import GPU16_CAPS, _enrolled_worker, _make_user, ran_for, submit_gpu_job

pytestmark = pytest.mark.django_db


@pytest.fixture
def lab(db):
    return Institution.objects.create(slug="lab", name="Lab")


@pytest.fixture
def lab_admin(lab):
    carol = _make_user("carol")
    Membership.objects.create(user=carol, institution=lab, is_admin=True)
    return carol


def browser(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def lab_gpu_worker(lab, name="lab-gpu"):
    client = _enrolled_worker(name, GPU16_CAPS)
    Worker.objects.filter(pk=client.worker.pk).update(institution=lab, pools=["lab"])
    client.worker.refresh_from_db()
    return client


def test_plain_users_get_a_404_and_no_nav_link(user):
    page = browser(user)
    assert page.get("/workers/").status_code == 404
    assert b'href="/workers/"' not in page.get("/").content


def test_anonymous_visitors_are_sent_to_log_in(db):
    response = Client().get("/workers/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_an_institution_admin_sees_its_workers_only(lab, lab_admin, worker):
    mine = lab_gpu_worker(lab)
    page = browser(lab_admin).get("/workers/")
    assert page.status_code == 200
    html = page.content.decode()
    assert f"worker-{mine.worker.pk}" in html and f"worker-{worker.worker.pk}" not in html
    assert "Fake A4000 (16 GB)" in html and 'href="/workers/"' in html


def test_the_page_shows_state_current_job_gpu_hours_and_selftest(user, staff, lab):
    gpu = lab_gpu_worker(lab)
    job = submit_gpu_job(user)
    body = gpu.post(f"/api/v1/worker/jobs/{job.pk}/claim").json()
    ran_for(body["attempt_id"], 3 * 3600)
    gpu.post(f"/api/v1/worker/attempts/{body['attempt_id']}/complete",
             {"exit_code": 0, "cpu_seconds": 12.0, "gpu_seconds": 5400.0}, format="json",
             HTTP_X_FENCING_TOKEN=body["fencing_token"])
    busy, _ = services.submit(user, application="diagnostics", entrypoint="selftest")
    gpu.post(f"/api/v1/worker/jobs/{busy.pk}/claim")
    Worker.objects.filter(pk=gpu.worker.pk).update(selftest_job=job, selftest_report={
        "passed": False, "problems": ["the worker registered 1 GPU(s) but the job saw 0"], "gpus": [],
        "device": "cpu", "gflops": 12.5, "hostname": "lab-gpu", "cpu_count": 8, "memory_gb": 64})
    row = re.search(rf'<tr id="worker-{gpu.worker.pk}">.*?</tr>', browser(staff).get("/workers/").content.decode(),
                    re.S).group(0)
    assert "online" in row and "diagnostics / selftest" in row and "attempt 1" in row
    assert ">1.50<" in row  # 5400 GPU-seconds
    assert "selftest-failed" in row and "registered 1 GPU(s) but the job saw 0" in row
    assert timezone.now().strftime("%Y-%m-%d") in row  # last heartbeat


def test_an_admin_creates_a_token_for_its_pool_and_sees_the_commands_once(lab, lab_admin, settings):
    settings.PUBLIC_URL = "https://locus.example.org"
    response = browser(lab_admin).post("/workers/enrollment-tokens/", {"institution": "lab", "private_pool": "on",
                                                                     "hours": "2", "note": "bench PC"})
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    html = response.content.decode()
    raw = re.search(r'<pre class="token">(len_[\w-]+)</pre>', html).group(1)
    assert (f"python -m workers enroll --portal https://locus.example.org --enrollment-token {raw}"
            in html.replace("&quot;", '"'))
    assert "python -m workers start --pull" in html
    lab_pc = re.search(r'<pre class="commands lab-pc">(.*?)</pre>', html, re.S).group(1).strip().splitlines()
    assert len(lab_pc) == 5 and f"--enrollment-token {raw} --config /etc/locus/worker.json" in lab_pc[3]
    token = EnrollmentToken.objects.get(created_by=lab_admin)
    assert token.institution == lab and token.pools == ["lab"] and token.note == "bench PC"
    assert raw not in browser(lab_admin).get("/workers/").content.decode()  # never shown again
    worker, _ = services.enroll(raw, "bench-pc", GPU16_CAPS)
    assert worker.pools == ["lab"] and worker.institution == lab


def test_an_admin_cannot_pick_another_institution(lab, lab_admin):
    Institution.objects.create(slug="other", name="Other")
    response = browser(lab_admin).post("/workers/enrollment-tokens/", {"institution": "other", "hours": "2"})
    assert response.status_code == 400 and b"Select a valid choice" in response.content
    assert not EnrollmentToken.objects.exists()


def test_a_plain_user_cannot_create_tokens(user):
    assert browser(user).post("/workers/enrollment-tokens/", {"hours": "2"}).status_code == 404
    assert not EnrollmentToken.objects.exists()


def test_revoking_from_the_page_cuts_the_worker_off_and_hands_its_job_back(user, lab, lab_admin):
    gpu = lab_gpu_worker(lab)
    job, _ = services.submit(user, application="diagnostics", entrypoint="selftest")
    gpu.post(f"/api/v1/worker/jobs/{job.pk}/claim")
    page = browser(lab_admin)
    response = page.post(f"/workers/{gpu.worker.pk}/revoke/")
    assert response.status_code == 302 and response["Location"] == "/workers/"
    job.refresh_from_db()
    assert job.status == Job.Status.QUEUED and not Worker.objects.get(pk=gpu.worker.pk).enabled
    assert gpu.post("/api/v1/worker/heartbeat", {}, format="json").status_code == 401
    follow = page.get("/workers/").content.decode()
    assert "revoked" in follow and "handed back" in follow


def test_an_admin_cannot_revoke_another_institutions_worker(lab_admin, worker):
    assert browser(lab_admin).post(f"/workers/{worker.worker.pk}/revoke/").status_code == 404
    assert Worker.objects.get(pk=worker.worker.pk).enabled


def test_the_usage_page_shows_used_and_donated_hours(user, lab, lab_admin):
    Membership.objects.create(user=user, institution=lab)
    gpu = lab_gpu_worker(lab)
    Worker.objects.filter(pk=gpu.worker.pk).update(owner=lab_admin)
    job = submit_gpu_job(user)
    body = gpu.post(f"/api/v1/worker/jobs/{job.pk}/claim").json()
    ran_for(body["attempt_id"], 3 * 3600)
    gpu.post(f"/api/v1/worker/attempts/{body['attempt_id']}/complete",
             {"exit_code": 0, "cpu_seconds": 36.0, "gpu_seconds": 7200.0}, format="json",
             HTTP_X_FENCING_TOKEN=body["fencing_token"])
    used = browser(user).get("/usage/").content.decode()
    assert re.search(r"Used by your jobs</td><td>1</td><td>0.010</td><td>2.000</td>", used)
    donated = browser(lab_admin).get("/usage/").content.decode()
    assert re.search(r"Donated by your workers</td><td>1</td><td>0.010</td><td>2.000</td>", donated)
    assert re.search(r"<td>lab-gpu</td><td>carol</td><td>lab</td><td>1</td>", donated)
