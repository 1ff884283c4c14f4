"""The agent as a user runs it: `python -m workers enroll | start` (broker and pull modes) against real
processes — a Celery worker on kombu's filesystem broker, the portal double over HTTP, real job children."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from celery import Celery
from kombu import Exchange, Queue

from tests.unit.worker_fake_portal import FakePortal
from workers.__main__ import main

CODE_ROOT = Path(__file__).resolve().parents[2]
SELFTEST = {
    "command": ["python", "-m", "algorithms.diagnostics", "selftest"],
    "timeout_s": 120,
    "params": {"matrix_size": 16, "repeats": 1},
    "hardware": {"gpu": 0, "cpu": 1, "memory_gb": 1},
}
STUBBORN = {
    "command": ["python", "tests/unit/worker_stubborn_job.py"],
    "timeout_s": 120,
    "params": {"sleep_s": 60},
    "hardware": {"gpu": 0, "cpu": 1, "memory_gb": 1},
}


@pytest.fixture
def portal():
    fake = FakePortal(lease_s=3).start()
    fake.enrollment_tokens.add("ENROLL-ME")
    yield fake
    fake.stop()


@pytest.fixture(autouse=True)
def no_gpu_probe(monkeypatch):
    monkeypatch.setenv("LOCUS_FAKE_GPUS", "[]")  # skip the (slow) torch probe: this machine has no GPU


@pytest.fixture
def enrolled(portal, tmp_path) -> Path:
    config = tmp_path / "conf" / "worker.json"
    assert (
        main(
            [
                "enroll",
                "--portal",
                portal.url,
                "--enrollment-token",
                "ENROLL-ME",
                "--name",
                "lab-pc",
                "--config",
                str(config),
            ]
        )
        == 0
    )
    return config


def agent_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CELERY_BROKER_URL", "LOCUS_WORKER_CONFIG")}
    env.update(LOCUS_BROKER_DIR=str(tmp_path / "broker"), LOCUS_FAKE_GPUS="[]", PYTHONUNBUFFERED="1")
    return env


def start_agent(tmp_path: Path, config: Path, *extra: str) -> subprocess.Popen:
    log = open(tmp_path / "agent.log", "wb")  # noqa: SIM115 - the child owns it
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "workers",
            "start",
            "--config",
            str(config),
            "--scratch",
            str(tmp_path / "scratch"),
            "--grace",
            "2",
            *extra,
        ],
        cwd=CODE_ROOT,
        env=agent_env(tmp_path),
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def stop_agent(proc: subprocess.Popen, tmp_path: Path) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=90)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError((tmp_path / "agent.log").read_text()) from None


@pytest.fixture(autouse=True)
def _no_broker_url_in_env(monkeypatch):
    """Celery prefers $CELERY_BROKER_URL (set by the test settings) to an app's own broker: without this the
    portal double below would send to Redis instead of the filesystem broker the agent consumes."""
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)


def portal_side_celery(broker: Path) -> Celery:
    """What the portal does: declared job queues on the same filesystem broker; sends only the job id."""
    (broker / "processed").mkdir(parents=True, exist_ok=True)
    app = Celery("portal-double", broker="filesystem://")
    app.conf.update(
        # Celery prefers $CELERY_BROKER_URL (set for the test settings) over `broker=`; the write URL is not
        # overridden that way, and sending is all this double does.
        broker_write_url="filesystem://",
        broker_transport_options={
            "data_folder_in": str(broker),
            "data_folder_out": str(broker),
            "processed_folder": str(broker / "processed"),
            "store_processed": False,
        },
        task_queues=[Queue(q, Exchange(q, type="direct"), routing_key=q) for q in ("cpu", "gpu.16")],
        task_create_missing_queues=False,
        task_serializer="json",
        accept_content=["json"],
    )
    return app


def test_enroll_writes_a_0600_config_with_the_worker_token(portal, enrolled):
    mode = stat.S_IMODE(enrolled.stat().st_mode)
    assert mode == 0o600
    saved = json.loads(enrolled.read_text())
    assert saved["portal"] == portal.url and portal.workers[saved["token"]] == saved["worker_id"]
    assert saved["queues"] == ["cpu"]


def test_enrolling_twice_needs_force_and_a_spent_token_is_refused(portal, enrolled, capsys):
    argv = ["enroll", "--portal", portal.url, "--enrollment-token", "ENROLL-ME", "--config", str(enrolled)]
    assert main(argv) == 2
    assert main([*argv, "--force"]) == 1  # the portal refuses a spent enrollment token
    err = capsys.readouterr().err.strip().splitlines()
    assert "already exists" in err[0] and "bad_enrollment_token" in err[1]


BAD_INPUT = [
    (["start", "--config", "/nonexistent/worker.json"], "run `python -m workers enroll` first"),
    (["enroll", "--portal", "ftp://x", "--enrollment-token", "t"], "--portal must be an http(s) URL"),
    (["start", "--concurrency", "many"], "invalid int value"),
    (["frobnicate"], "invalid choice"),
]


@pytest.mark.parametrize("argv, message", BAD_INPUT)
def test_bad_input_exits_2_with_one_line(argv, message, capsys):
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]


@pytest.mark.parametrize("argv, message", BAD_INPUT[:1])
def test_bad_input_from_the_shell_has_no_traceback(argv, message, tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "workers", *argv],
        cwd=CODE_ROOT,
        capture_output=True,
        text=True,
        env=agent_env(tmp_path),
        timeout=60,
    )
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in out.stderr


def test_start_refuses_a_queue_that_is_not_a_job_queue(enrolled, capsys):
    assert main(["start", "--config", str(enrolled), "--queues", "cpu,notify"]) == 2
    assert "not a job queue: 'notify'" in capsys.readouterr().err


def test_broker_mode_runs_a_job_drops_a_duplicate_and_hands_back_on_sigterm(portal, enrolled, tmp_path):
    agent = start_agent(tmp_path, enrolled, "--queues", "auto")
    try:
        sender = portal_side_celery(tmp_path / "broker")
        first = portal.add_job(SELFTEST)
        sender.send_task("locus.run_job", args=[first], queue="cpu")
        portal.wait_for(lambda: portal.jobs[first].status == "succeeded", timeout=120)
        assert portal.worker_heartbeats and "cpu_count" in portal.worker_heartbeats[0]["capabilities"]

        sender.send_task("locus.run_job", args=[first], queue="cpu")  # a duplicate delivery
        portal.wait_for(lambda: ("POST", f"/api/v1/worker/jobs/{first}/claim", 409) in portal.requests)

        second = portal.add_job(STUBBORN)
        sender.send_task("locus.run_job", args=[second], queue="cpu")
        portal.wait_for(lambda: (a := portal.attempt_of(second)) is not None and "pid" in a.log, timeout=90)
        assert stop_agent(agent, tmp_path) == 0
    finally:
        if agent.poll() is None:
            agent.kill()
    done = portal.attempt_of(second).completion
    assert done["failure_class"] == "infrastructure" and done["reason"] == "worker shutting down"
    assert portal.jobs[second].status == "queued"  # handed back for another worker
    assert not list((tmp_path / "broker").glob("*.msg"))  # every message acked, none left behind
    assert list((tmp_path / "scratch").iterdir()) == []


def test_pull_mode_claims_by_long_poll_and_stops_on_sigterm(portal, enrolled, tmp_path):
    job_id = portal.add_job({**STUBBORN, "params": {"sleep_s": 0, "output": "report.json"}})
    agent = start_agent(tmp_path, enrolled, "--pull")
    try:
        portal.wait_for(lambda: portal.jobs[job_id].status == "succeeded", timeout=120)
        t0 = time.monotonic()
        assert stop_agent(agent, tmp_path) == 0
    finally:
        if agent.poll() is None:
            agent.kill()
    assert time.monotonic() - t0 < 25  # at most one long poll (20 s) to notice
    out = portal.attempt_of(job_id).completion["outputs"]
    assert [o["name"] for o in out] == ["report.json"]


def test_a_killed_agent_takes_its_job_with_it(portal, enrolled, tmp_path):
    job_id = portal.add_job(STUBBORN)
    agent = start_agent(tmp_path, enrolled, "--pull")
    try:
        attempt = portal.wait_for(
            lambda: (a := portal.attempt_of(job_id)) and "pid" in a.log and a, timeout=90
        )
        pid = json.loads(attempt.log.splitlines()[0])["pid"]
        agent.kill()  # SIGKILL: no chance to stop the job itself
        agent.wait(timeout=10)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            os.kill(pid, signal.SIGKILL)
            raise AssertionError("the job outlived its agent")
    finally:
        if agent.poll() is None:
            agent.kill()
