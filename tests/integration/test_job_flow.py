"""End to end with real processes: upload → submit → claim → progress → outputs → succeeded → email."""

import hashlib
import json
import signal

import requests

from jobs.models import Attempt, File, Job
from tests.integration.conftest import submit, wait_for_status, wait_until


def upload(session, name: str, data: bytes) -> str:
    dataset = session.post(f"{session.base}/datasets/", json={"name": "it"}, timeout=10).json()
    response = session.post(f"{session.base}/datasets/{dataset['id']}/files/", files={"file": (name, data)},
                            timeout=30)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_upload_submit_run_outputs_and_email(user_session, start_agent, portal_celery, smtp_server):
    _, messages = smtp_server
    data = bytes(range(256)) * 4000
    file_id = upload(user_session, "movie.tif", data)
    start_agent()
    # "always": the default (jobs/notifications.py) emails a success only after LOCUS_NOTIFY_LONG_JOB_MINUTES
    job_id = submit(user_session, "checksum", {"copy": True}, {"files": [file_id]}, notify="always")
    job = wait_for_status(user_session, job_id, {"succeeded", "failed"})
    assert job["status"] == "succeeded", job
    assert job["progress"] == 1.0 and [e["kind"] for e in job["events"]][:3] == ["submitted", "claimed", "succeeded"]
    outputs = {o["name"]: o for o in user_session.get(f"{user_session.base}/jobs/{job_id}/outputs/").json()}
    assert set(outputs) == {"checksums.json", "copy-movie.tif"}
    copied = user_session.get(outputs["copy-movie.tif"]["url"], timeout=30).content
    assert copied == data and outputs["copy-movie.tif"]["sha256"] == hashlib.sha256(data).hexdigest()
    report = json.loads(user_session.get(outputs["checksums.json"]["url"], timeout=30).content)
    assert report == [{"slot": "files", "name": "movie.tif", "size": len(data),
                       "sha256": hashlib.sha256(data).hexdigest()}]
    log = user_session.get(f"{user_session.base}/jobs/{job_id}/logs/?offset=0").json()
    assert '"stage": "hash"' in log["text"]
    wait_until(lambda: len(messages) == 1, 30, what="the notification email")
    assert "succeeded" in messages[0]["Subject"] and messages[0]["To"] == "alice@example.org"


def test_progress_is_visible_while_running_then_cancel_stops_the_process(user_session, start_agent):
    agent = start_agent()
    job_id = submit(user_session, params={"duration_s": 120, "matrix_size": 64})
    wait_until(lambda: (j := wait_for_status(user_session, job_id, {"running"}))["progress_detail"].get("stage")
               == "busy" and j, 60, what="busy progress")
    assert "algorithms.diagnostics selftest" in _children(agent.pid)
    response = user_session.post(f"{user_session.base}/jobs/{job_id}/cancel/", timeout=10)
    assert response.json()["status"] == "cancelled"
    wait_until(lambda: "algorithms.diagnostics selftest" not in _children(agent.pid), 30,
               what="the agent to stop the job's process")
    assert not File.objects.filter(job_id=job_id).exists()
    # The agent is still healthy and takes the next job.
    next_id = submit(user_session, params={"matrix_size": 64})
    assert wait_for_status(user_session, next_id, {"succeeded"})["status"] == "succeeded"


def _children(pid: int) -> str:
    """Full command lines of the agent's child processes (the job is a direct child)."""
    import subprocess

    return subprocess.run(["ps", "-ww", "-o", "args=", "--ppid", str(pid)], capture_output=True, text=True).stdout


def test_failing_algorithm_exit_codes(user_session, start_agent):
    start_agent()
    ids = {code: submit(user_session, params={"fail_with": code, "matrix_size": 64}) for code in (1, 2)}
    for code, failure_class in ((1, "algorithm"), (2, "input")):
        job = wait_for_status(user_session, ids[code], {"succeeded", "failed"})
        assert job["status"] == "failed" and job["failure_class"] == failure_class, job
        assert job["attempt_count"] == 1 and job["attempts"][0]["exit_code"] == code


def test_timeout_stops_the_job(user_session, start_agent, settings, tmp_path):
    from pathlib import Path

    import algorithms
    from jobs.registry import get_registry

    text = (Path(algorithms.__file__).parent / "registry.yaml").read_text().replace("timeout_s: 900", "timeout_s: 3")
    path = tmp_path / "registry.yaml"
    path.write_text(text.replace("schemas/", str(Path(algorithms.__file__).parent / "schemas") + "/"))
    settings.LOCUS_REGISTRY_PATH = str(path)
    get_registry.cache_clear()
    try:
        start_agent()
        job_id = submit(user_session, params={"duration_s": 60, "matrix_size": 64})
        job = wait_for_status(user_session, job_id, {"succeeded", "failed"}, timeout=60)
    finally:
        get_registry.cache_clear()
    assert job["status"] == "failed" and job["failure_class"] == "algorithm"
    assert "timeout" in job["reason"].lower()


def test_pull_mode_runs_jobs_without_the_broker(user_session, start_agent):
    start_agent(pull=True)
    job_id = submit(user_session, params={"matrix_size": 64})
    assert wait_for_status(user_session, job_id, {"succeeded", "failed"})["status"] == "succeeded"


def test_killed_agent_job_runs_again_elsewhere_with_one_set_of_outputs(user_session, start_agent, portal_celery):
    first = start_agent()
    job_id = submit(user_session, params={"duration_s": 8, "matrix_size": 64})
    wait_for_status(user_session, job_id, {"running"})
    first.signal(signal.SIGKILL)
    start_agent()
    job = wait_for_status(user_session, job_id, {"succeeded", "failed"}, timeout=120)
    assert job["status"] == "succeeded", job
    attempts = list(Attempt.objects.filter(job_id=job_id).values_list("status", flat=True))
    assert attempts == ["lost", "succeeded"]
    assert File.objects.filter(job_id=job_id).count() == 1
    assert Job.objects.get(pk=job_id).outputs.get().attempt.status == "succeeded"


def test_unauthenticated_worker_calls_are_refused(portal):
    response = requests.post(f"{portal}/api/v1/worker/heartbeat", json={}, timeout=10)
    assert response.status_code == 401 and "error" in response.json()
