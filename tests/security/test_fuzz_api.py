"""Fuzzing the user and worker APIs with schemathesis, from the OpenAPI schema drf-spectacular serves.

Every operation gets a bounded number of generated requests (valid and invalid bodies, queries, headers,
path parameters, other verbs) sent to the portal's WSGI application in-process (schemathesis' WSGI
transport, the whole middleware stack included), authenticated as it would be in real use: the
user API with alice's API token, the worker API with a worker token and its attempt's fencing token. Path
parameters are real objects about half of the time, so bodies reach the code behind the lookup. Checked:

- never a 5xx;
- every 4xx carries the one JSON error shape `{"error": {"code", "message", ...}}`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os

import pytest
import schemathesis
from django.core import signals
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, Phase, settings

from jobs import services, states
from jobs.models import EnrollmentToken
from tests.conftest import CPU_CAPS

pytestmark = pytest.mark.django_db

MAX_EXAMPLES = 15


def _openapi() -> dict:
    """The schema exactly as /api/schema/ serves it (JSON)."""
    from drf_spectacular.generators import SchemaGenerator
    from drf_spectacular.renderers import OpenApiJsonRenderer

    return json.loads(OpenApiJsonRenderer().render(SchemaGenerator().get_schema(request=None, public=True)))


SCHEMA = schemathesis.openapi.from_dict(_openapi())
SCHEMA.app = get_wsgi_application()  # requests go through the WSGI transport (host "localhost")
USER_API = SCHEMA.exclude(path_regex=r"^/api/v1/worker/")
WORKER_API = SCHEMA.include(path_regex=r"^/api/v1/worker/")

fuzz_settings = settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=True,
                         phases=[Phase.explicit, Phase.generate],
                         suppress_health_check=list(HealthCheck))


@pytest.fixture
def in_process(db):
    """Requests run in the test's own transaction, as with django's test client: the handler must not close
    the connection at the end of each request (CONN_MAX_AGE = 0), or the test's transaction would go too."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def stage(in_process, user, dataset):
    """Alice's objects and the credentials."""
    from portal.accounts.models import ApiToken

    frames = services.add_file(dataset, "movie.tif", io.BytesIO(b"II*\x00frames"))
    running, _ = services.submit(user, application="diagnostics", entrypoint="selftest")
    worker, worker_token = _worker_token()
    attempt = states.claim(running.pk, worker)
    queued, _ = services.submit(user, application="diagnostics", entrypoint="selftest")
    _, token = ApiToken.issue(user, "fuzz")
    return {
        "token": token, "worker_token": worker_token, "attempt": attempt,
        "ids": {"dataset": str(dataset.pk), "file": str(frames.pk), "job": str(running.pk),
                "queued_job": str(queued.pk), "worker": str(worker.pk), "token": "1",
                "attempt": str(attempt.pk)},
    }


def _worker_token():
    """The worker whose token the fuzzer uses; its capabilities cover the diagnostics jobs."""
    _, raw = EnrollmentToken.issue(None)
    return services.enroll(raw, "fuzz-worker", CPU_CAPS)


def _real_ids(case, ids: dict[str, str]) -> None:
    """About half of the cases get real objects as path parameters (chosen by a hash, so reproducible)."""
    if not case.path_parameters:
        return
    seed = hashlib.sha256(repr(sorted(case.path_parameters.items())).encode()).digest()[0]
    if seed % 2:
        return
    path = case.path
    for name in case.path_parameters:
        if name == "attempt_id":
            case.path_parameters[name] = ids["attempt"]
        elif name == "job_id":
            case.path_parameters[name] = ids["queued_job"]
        elif name in ("id", "pk"):
            kind = path.split("/")[3]  # /api/v1/<kind>/{id}/...
            case.path_parameters[name] = {"datasets": ids["dataset"], "files": ids["file"], "jobs": ids["job"],
                                          "workers": ids["worker"], "tokens": ids["token"]}.get(kind, "x")


def check_response(case, response) -> None:
    if os.environ.get("LOCUS_FUZZ_TRACE"):  # LOCUS_FUZZ_TRACE=1 pytest -s: one line per request
        print("TRACE", case.method, case.path, response.status_code, f"{response.elapsed:.3f}")
    where = f"{case.method} {case.formatted_path} → {response.status_code}\n{case.as_curl_command()}"
    assert response.status_code < 500, f"server error: {where}\n{response.text[:500]}"
    if 400 <= response.status_code < 500:
        try:
            body = response.json()
        except ValueError:
            pytest.fail(f"4xx without a JSON body: {where}\n{response.text[:300]}")
        error = body.get("error") if isinstance(body, dict) else None
        assert isinstance(error, dict) and error.get("code") and isinstance(error.get("message"), str), (
            f"4xx without the JSON error shape: {where}\n{body}")


@USER_API.parametrize()
@fuzz_settings
def test_user_api_never_fails_and_always_answers_errors_in_json(case, stage):
    _real_ids(case, stage["ids"])
    response = case.call(headers={"Authorization": f"Token {stage['token']}",
                                            "Accept": "application/json"})
    check_response(case, response)


@WORKER_API.parametrize()
@fuzz_settings
def test_worker_api_never_fails_and_always_answers_errors_in_json(case, stage):
    _real_ids(case, stage["ids"])
    body = case.body if isinstance(case.body, dict) else {}
    if isinstance(body.get("wait_s"), int | float) and not isinstance(body["wait_s"], bool):
        body["wait_s"] = min(body["wait_s"], 0.2)  # a long poll is up to 30 s of nothing: keep the run short
    headers = {"Accept": "application/json", "X-Fencing-Token": stage["attempt"].fencing_token}
    if not case.path.endswith("/enroll"):
        headers["Authorization"] = f"Worker {stage['worker_token']}"
    response = case.call(headers=headers)
    check_response(case, response)
