"""Managing workers: who sees which, enrollment tokens, and revocation cutting a worker off."""

import pytest
from rest_framework.test import APIClient

from jobs.models import Institution, Membership

pytestmark = pytest.mark.django_db


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_staff_enrolls_and_revokes_a_worker(staff):
    admin = client_for(staff)
    raw = admin.post("/api/v1/enrollment-tokens/", {"hours": 1}, format="json").json()["token"]
    enrolled = APIClient().post("/api/v1/worker/enroll", {"enrollment_token": raw, "name": "gpu-box",
                                                           "capabilities": {"cpu_count": 8}}, format="json").json()
    worker = APIClient()
    worker.credentials(HTTP_AUTHORIZATION=f"Worker {enrolled['token']}")
    assert worker.post("/api/v1/worker/heartbeat", {}, format="json").status_code == 200
    listed = admin.get("/api/v1/workers/").json()
    assert [w["name"] for w in listed] == ["gpu-box"] and listed[0]["online"]
    assert admin.post(f"/api/v1/workers/{enrolled['worker_id']}/revoke/").json()["enabled"] is False
    assert worker.post("/api/v1/worker/heartbeat", {}, format="json").status_code == 401


def test_plain_users_cannot_enroll_or_see_other_workers(user, worker):
    client = client_for(user)
    assert client.post("/api/v1/enrollment-tokens/", {}, format="json").status_code == 400
    assert client.get("/api/v1/workers/").json() == []
    assert client.get(f"/api/v1/workers/{worker.worker.pk}/").status_code == 404


def test_institution_admin_enrolls_into_its_own_pool_only(user, other_user):
    lab = Institution.objects.create(slug="lab", name="Lab")
    Membership.objects.create(user=user, institution=lab, is_admin=True)
    Membership.objects.create(user=other_user, institution=lab, is_admin=False)
    admin = client_for(user)
    ok = admin.post("/api/v1/enrollment-tokens/", {"institution": "lab", "pools": ["lab"]}, format="json")
    assert ok.status_code == 201
    assert admin.post("/api/v1/enrollment-tokens/", {"institution": "lab", "pools": ["other"]},
                      format="json").status_code == 400
    assert client_for(other_user).post("/api/v1/enrollment-tokens/", {"institution": "lab"},
                                       format="json").status_code == 400
    raw = ok.json()["token"]
    enrolled = APIClient().post("/api/v1/worker/enroll", {"enrollment_token": raw, "name": "lab-pc"},
                                format="json").json()
    assert "pool.lab.cpu" in enrolled["queues"]
    assert [w["name"] for w in admin.get("/api/v1/workers/").json()] == ["lab-pc"]
