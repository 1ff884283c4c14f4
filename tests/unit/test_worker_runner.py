"""The runner against real subprocesses and a real HTTP portal double (docs/worker-api.md, steps 1–7)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.unit.worker_fake_portal import FakePortal, sha256
from workers.client import Backoff, WorkerClient
from workers.runner import AttemptRun, RunnerSettings

SELFTEST = ["python", "-m", "algorithms.diagnostics", "selftest"]
STUBBORN = ["python", "tests/unit/worker_stubborn_job.py"]


def spec(command: list[str] = SELFTEST, timeout_s: float = 120, **params: object) -> dict:
    if command is SELFTEST:
        params = {"matrix_size": 16, "repeats": 1, **params}
    return {
        "application": "diagnostics",
        "version": "1.0",
        "entrypoint": "selftest",
        "command": command,
        "params": params,
        "timeout_s": timeout_s,
        "code_version": "test",
        "hardware": {"gpu": 0, "gpu_memory_gb": 0, "cpu": 1, "memory_gb": 1},
    }


@pytest.fixture
def portal():
    fake = FakePortal(lease_s=1.5).start()
    yield fake
    fake.stop()


@pytest.fixture
def client(portal):
    _, token = portal.add_worker()
    return WorkerClient(portal.url, token, timeout_s=10, backoff=Backoff(retries=3, base_s=0.01))


@pytest.fixture
def settings(tmp_path):
    return RunnerSettings(scratch=tmp_path / "scratch", grace_s=1.0, log_interval_s=0.2)


def run(portal: FakePortal, client: WorkerClient, settings: RunnerSettings, job_spec: dict, inputs=None):
    job_id = portal.add_job(job_spec, inputs)
    claim = client.claim(job_id)
    return job_id, claim, AttemptRun(client, claim, settings)


def test_success_uploads_outputs_whose_sha256_matches_and_cleans_scratch(portal, client, settings):
    data = b"calibration bytes" * 100
    inputs = [
        {
            "slot": "calibration",
            "name": "cal.mat",
            "size": len(data),
            "sha256": sha256(data),
            "url": portal.add_file("cal.mat", data),
        }
    ]
    job_id, claim, runner = run(portal, client, settings, spec(), inputs)

    outcome = runner.run()

    attempt = portal.attempts[claim["attempt_id"]]
    assert outcome.completed and outcome.failure_class is None and outcome.job_status == "succeeded"
    done = attempt.completion
    assert done["exit_code"] == 0 and done["failure_class"] is None
    assert [o["name"] for o in done["outputs"]] == ["report.json"]
    out = done["outputs"][0]
    uploaded = portal.uploads[out["key"]]
    assert sha256(uploaded) == out["sha256"] == attempt.targets[out["key"]]["sha256"]
    assert len(uploaded) == out["size"]
    assert "cpu_count" in json.loads(uploaded)
    assert done["cpu_seconds"] > 0 and done["gpu_seconds"] == 0
    assert '"stage": "done"' in attempt.log and "GFLOP/s" in attempt.log  # stdout and stderr both streamed
    assert list(settings.scratch.iterdir()) == []


def test_bad_params_exit_2_is_an_input_failure_with_the_programs_message(portal, client, settings):
    _, claim, runner = run(portal, client, settings, spec(colour="red"))
    outcome = runner.run()
    done = portal.attempts[claim["attempt_id"]].completion
    assert outcome.failure_class == "input"
    assert done["exit_code"] == 2 and done["failure_class"] == "input"
    assert "unknown parameter 'colour'" in done["reason"]
    assert done["outputs"] == []


def test_nonzero_exit_is_an_algorithm_failure_and_uploads_nothing(portal, client, settings):
    _, claim, runner = run(portal, client, settings, spec(fail_with=1))
    runner.run()
    attempt = portal.attempts[claim["attempt_id"]]
    assert attempt.completion["exit_code"] == 1 and attempt.completion["failure_class"] == "algorithm"
    assert portal.uploads == {} and attempt.completion["outputs"] == []


def test_timeout_sends_sigterm_then_sigkill_to_a_job_that_ignores_it(portal, client, settings):
    _, claim, runner = run(portal, client, settings, spec(STUBBORN, timeout_s=1, ignore_sigterm=True))
    t0 = time.monotonic()
    outcome = runner.run()
    elapsed = time.monotonic() - t0
    attempt = portal.attempts[claim["attempt_id"]]
    assert outcome.ended_by == "timeout"
    assert attempt.completion["exit_code"] == -9 and attempt.completion["failure_class"] == "algorithm"
    assert attempt.completion["reason"] == "timeout after 1 s"
    assert "got SIGTERM" in attempt.log  # it was asked first ...
    assert elapsed >= 1 + settings.grace_s - 0.1  # ... and killed only after the grace period
    pid = json.loads(attempt.log.splitlines()[0])["pid"]
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_timeout_of_a_job_that_honours_sigterm_does_not_wait_for_the_grace(portal, client, settings):
    settings.grace_s = 20
    _, claim, runner = run(portal, client, settings, spec(STUBBORN, timeout_s=1))
    t0 = time.monotonic()
    runner.run()
    assert time.monotonic() - t0 < 10
    assert portal.attempts[claim["attempt_id"]].completion["reason"] == "timeout after 1 s"


def test_cancel_directive_stops_the_job_within_the_grace_and_sends_no_complete(portal, client, settings):
    settings.log_interval_s = (
        60  # a log call after cancel would get 409 first; this test is about the directive
    )
    job_id, claim, runner = run(portal, client, settings, spec(duration_s=60))
    attempt = portal.attempts[claim["attempt_id"]]

    import threading

    result = {}
    thread = threading.Thread(target=lambda: result.update(outcome=runner.run()))
    thread.start()
    portal.wait_for(lambda: any(p and p.get("stage") == "busy" for p in attempt.heartbeats))
    portal.cancel(job_id)
    t0 = time.monotonic()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert time.monotonic() - t0 < 1.5 * 3 / 3 + settings.grace_s + 2  # one heartbeat period + grace
    assert result["outcome"].ended_by == "cancel"
    assert attempt.completion is None and portal.uploads == {}
    assert portal.count("POST", "/complete$") == 0


def test_409_on_heartbeat_kills_the_job_and_uploads_nothing(portal, client, settings):
    settings.log_interval_s = 60  # so the heartbeat, not a log call, is what meets the 409
    job_id, claim, runner = run(portal, client, settings, spec(STUBBORN, sleep_s=60))
    attempt = portal.attempts[claim["attempt_id"]]

    import threading

    result = {}
    thread = threading.Thread(target=lambda: result.update(outcome=runner.run()))
    thread.start()
    portal.wait_for(lambda: attempt.heartbeats and attempt.heartbeats[-1])  # progress carries the pid
    pid = attempt.heartbeats[-1]["pid"]
    portal.expire(claim["attempt_id"])
    thread.join(timeout=30)
    assert result["outcome"].ended_by == "conflict" and not result["outcome"].completed
    assert ("POST", f"/api/v1/worker/attempts/{claim['attempt_id']}/heartbeat", 409) in portal.requests
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert portal.count("POST", "/outputs$") == 0 and portal.count("POST", "/complete$") == 0
    assert list(settings.scratch.iterdir()) == []


def test_input_that_changed_since_upload_is_an_input_failure_and_runs_nothing(portal, client, settings):
    """Two downloads agree with each other but not with the upload's checksum: the stored bytes changed.
    Retrying cannot fix that, so it is the user's `input` failure with a one-line reason."""
    data = b"frames"
    inputs = [
        {
            "slot": "frames",
            "name": "movie.tif",
            "size": len(data),
            "sha256": sha256(b"other"),
            "url": portal.add_file("movie.tif", data),
        }
    ]
    job_id, claim, runner = run(portal, client, settings, spec(), inputs)
    outcome = runner.run()
    done = portal.attempts[claim["attempt_id"]].completion
    assert outcome.failure_class == "input" and done["failure_class"] == "input"
    assert "movie.tif changed after it was uploaded" in done["reason"] and "\n" not in done["reason"]
    assert done["exit_code"] is None
    assert portal.attempts[claim["attempt_id"]].log == ""  # the algorithm never started
    assert portal.jobs[job_id].status == "failed"  # not retried: the same bytes would fail again


def test_inputs_larger_than_the_free_disk_are_an_infrastructure_failure(portal, client, settings):
    inputs = [{"slot": "frames", "name": "huge.tif", "size": 10**18, "sha256": "0" * 64, "url": "/files/x"}]
    _, claim, runner = run(portal, client, settings, spec(), inputs)
    runner.run()
    done = portal.attempts[claim["attempt_id"]].completion
    assert done["failure_class"] == "infrastructure" and done["reason"].startswith("disk full")
    assert portal.count("GET", "^/files/") == 0  # nothing downloaded


def test_input_names_cannot_escape_the_scratch_dir(portal, client, settings, tmp_path):
    data = b"x"
    inputs = [
        {
            "slot": "../..",
            "name": "../../evil",
            "size": 1,
            "sha256": sha256(data),
            "url": portal.add_file("evil", data),
        }
    ]
    _, claim, runner = run(portal, client, settings, spec(), inputs)
    runner.run()
    assert portal.attempts[claim["attempt_id"]].completion["failure_class"] == "infrastructure"
    assert not (tmp_path / "evil").exists()


def test_failed_upload_is_an_infrastructure_failure(portal, client, settings):
    portal.fail_next(r"^/uploads/", 403)
    _, claim, runner = run(portal, client, settings, spec(STUBBORN, sleep_s=0, output="result.txt"))
    runner.run()
    done = portal.attempts[claim["attempt_id"]].completion
    assert done["failure_class"] == "infrastructure" and done["reason"].startswith("upload failed")


def test_symlinks_in_outputs_are_not_uploaded(portal, client, settings, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("worker secret")
    script = tmp_path / "job.py"
    script.write_text(
        "import argparse, os\n"
        "p = argparse.ArgumentParser(); p.add_argument('--inputs'); p.add_argument('--outputs');"
        " p.add_argument('--params'); a = p.parse_args()\n"
        f"os.symlink({str(secret)!r}, os.path.join(a.outputs, 'leak.txt'))\n"
        "open(os.path.join(a.outputs, 'ok.txt'), 'w').write('fine')\n"
    )
    _, claim, runner = run(portal, client, settings, spec(["python", str(script)]))
    runner.run()
    done = portal.attempts[claim["attempt_id"]].completion
    assert [o["name"] for o in done["outputs"]] == ["ok.txt"]
    assert b"worker secret" not in b"".join(portal.uploads.values())


def test_shutdown_stops_the_job_and_hands_it_back_as_infrastructure(portal, client, settings):
    job_id, claim, runner = run(portal, client, settings, spec(STUBBORN, sleep_s=60))
    attempt = portal.attempts[claim["attempt_id"]]

    import threading

    thread = threading.Thread(target=runner.run)
    thread.start()
    portal.wait_for(lambda: "pid" in attempt.log)
    settings.shutdown.set()
    thread.join(timeout=30)
    assert attempt.completion["failure_class"] == "infrastructure"
    assert attempt.completion["reason"] == "worker shutting down"
    assert portal.jobs[job_id].status == "queued"


def test_scratch_dir_is_the_attempt_id_and_holds_params_json(portal, client, settings, tmp_path, monkeypatch):
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://user:secret@broker:6379/0")
    script = tmp_path / "job.py"
    script.write_text(
        "import argparse, json, os, sys\n"
        "p = argparse.ArgumentParser(); p.add_argument('--inputs'); p.add_argument('--outputs');"
        " p.add_argument('--params'); a = p.parse_args()\n"
        "print(json.dumps({'cwd': os.getcwd(), 'params': json.load(open(a.params)), 'inputs': a.inputs,"
        " 'broker': os.environ.get('CELERY_BROKER_URL'),"
        " 'exe': sys.executable, 'pgid_is_pid': os.getpgid(0) == os.getpid()}))\n"
    )
    _, claim, runner = run(portal, client, settings, spec(["python", str(script)], alpha=1))
    runner.run()
    seen = json.loads(portal.attempts[claim["attempt_id"]].log.splitlines()[0])
    assert seen["params"] == {"alpha": 1}
    assert seen["broker"] is None  # the agent's broker password is not the job's business
    assert Path(seen["inputs"]) == settings.scratch / claim["attempt_id"] / "inputs"
    assert Path(seen["cwd"]) == Path(__file__).resolve().parents[2]  # the code root
    assert seen["pgid_is_pid"] is True  # its own process group, so signals reach all it starts
    import sys

    assert seen["exe"] == sys.executable


def test_a_gpu_job_gets_its_own_card_and_reports_gpu_seconds(portal, client, settings, tmp_path):
    script = tmp_path / "job.py"
    script.write_text(
        "import os, time\n"
        "print('CUDA_VISIBLE_DEVICES=' + os.environ.get('CUDA_VISIBLE_DEVICES', ''), flush=True)\n"
        "time.sleep(0.5)\n"
    )
    settings.gpu_indices = [1]
    job = spec(["python", str(script)])
    job["hardware"] = {"gpu": 1, "gpu_memory_gb": 16, "cpu": 1, "memory_gb": 1}
    _, claim, runner = run(portal, client, settings, job)
    runner.run()
    attempt = portal.attempts[claim["attempt_id"]]
    assert "CUDA_VISIBLE_DEVICES=1" in attempt.log
    assert 0.5 <= attempt.completion["gpu_seconds"] < 5
