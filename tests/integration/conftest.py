"""Real parts for integration tests: the live portal (PostgreSQL), Redis as broker, worker-agent processes,
a portal-side Celery worker, an SMTP server (aiosmtpd) and an S3 API server (moto)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
import requests
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate: Callable[[], object], timeout: float = 60, interval: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCUS_", "DATABASE_", "CELERY_", "DJANGO_",
                                                                     "EMAIL_", "AWS_", "S3_"))}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


class Process:
    """A child process in its own session, its output in a file; stopped (and reaped) on teardown."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path):
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            os.killpg(self.proc.pid, sig)

    def stop(self, timeout: float = 20) -> int:
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.proc.wait()
        self._log.close()
        return self.proc.returncode


@pytest.fixture
def processes(tmp_path):
    started: list[Process] = []

    def start(name: str, argv: list[str], env: dict[str, str]) -> Process:
        proc = Process(name, argv, env, tmp_path)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def broker(settings):
    """The test Redis database (portal.settings_test), emptied: no earlier test's message reaches this one."""
    url = settings.CELERY_BROKER_URL
    assert url.startswith("redis://"), "integration tests need Redis as the broker"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()


@pytest.fixture
def portal(live_server, settings, broker, transactional_db):
    """The live portal with short leases, so recovery paths run in seconds."""
    settings.PUBLIC_URL = live_server.url
    settings.LOCUS_LEASE_SECONDS = 3
    # Agents start with an empty queue; test_worker_selftest.py turns the selftest after enrollment on.
    settings.LOCUS_SELFTEST_ON_ENROLL = False
    return live_server.url


@pytest.fixture
def user_session(portal, user):
    from portal.accounts.models import ApiToken

    _, raw = ApiToken.issue(user, "integration")
    session = requests.Session()
    session.headers["Authorization"] = f"Token {raw}"
    session.base = portal + "/api/v1"
    return session


@pytest.fixture
def start_agent(portal, broker, processes, tmp_path):
    """Enroll and start a real worker agent process (broker mode unless pull=True)."""
    from jobs.models import EnrollmentToken

    count = 0

    def start(*, pull: bool = False, extra_env: dict[str, str] | None = None, grace: float = 3,
              before_start: Callable[[str], object] | None = None, token: dict | None = None) -> Process:
        """`before_start(name)` runs between enroll and start (the worker exists, its agent does not yet);
        `token` holds EnrollmentToken fields (institution, pools)."""
        nonlocal count
        count += 1
        name = f"agent-{count}"
        config = tmp_path / f"{name}.json"
        _, raw = EnrollmentToken.issue(None, **(token or {}))
        env = clean_env(LOCUS_LOG_LEVEL="INFO", **(extra_env or {}))
        subprocess.run([sys.executable, "-m", "workers", "enroll", "--portal", portal, "--enrollment-token", raw,
                        "--name", name, "--config", str(config)], cwd=ROOT, env=env, check=True,
                       capture_output=True, timeout=60)
        if before_start is not None:
            before_start(name)
        argv = [sys.executable, "-m", "workers", "start", "--config", str(config), "--scratch",
                str(tmp_path / f"{name}-scratch"), "--grace", str(grace)]
        argv += ["--pull"] if pull else ["--broker", broker]
        return processes(name, argv, env)

    return start


@pytest.fixture
def smtp_server():
    """A real SMTP server on loopback collecting every message it receives."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Message

    class Collect(Message):
        def __init__(self):
            super().__init__()
            self.messages = []

        def handle_message(self, message):
            self.messages.append(message)

    handler = Collect()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller, handler.messages
    controller.stop()


@pytest.fixture
def portal_celery(portal, broker, processes, smtp_server, tmp_path):
    """The portal-side Celery worker (notify + maintenance) as a real process, mailing to the SMTP server."""
    controller, _ = smtp_server
    db = connection.settings_dict
    env = clean_env(
        DATABASE_URL=f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        CELERY_BROKER_URL=broker, EMAIL_URL=f"smtp://{controller.hostname}:{controller.port}",
        LOCUS_PUBLIC_URL=portal, LOCUS_VAR_DIR=str(tmp_path / "portal-var"), DJANGO_SETTINGS_MODULE="portal.settings",
        LOCUS_SWEEP_SECONDS="1",
    )
    return processes("portal-celery", [sys.executable, "-m", "celery", "-A", "portal", "worker", "-B", "-Q",
                                       "notify,maintenance", "--pool", "solo", "--loglevel", "INFO",
                                       "-s", str(tmp_path / "beat-schedule")], env)


def job_status(session: requests.Session, job_id: str) -> dict:
    response = session.get(f"{session.base}/jobs/{job_id}/", timeout=10)
    response.raise_for_status()
    return response.json()


def wait_for_status(session, job_id: str, statuses: set[str], timeout: float = 90) -> dict:
    return wait_until(lambda: (j := job_status(session, job_id))["status"] in statuses and j, timeout,
                      what=f"job {job_id} to reach {statuses}")


def submit(session, entrypoint: str = "selftest", params: dict | None = None, inputs: dict | None = None,
           application: str = "diagnostics", **extra) -> str:
    response = session.post(f"{session.base}/jobs/", json={"application": application, "entrypoint": entrypoint,
                                                           "params": params or {}, "inputs": inputs or {}, **extra},
                            timeout=30)
    assert response.status_code == 201, response.text
    return response.json()["id"]
