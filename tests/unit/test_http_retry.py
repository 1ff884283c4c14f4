"""The one HTTP retry policy (`locus_client.retry`) as both clients live it, against a real loopback server:
a throttled 429 waits its `Retry-After` and goes on, 5xx and dropped connections are retried with backoff,
and no other 4xx is ever sent twice. The worker's case that matters: a finished result's `complete` call
that meets a throttle must not be thrown away."""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from locus_client import Locus, LocusError
from locus_client.retry import RetryPolicy, retry_after_s
from workers.client import Backoff, Conflict, NotFound, PortalError, PortalUnavailable, WorkerClient

COMPLETE = "/api/v1/worker/attempts/a1/complete"
APPS = "/api/v1/applications/"


class ScriptedServer:
    """A loopback HTTP server answering from a script: each request takes the next scripted answer
    `(status, headers, body)`; once the script is spent it answers 200 with `ok_body`. It records every
    request as (method, path, monotonic time)."""

    def __init__(self, ok_body: Any):
        self.ok_body = ok_body
        self.script: list[tuple[int, dict[str, str], Any]] = []
        self.seen: list[tuple[str, str, float]] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with server.lock:
                    server.seen.append((self.command, self.path.split("?")[0], time.monotonic()))
                    status, headers, body = (
                        server.script.pop(0) if server.script else (200, {}, server.ok_body)
                    )
                data = json.dumps(body).encode()
                self.send_response(status)
                for key, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = _answer

            def log_message(self, *args: Any) -> None:  # keep pytest's output clean
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def then(self, status: int, headers: dict[str, str] | None = None, body: Any = None) -> ScriptedServer:
        self.script.append((status, headers or {}, body if body is not None else _error_body(status)))
        return self

    def paths(self, method: str = "") -> list[str]:
        return [p for m, p, _ in self.seen if not method or m == method]

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _error_body(status: int, code: str = "") -> dict[str, Any]:
    return {"error": {"code": code or f"http_{status}", "message": f"scripted {status}"}}


class Sleeps(list):
    """A `sleep` for the policy that records each wait; waits really only when `real` (to time a test)."""

    def __init__(self, real: bool = False):
        super().__init__()
        self.real = real

    def __call__(self, seconds: float) -> None:
        self.append(seconds)
        if self.real:
            time.sleep(seconds)


@pytest.fixture
def server():
    scripted = ScriptedServer(ok_body={"status": "succeeded"})
    yield scripted
    scripted.stop()


@pytest.fixture
def apps_server():
    scripted = ScriptedServer(ok_body=[{"name": "diagnostics"}])
    yield scripted
    scripted.stop()


def worker(url: str, sleeps: Sleeps, retries: int = 3) -> WorkerClient:
    return WorkerClient(url, "t", timeout_s=5, backoff=Backoff(retries=retries, base_s=0.01, sleep=sleeps))


def user(url: str, sleeps: Sleeps, retries: int = 4) -> Locus:
    locus = Locus(url, "t", timeout=5, retries=retries)
    locus.policy = replace(locus.policy, base_s=0.01, sleep=sleeps)
    return locus


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed on leaving: nothing listens there


# --- the worker client -----------------------------------------------------------------------------------


def test_a_throttled_completion_waits_retry_after_and_the_result_is_not_thrown_away(server):
    server.then(429, {"Retry-After": "1"}, _error_body(429, "throttled"))
    sleeps = Sleeps(real=True)
    done = worker(server.url, sleeps).complete("a1", "fence", {"status": "succeeded", "outputs": []})
    assert done == {"status": "succeeded"}
    assert server.paths("POST") == [COMPLETE, COMPLETE]  # one retry
    assert sleeps == [1.0]  # the server's wait, not a backoff
    gap = server.seen[1][2] - server.seen[0][2]
    assert 0.95 <= gap < 3.0


def test_a_5xx_on_completion_is_retried(server):
    server.then(503).then(502)
    sleeps = Sleeps()
    done = worker(server.url, sleeps).complete("a1", "fence", {"status": "succeeded"})
    assert done == {"status": "succeeded"}
    assert server.paths("POST") == [COMPLETE] * 3
    assert len(sleeps) == 2 and all(0 <= s <= 0.02 for s in sleeps)  # jittered backoff: base 0.01 s, doubling


@pytest.mark.parametrize(("status", "error"), [(400, PortalError), (404, NotFound), (409, Conflict)])
def test_a_4xx_on_completion_is_sent_once(server, status, error):
    server.then(status)
    sleeps = Sleeps()
    with pytest.raises(error) as info:
        worker(server.url, sleeps).complete("a1", "fence", {"status": "succeeded"})
    assert info.value.status == status and not isinstance(info.value, PortalUnavailable)
    assert server.paths() == [COMPLETE] and sleeps == []


def test_a_429_without_retry_after_is_retried_with_backoff(server):
    server.then(429, body="<html>slow down</html>")  # a proxy's rate limit: no header, no portal body
    sleeps = Sleeps()
    assert worker(server.url, sleeps).complete("a1", "fence", {}) == {"status": "succeeded"}
    assert server.paths() == [COMPLETE] * 2 and 0 <= sleeps[0] <= 0.01


def test_a_throttle_that_outlasts_the_retries_is_unavailability_not_a_refusal(server):
    for _ in range(3):
        server.then(429, {"Retry-After": "0"}, _error_body(429, "throttled"))
    with pytest.raises(PortalUnavailable) as info:  # so a claim's message is requeued, not dropped
        worker(server.url, Sleeps(), retries=2).complete("a1", "fence", {})
    assert info.value.status == 429 and len(server.paths()) == 3


def test_an_absurd_retry_after_is_capped(server):
    server.then(429, {"Retry-After": "86400"})
    sleeps = Sleeps()
    worker(server.url, sleeps).complete("a1", "fence", {})
    assert sleeps == [300.0]


def test_connection_refused_is_retried_then_the_worker_client_reports_unavailable():
    sleeps = Sleeps()
    with pytest.raises(PortalUnavailable, match="ConnectionError"):
        worker(f"http://127.0.0.1:{closed_port()}", sleeps, retries=3).complete("a1", "fence", {})
    assert len(sleeps) == 3


# --- the user client, through the same policy ------------------------------------------------------------


def test_the_user_client_waits_retry_after_then_goes_on(apps_server):
    apps_server.then(429, {"Retry-After": "1"}, _error_body(429, "throttled"))
    sleeps = Sleeps(real=True)
    assert user(apps_server.url, sleeps).applications() == [{"name": "diagnostics"}]
    assert apps_server.paths() == [APPS, APPS] and sleeps == [1.0]
    assert apps_server.seen[1][2] - apps_server.seen[0][2] >= 0.95


def test_the_user_client_retries_a_5xx(apps_server):
    apps_server.then(503).then(500)
    sleeps = Sleeps()
    assert user(apps_server.url, sleeps).applications() == [{"name": "diagnostics"}]
    assert apps_server.paths() == [APPS] * 3 and len(sleeps) == 2


@pytest.mark.parametrize("status", [400, 404, 409])
def test_the_user_client_sends_a_4xx_once(apps_server, status):
    apps_server.then(status)
    sleeps = Sleeps()
    with pytest.raises(LocusError) as info:
        user(apps_server.url, sleeps).applications()
    assert info.value.status == status and apps_server.paths() == [APPS] and sleeps == []


def test_a_quota_refusal_is_an_answer_not_a_throttle(apps_server):
    apps_server.then(429, body=_error_body(429, "quota_exceeded"))  # too many active jobs: no Retry-After
    sleeps = Sleeps()
    with pytest.raises(LocusError) as info:
        user(apps_server.url, sleeps).submit("diagnostics", "checksum")
    assert info.value.code == "quota_exceeded" and apps_server.paths() == ["/api/v1/jobs/"] and sleeps == []


def test_a_call_that_is_not_safe_to_repeat_is_sent_once_even_on_a_5xx(apps_server):
    apps_server.then(503)
    with pytest.raises(LocusError) as info:
        user(apps_server.url, Sleeps()).create_dataset("once")
    assert info.value.status == 503 and apps_server.paths() == ["/api/v1/datasets/"]


def test_connection_refused_is_retried_then_the_user_client_says_it_cannot_reach():
    sleeps = Sleeps()
    with pytest.raises(LocusError, match="cannot reach"):
        user(f"http://127.0.0.1:{closed_port()}", sleeps, retries=3).applications()
    assert len(sleeps) == 2  # `retries` counts tries for the user client


# --- the policy's reading of Retry-After -----------------------------------------------------------------


def _answer(status: int, retry_after: str | None) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    if retry_after is not None:
        response.headers["Retry-After"] = retry_after
    return response


def test_retry_after_reads_seconds_and_http_dates():
    now = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert retry_after_s(_answer(429, "7")) == 7.0
    assert retry_after_s(_answer(429, "1.5")) == 1.5
    assert retry_after_s(_answer(429, format_datetime(now + timedelta(seconds=42), usegmt=True)), now) == 42.0
    assert retry_after_s(_answer(429, format_datetime(now - timedelta(hours=1), usegmt=True)), now) == 0.0
    assert retry_after_s(_answer(429, None)) is None
    assert retry_after_s(_answer(429, "soon")) is None
    assert retry_after_s(_answer(429, "-3")) is None


def test_the_policy_never_retries_other_4xx_nor_non_transport_errors():
    policy = RetryPolicy()
    for status in (400, 401, 403, 404, 409, 413, 422):
        assert policy.delay(_answer(status, "1"), 0) is None  # a Retry-After on a refusal changes nothing
    assert policy.delay(requests.exceptions.InvalidURL("x"), 0) is None
    assert policy.delay(requests.ConnectTimeout("x"), 0) is not None
    assert policy.delay(_answer(429, "5"), 0) == 5.0
    assert 0 <= policy.delay(_answer(500, None), 10) <= policy.cap_s
