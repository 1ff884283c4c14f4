"""Hostile inputs end to end (issue 10 §4): a real worker-agent process against the live portal.

An input whose stored bytes changed after its upload checksum, and a corrupt table: each job must fail with
failure class `input` and a one-line reason, without retries, and nothing else may be affected.
"""
# ruff: noqa: F811 - pytest fixtures imported from the integration suite are parameters here

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.conftest import (  # noqa: F401 - fixtures shared with the integration suite
    broker,
    portal,
    processes,
    start_agent,
    submit,
    user_session,
    wait_for_status,
)


@pytest.mark.integration
def test_changed_and_corrupt_inputs_fail_their_jobs_as_input_and_nothing_else(user_session, start_agent,
                                                                              settings):
    """An input whose stored bytes changed after upload, and a corrupt table: each job fails with failure
    class `input`, one attempt, a one-line reason; a job on another file, run by the same agent, succeeds."""
    from jobs.models import File

    s = user_session
    dataset = s.post(f"{s.base}/datasets/", json={"name": "hostile"}, timeout=10).json()["id"]

    def up(name: str, data: bytes) -> str:
        response = s.post(f"{s.base}/datasets/{dataset}/files/", files={"file": (name, data)}, timeout=30)
        assert response.status_code == 201, response.text
        return response.json()["id"]

    victim, bystander = up("victim.bin", b"the bytes as uploaded"), up("bystander.bin", b"another user file")
    table = up("table.csv", b"frame,x [nm],y [nm],intensity [photon]\n1,100.5,200.25,3000\n2,10")  # truncated
    stored = Path(settings.MEDIA_ROOT) / File.objects.get(pk=victim).key
    stored.write_bytes(b"the bytes as tampered")  # same size, other content: only the checksum can tell
    start_agent()
    changed = submit(s, "checksum", inputs={"files": [victim]})
    corrupt = submit(s, "convert", params={"to": "locus"}, inputs={"table": [table]}, application="io")
    fine = submit(s, "checksum", inputs={"files": [bystander]})
    results = {job: wait_for_status(s, job, {"succeeded", "failed", "cancelled"}, timeout=180)
               for job in (changed, corrupt, fine)}
    for job, needle in ((changed, "victim.bin changed after it was uploaded"), (corrupt, "table.csv: ")):
        body = results[job]
        assert body["status"] == "failed" and body["failure_class"] == "input", body
        assert needle in body["reason"] and "\n" not in body["reason"] and "Traceback" not in body["reason"]
        assert len(body["attempts"]) == 1  # an input failure is not retried
    assert results[corrupt]["reason"].startswith("exit code 2: error: ")
    assert results[fine]["status"] == "succeeded"
    assert (Path(settings.MEDIA_ROOT) / File.objects.get(pk=bystander).key).read_bytes() == b"another user file"
