"""The cast of every test: users, workers, API clients, and a celery app that sends to the test broker."""

from __future__ import annotations

import hashlib
import io

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient


def _make_user(username: str, **extra):
    return get_user_model().objects.create_user(username, f"{username}@example.org", "pw-" + username, **extra)


@pytest.fixture
def user(db):
    return _make_user("alice")


@pytest.fixture
def other_user(db):
    return _make_user("bob")


@pytest.fixture
def staff(db):
    return _make_user("root", is_staff=True, is_superuser=True)


def _api_client(user) -> APIClient:
    from portal.accounts.models import ApiToken

    _, raw = ApiToken.issue(user, "tests")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {raw}")
    return client


@pytest.fixture
def api(user) -> APIClient:
    return _api_client(user)


@pytest.fixture
def other_api(other_user) -> APIClient:
    return _api_client(other_user)


CPU_CAPS = {"cpu_count": 4, "memory_gb": 16, "gpus": []}
GPU16_CAPS = {"cpu_count": 8, "memory_gb": 64, "gpus": [{"name": "Fake A4000", "memory_gb": 16}]}


def _enrolled_worker(name: str, caps: dict):
    from jobs import services
    from jobs.models import EnrollmentToken

    _, raw = EnrollmentToken.issue(None)
    # No selftest: the cast's workers start with an empty queue (tests/unit/test_pools.py covers the selftest).
    worker, token = services.enroll(raw, name, caps, selftest_job=False)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Worker {token}")
    client.worker = worker
    return client


@pytest.fixture
def worker(db) -> APIClient:
    """An API client authenticated as an enrolled CPU worker; `.worker` is the model."""
    return _enrolled_worker("worker-1", CPU_CAPS)


@pytest.fixture
def other_worker(db) -> APIClient:
    return _enrolled_worker("worker-2", CPU_CAPS)


@pytest.fixture
def dataset(user):
    from jobs.models import Dataset

    return Dataset.objects.create(owner=user, name="beads")


def upload(api: APIClient, dataset_id, name: str, data: bytes):
    fh = io.BytesIO(data)
    fh.name = name
    return api.post(f"/api/v1/datasets/{dataset_id}/files/", {"file": fh}, format="multipart")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def play_attempt(worker, job, outputs: dict[str, bytes], exit_code: int = 0) -> dict:
    """Claim `job` as `worker`, upload `outputs` and complete the attempt, as the agent does; the claim's body."""
    body = worker.post(f"/api/v1/worker/jobs/{job.pk}/claim").json()
    reported = []
    for name, data in outputs.items():
        target = worker.post(f"/api/v1/worker/attempts/{body['attempt_id']}/outputs",
                             {"name": name, "size": len(data), "sha256": sha256(data)}, format="json",
                             HTTP_X_FENCING_TOKEN=body["fencing_token"]).json()
        path = target["url"].split("://", 1)[1].split("/", 1)[1]
        assert APIClient().put("/" + path, data, content_type="application/octet-stream").status_code == 201
        reported.append({"name": name, "key": target["key"], "size": len(data), "sha256": sha256(data)})
    done = worker.post(f"/api/v1/worker/attempts/{body['attempt_id']}/complete",
                       {"exit_code": exit_code, "outputs": reported}, format="json",
                       HTTP_X_FENCING_TOKEN=body["fencing_token"])
    assert done.status_code == 200, done.content
    return body


def ran_for(attempt_id, seconds: float) -> None:
    """Backdate an attempt's start: the portal caps reported CPU/GPU time by the attempt's wall time."""
    from datetime import timedelta

    from django.utils import timezone

    from jobs.models import Attempt

    Attempt.objects.filter(pk=attempt_id).update(started_at=timezone.now() - timedelta(seconds=seconds))


def submit_gpu_job(owner):
    """A job that needs one GPU (8 GB) and no inputs, so that it can be credited GPU time."""
    from jobs import services

    job, _ = services.submit(owner, application="simulation", entrypoint="simulate-gpu")
    return job


TEST_REGISTRY = """
diagnostics:
  "1.0":
    selftest:
      summary: Self-test
      command: [python, -m, algorithms.diagnostics, selftest]
      inputs: {}
      params: {$ref: %(schemas)s/diagnostics_selftest.json}
      outputs: [report]
      hardware: {gpu: 0, gpu_memory_gb: 0, cpu: 1, memory_gb: 1}
      timeout_s: 900
      max_attempts: 2
fit:
  "1.0":
    run:
      summary: Fit frames with a calibration
      command: [python, -m, algorithms.fit, run]
      inputs: {frames: {suffixes: [.tif, .tiff], count: "1..2"}, calibration: {suffixes: [.mat], count: 1}}
      params: {type: object, additionalProperties: false,
               properties: {threshold: {type: number, default: 0.5, minimum: 0},
                            roi: {type: object, properties: {x0: {type: integer, minimum: 0, default: 0}}}}}
      outputs: [locs]
      hardware: {gpu: 1, gpu_memory_gb: 12, cpu: 2, memory_gb: 8}
      timeout_s: 3600
      max_attempts: 2
"""


@pytest.fixture
def test_registry(tmp_path, settings):
    """A registry with input slots and a GPU entry, in place of the packaged one for this test."""
    from pathlib import Path

    import algorithms
    from jobs.registry import get_registry

    path = tmp_path / "registry.yaml"
    path.write_text(TEST_REGISTRY % {"schemas": Path(algorithms.__file__).parent / "schemas"})
    settings.LOCUS_REGISTRY_PATH = str(path)
    get_registry.cache_clear()
    yield get_registry()
    get_registry.cache_clear()


@pytest.fixture(autouse=True)
def _media_root(tmp_path):
    """Every test stores uploads in its own folder (not via the `settings` fixture: some tests own that name)."""
    from django.test import override_settings

    with override_settings(MEDIA_ROOT=str(tmp_path / "media")):
        yield


@pytest.fixture(autouse=True)
def _eager_portal_tasks(request):
    """Unit tests run portal tasks (email) in-process; integration tests use real worker processes."""
    from portal.celery import app

    eager = not request.node.get_closest_marker("integration")
    app.conf.task_always_eager = eager
    yield
    app.conf.task_always_eager = False


def pytest_collection_modifyitems(config, items):
    """Tests marked `slow` run only when asked for (`-m slow` or LOCUS_RUN_SLOW=1): CI stays in minutes."""
    import os

    if "slow" in (config.getoption("-m") or "") or os.environ.get("LOCUS_RUN_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: run with -m slow or LOCUS_RUN_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
