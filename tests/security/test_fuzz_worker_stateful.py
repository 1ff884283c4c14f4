"""Stateful fuzzing of the worker side: sequences of worker calls with hostile bodies, then everything reads.

The schemathesis suite (test_fuzz_api.py) sends one request at a time. The worst findings of issue 18 were
not a 500 on the request itself but a row it stored that broke *later* reads for everyone (a heartbeat with
`"memory_gb": "16"` made every submission and every sweep fail). Here a Hypothesis state machine enrolls
workers, heartbeats, claims (real and forged ids), sends progress, logs, outputs and completions built from
near-valid and hostile values (numbers as strings, NaN, 1e308, 2**40, nested junk, wrong types), and after
every step checks that:

- no worker call answered 5xx;
- a user can still submit, the sweep still runs, the workers and usage API and pages still answer 200, and
  every job still reads.
"""

from __future__ import annotations

import json
import math
import os
import uuid

import pytest
from django.test import Client
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule
from rest_framework.test import APIClient

from jobs import services
from jobs.models import Attempt, EnrollmentToken, Institution, Job, Membership
from tests.conftest import CPU_CAPS, _make_user
from tests.security.test_fuzz_api import in_process  # noqa: F401 - a fixture: requests in the test's transaction

pytestmark = pytest.mark.django_db

# About a minute on two cores; LOCUS_FUZZ_EXAMPLES=200 for a long run.
MAX_EXAMPLES, STEPS = int(os.environ.get("LOCUS_FUZZ_EXAMPLES", 12)), 12

JUNK = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
HOSTILE_NUMBER = st.sampled_from([
    "16", "1e999", "nan", "Infinity", 1e308, -1.0, 2**40, -(2**40), 2**31, True, [], {}, None, "", "0x10",
]) | st.floats(allow_nan=True, allow_infinity=True) | st.integers(min_value=-(2**64), max_value=2**64)


def maybe(valid: st.SearchStrategy) -> st.SearchStrategy:
    """Mostly valid values (so calls get past the first check), sometimes hostile ones."""
    return st.one_of(valid, valid, HOSTILE_NUMBER, JUNK)


GPU = st.fixed_dictionaries({}, optional={
    "name": maybe(st.text(max_size=30)), "memory_gb": maybe(st.floats(0, 200)),
    "compute_capability": maybe(st.sampled_from(["8.0", "9.0", None]))})
CAPABILITIES = st.fixed_dictionaries({}, optional={
    "cpu_count": maybe(st.integers(1, 128)), "memory_gb": maybe(st.floats(0, 2048)),
    "gpus": maybe(st.lists(maybe(GPU), max_size=3)), "hostname": maybe(st.text(max_size=40)),
    "code_version": maybe(st.text(max_size=20)), "extra": JUNK})
PROGRESS = st.fixed_dictionaries({}, optional={
    "progress": maybe(st.floats(0, 1)), "stage": maybe(st.text(max_size=10)),
    "epoch": maybe(st.integers(0, 100)), "metrics": maybe(st.dictionaries(st.text(max_size=5), HOSTILE_NUMBER))})
COMPLETE = st.fixed_dictionaries({"exit_code": maybe(st.integers(-9, 3))}, optional={
    "failure_class": maybe(st.sampled_from(["input", "algorithm", "infrastructure", None, "bogus"])),
    "reason": maybe(st.text(max_size=50)), "cpu_seconds": maybe(st.floats(0, 1e4)),
    "gpu_seconds": maybe(st.floats(0, 1e4)), "handback": maybe(st.booleans()),
    "outputs": maybe(st.lists(maybe(st.fixed_dictionaries({
        "name": maybe(st.text(max_size=20)), "key": maybe(st.text(max_size=40)),
        "size": maybe(st.integers(0, 10)), "sha256": maybe(st.just("0" * 64))})), max_size=2))})


def body(value) -> str:
    """JSON as Python writes it: NaN and Infinity included, as an agent's `requests` would send them."""
    return json.dumps(value, allow_nan=True)


def answered(response) -> None:
    assert response.status_code < 500, f"{response.status_code}: {response.content[:300]!r}"


class WorkerSide(RuleBasedStateMachine):
    workers = Bundle("workers")
    attempts = Bundle("attempts")

    def __init__(self):
        super().__init__()
        self.user = _make_user(f"fuzz-{uuid.uuid4().hex[:8]}")
        lab, _ = Institution.objects.get_or_create(slug="fuzzlab", defaults={"name": "Fuzz lab"})
        Membership.objects.create(user=self.user, institution=lab)
        self.staff = _make_user(f"staff-{uuid.uuid4().hex[:8]}", is_staff=True, is_superuser=True)
        self.api = APIClient()
        self.api.force_authenticate(self.user)
        self.staff_api = APIClient()
        self.staff_api.force_authenticate(self.staff)
        self.browser = Client()
        self.browser.force_login(self.staff)
        self.jobs: list[str] = []

    def _client(self, token: str) -> APIClient:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Worker {token}")
        return client

    @rule(target=workers, name=st.text(max_size=30), caps=CAPABILITIES, pool=st.booleans())
    def enroll(self, name, caps, pool):
        _, raw = EnrollmentToken.issue(None, pools=["fuzzlab"] if pool else [])
        response = APIClient().post("/api/v1/worker/enroll", body({"enrollment_token": raw, "name": name,
                                                                   "capabilities": caps}),
                                    content_type="application/json")
        answered(response)
        if response.status_code != 201:  # refused: enroll a worker that can run the jobs, to go on
            _, raw = EnrollmentToken.issue(None, pools=["fuzzlab"] if pool else [])
            response = APIClient().post("/api/v1/worker/enroll", {"enrollment_token": raw, "capabilities": CPU_CAPS},
                                        format="json")
            assert response.status_code == 201, response.content
        return self._client(response.json()["token"])

    @rule(junk=JUNK)
    def enroll_with_junk(self, junk):
        answered(APIClient().post("/api/v1/worker/enroll", body(junk), content_type="application/json"))

    @rule(worker=workers, caps=CAPABILITIES | JUNK)
    def heartbeat(self, worker, caps):
        answered(worker.post("/api/v1/worker/heartbeat", body({"capabilities": caps}),
                             content_type="application/json"))

    @rule()
    def submit(self):
        response = self.api.post("/api/v1/jobs/", {"application": "diagnostics", "entrypoint": "selftest"},
                                 format="json")
        assert response.status_code in (201, 429), response.content
        if response.status_code == 201:
            self.jobs.append(response.json()["id"])

    @rule(target=attempts, worker=workers, forged=st.booleans(), data=st.data())
    def claim(self, worker, forged, data):
        job_id = str(uuid.uuid4()) if forged or not self.jobs else data.draw(st.sampled_from(self.jobs))
        response = worker.post(f"/api/v1/worker/jobs/{job_id}/claim")
        answered(response)
        return (worker, response.json()) if response.status_code == 200 else (worker, None)

    @rule(target=attempts, worker=workers, wait=maybe(st.floats(0, 0.05)))
    def claim_next(self, worker, wait):
        response = worker.post("/api/v1/worker/claim-next", body({"wait_s": wait}), content_type="application/json")
        answered(response)
        return (worker, response.json()) if response.status_code == 200 else (worker, None)

    def _call(self, attempt, verb: str, payload) -> None:
        worker, claimed = attempt
        if claimed is None:
            return
        answered(worker.post(f"/api/v1/worker/attempts/{claimed['attempt_id']}/{verb}", body(payload),
                             content_type="application/json", HTTP_X_FENCING_TOKEN=claimed["fencing_token"]))

    @rule(attempt=attempts, progress=PROGRESS | JUNK)
    def attempt_heartbeat(self, attempt, progress):
        self._call(attempt, "heartbeat", {"progress": progress})

    @rule(attempt=attempts, text=maybe(st.text(max_size=200)))
    def log(self, attempt, text):
        self._call(attempt, "log", {"text": text})

    @rule(attempt=attempts, name=maybe(st.text(max_size=40)), size=maybe(st.integers(0, 2**20)),
          sha=maybe(st.just("a" * 64)))
    def output(self, attempt, name, size, sha):
        self._call(attempt, "outputs", {"name": name, "size": size, "sha256": sha})

    @rule(attempt=consumes(attempts), payload=COMPLETE | JUNK)
    def complete(self, attempt, payload):
        self._call(attempt, "complete", payload)

    @invariant()
    def everything_still_reads(self):
        response = self.api.post("/api/v1/jobs/", {"application": "diagnostics", "entrypoint": "selftest"},
                                 format="json")
        assert response.status_code in (201, 429), response.content
        if response.status_code == 201:
            self.jobs.append(response.json()["id"])
        services.sweep()
        for path in ("/api/v1/workers/", "/api/v1/usage/", "/api/v1/jobs/"):
            assert self.staff_api.get(path).status_code == 200, path
        for path in ("/workers/", "/usage/"):
            assert self.browser.get(path).status_code == 200, path
        for job_id in self.jobs[-3:]:
            assert self.api.get(f"/api/v1/jobs/{job_id}/").status_code == 200
            assert self.browser.get(f"/jobs/{job_id}/").status_code in (200, 404)  # staff's view of alice's job


@pytest.fixture
def settings_override(settings):
    settings.LOCUS_SELFTEST_ON_ENROLL = False
    settings.LOCUS_MAX_ACTIVE_JOBS = 10_000
    return settings


@pytest.mark.usefixtures("in_process")
def test_no_sequence_of_worker_calls_fails_or_breaks_a_later_read(settings_override):
    WorkerSide.TestCase.settings = settings(max_examples=MAX_EXAMPLES, stateful_step_count=STEPS, deadline=None,
                                            database=None, derandomize=True, suppress_health_check=list(HealthCheck))
    WorkerSide.TestCase().runTest()
    # What the fuzzing left behind is in the state machine's states, with sane numbers.
    assert set(Job.objects.values_list("status", flat=True)) <= set(Job.Status.values)
    for cpu, gpu, exit_code in Attempt.objects.values_list("cpu_seconds", "gpu_seconds", "exit_code"):
        assert math.isfinite(cpu) and math.isfinite(gpu) and cpu >= 0 and gpu >= 0
        assert exit_code is None or -(2**31) <= exit_code < 2**31
    assert Attempt.objects.exists()  # the machine got past the checks, not only into them
