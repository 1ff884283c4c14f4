"""An in-memory portal that speaks docs/worker-api.md over real HTTP, for the worker agent's unit tests.

It is a test double of the Django portal (being written separately): enough state to check what the agent
sends — claims, fenced attempt calls, logs, progress, uploaded bytes, completion — and knobs to make the
portal answer 5xx, 4xx, cancel or 409 exactly when a test wants.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PREFIX = "/api/v1/worker/"


@dataclass
class Attempt:
    attempt_id: str
    job_id: str
    fencing_token: str
    status: str = "running"  # running | succeeded | failed | lost | cancelled
    heartbeats: list[Any] = field(default_factory=list)
    log: str = ""
    targets: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> {name, size, sha256}
    completion: dict[str, Any] | None = None


@dataclass
class Job:
    job_id: str
    spec: dict[str, Any]
    inputs: list[dict[str, Any]]
    status: str = "queued"
    attempts: list[str] = field(default_factory=list)


class FakePortal:
    def __init__(self, lease_s: float = 3.0):
        self.lease_s = lease_s
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.enrollment_tokens: set[str] = set()
        self.workers: dict[str, str] = {}  # token -> worker_id
        self.worker_heartbeats: list[dict[str, Any]] = []
        self.queues = ["cpu"]
        self.jobs: dict[str, Job] = {}
        self.attempts: dict[str, Attempt] = {}
        self.files: dict[str, bytes] = {}
        self.uploads: dict[str, bytes] = {}
        self.requests: list[tuple[str, str, int]] = []
        self.file_request_headers: list[dict[str, str]] = []
        self.inject: dict[str, list[tuple[int, dict[str, Any] | None]]] = defaultdict(list)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    # -- test controls ------------------------------------------------------------------------------------
    def start(self) -> FakePortal:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add_worker(self) -> tuple[str, str]:
        token, worker_id = secrets.token_hex(16), str(uuid.uuid4())
        self.workers[token] = worker_id
        return worker_id, token

    def add_file(self, name: str, data: bytes) -> str:
        self.files[name] = data
        return f"/files/{name}"

    def add_job(self, spec: dict[str, Any], inputs: list[dict[str, Any]] | None = None) -> str:
        job_id = str(uuid.uuid4())
        with self.lock:
            self.jobs[job_id] = Job(job_id, spec, inputs or [])
        return job_id

    def fail_next(self, path_regex: str, *answers: int | tuple[int, dict[str, Any]]) -> None:
        """The next requests whose path matches get these statuses (optionally with a body) instead."""
        for a in answers:
            self.inject[path_regex].append(a if isinstance(a, tuple) else (a, None))

    def cancel(self, job_id: str) -> None:
        with self.lock:
            job = self.jobs[job_id]
            job.status = "cancelled"
            for aid in job.attempts:
                if self.attempts[aid].status == "running":
                    self.attempts[aid].status = "cancelled"

    def expire(self, attempt_id: str) -> None:
        """The sweeper declared the lease lost: the job is queued again, the old token is stale."""
        with self.lock:
            attempt = self.attempts[attempt_id]
            attempt.status = "lost"
            self.jobs[attempt.job_id].status = "queued"

    def wait_for(self, predicate: Any, timeout: float = 90.0) -> Any:
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                value = predicate()
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("condition not reached in time")
                self.changed.wait(min(left, 0.2))

    def attempt_of(self, job_id: str) -> Attempt | None:
        with self.lock:
            job = self.jobs[job_id]
            return self.attempts[job.attempts[-1]] if job.attempts else None

    def count(self, method: str, path_regex: str) -> int:
        return sum(1 for m, p, _ in self.requests if m == method and re.search(path_regex, p))

    # -- the API ------------------------------------------------------------------------------------------
    def _claim(self, job: Job, worker_id: str) -> dict[str, Any]:
        attempt = Attempt(str(uuid.uuid4()), job.job_id, secrets.token_hex(8))
        self.attempts[attempt.attempt_id] = attempt
        job.status = "running"
        job.attempts.append(attempt.attempt_id)
        return {
            "job_id": job.job_id,
            "attempt_id": attempt.attempt_id,
            "attempt": len(job.attempts),
            "fencing_token": attempt.fencing_token,
            "lease_s": self.lease_s,
            "lease_expires_at": "2026-01-01T00:00:00Z",
            "spec": job.spec,
            "inputs": job.inputs,
        }

    def handle(self, method: str, path: str, headers: Any, body: bytes) -> tuple[int, Any]:
        if path.startswith(("/files/", "/uploads/")):
            self.file_request_headers.append(dict(headers))
        for regex, answers in self.inject.items():
            if answers and re.search(regex, path):
                status, payload = answers.pop(0)
                return status, payload or {
                    "error": {"code": "injected", "message": f"injected {status}", "fields": {}}
                }
        if method == "GET" and path.startswith("/files/"):
            data = self.files.get(path[len("/files/") :])
            return (
                (200, data) if data is not None else (404, {"error": {"code": "not_found", "message": "no"}})
            )
        if method == "PUT" and path.startswith("/uploads/"):
            key = path[len("/uploads/") :]
            for attempt in self.attempts.values():
                if key in attempt.targets:
                    self.uploads[key] = body
                    return 200, b""
            return 403, {"error": {"code": "bad_signature", "message": "unknown upload key"}}
        if method != "POST" or not path.startswith(PREFIX):
            return 404, {"error": {"code": "not_found", "message": path}}
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            return 400, {"error": {"code": "malformed", "message": "body is not JSON"}}
        route = path[len(PREFIX) :]
        if route == "enroll":
            if data.get("enrollment_token") not in self.enrollment_tokens:
                return 403, {"error": {"code": "bad_enrollment_token", "message": "unknown or spent token"}}
            self.enrollment_tokens.discard(data["enrollment_token"])
            worker_id, token = self.add_worker()
            return 201, {"worker_id": worker_id, "token": token, "queues": self.queues}
        auth = headers.get("Authorization", "")
        worker_id = self.workers.get(auth.removeprefix("Worker ")) if auth.startswith("Worker ") else None
        if worker_id is None:
            return 401, {"error": {"code": "unauthenticated", "message": "worker token required"}}
        if route == "heartbeat":
            self.worker_heartbeats.append(data)
            return 200, {"worker_id": worker_id, "queues": self.queues, "server_time": "now"}
        if m := re.fullmatch(r"jobs/([^/]+)/claim", route):
            job = self.jobs.get(m[1])
            if job is None:
                return 404, {"error": {"code": "not_found", "message": "no such job"}}
            if job.status != "queued":
                return 409, {
                    "error": {
                        "code": "not_queued",
                        "message": f"job is {job.status}",
                        "fields": {"status": job.status},
                    }
                }
            return 200, self._claim(job, worker_id)
        if route == "claim-next":
            deadline = time.monotonic() + float(data.get("wait_s", 0))
            while True:
                queued = [j for j in self.jobs.values() if j.status == "queued"]
                if queued:
                    return 200, self._claim(queued[0], worker_id)
                if time.monotonic() >= deadline:
                    return 204, None
                self.changed.wait(0.1)
        m = re.fullmatch(r"attempts/([^/]+)/(heartbeat|log|outputs|complete)", route)
        if not m or m[1] not in self.attempts:
            return 404, {"error": {"code": "not_found", "message": "no such attempt"}}
        attempt, verb = self.attempts[m[1]], m[2]
        if headers.get("X-Fencing-Token") != attempt.fencing_token:
            return 409, {"error": {"code": "stale_fencing_token", "message": "stale"}}
        if verb == "heartbeat" and attempt.status == "cancelled":
            return 200, {"directive": "cancel", "lease_expires_at": "x", "lease_s": self.lease_s}
        if attempt.status != "running":
            return 409, {
                "error": {
                    "code": "attempt_over",
                    "message": f"attempt is {attempt.status}",
                    "fields": {"status": attempt.status},
                }
            }
        if verb == "heartbeat":
            attempt.heartbeats.append(data.get("progress"))
            return 200, {"directive": "continue", "lease_expires_at": "x", "lease_s": self.lease_s}
        if verb == "log":
            attempt.log += data["text"]
            return 200, {"offset": len(attempt.log)}
        if verb == "outputs":
            key = f"{attempt.attempt_id}/{data['name']}"
            attempt.targets[key] = data
            return 201, {
                "key": key,
                "url": f"/uploads/{key}",
                "method": "PUT",
                "headers": {"Content-Type": "application/octet-stream"},
            }
        attempt.completion = data
        ok = data.get("failure_class") is None and data.get("exit_code") == 0
        attempt.status = "succeeded" if ok else "failed"
        job = self.jobs[attempt.job_id]
        job.status = (
            "succeeded" if ok else ("queued" if data.get("failure_class") == "infrastructure" else "failed")
        )
        return 200, {"job_status": job.status}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        portal = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path.split("?", 1)[0]
                with portal.lock:
                    status, payload = portal.handle(self.command, path, self.headers, body)
                    portal.requests.append((self.command, path, status))
                    portal.changed.notify_all()
                raw = (
                    payload
                    if isinstance(payload, bytes)
                    else (b"" if payload is None else json.dumps(payload).encode())
                )
                self.send_response(status)
                self.send_header("Content-Length", str(len(raw)))
                if not isinstance(payload, bytes):
                    self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_POST = do_PUT = _serve

        return Handler


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
