"""The worker API client: auth and fencing headers, retries on 5xx/connection errors only, 409 distinct."""

from __future__ import annotations

import socket

import pytest

from tests.unit.worker_fake_portal import FakePortal
from workers import capabilities
from workers.client import Backoff, Conflict, NotFound, PortalError, PortalUnavailable, WorkerClient


@pytest.fixture
def portal():
    fake = FakePortal().start()
    yield fake
    fake.stop()


@pytest.fixture
def client(portal):
    _, token = portal.add_worker()
    return WorkerClient(portal.url, token, timeout_s=5, backoff=Backoff(retries=3, base_s=0.01))


def test_503_is_retried_then_the_claim_succeeds(portal, client):
    job_id = portal.add_job({"command": ["true"]})
    portal.fail_next("/claim$", 503, 503)
    claim = client.claim(job_id)
    assert claim["job_id"] == job_id
    assert [s for m, p, s in portal.requests if p.endswith("/claim")] == [503, 503, 200]


def test_persistent_5xx_gives_up_after_the_retries(portal, client):
    portal.fail_next("heartbeat$", *[502] * 10)
    with pytest.raises(PortalUnavailable) as info:
        client.heartbeat({})
    assert portal.count("POST", "heartbeat$") == 4  # the call and three retries
    assert info.value.status == 502


def test_400_is_not_retried_and_its_error_body_is_surfaced(portal, client):
    body = {
        "error": {
            "code": "invalid",
            "message": "capabilities.gpus must be a list",
            "fields": {"capabilities.gpus": "not a list"},
        }
    }
    portal.fail_next("heartbeat$", (400, body))
    with pytest.raises(PortalError) as info:
        client.heartbeat({"gpus": 3})
    assert portal.count("POST", "heartbeat$") == 1
    assert info.value.status == 400 and info.value.code == "invalid"
    assert info.value.fields == {"capabilities.gpus": "not a list"}
    assert "capabilities.gpus must be a list" in str(info.value)
    assert not isinstance(info.value, PortalUnavailable | Conflict)


def test_409_raises_conflict_with_the_portals_reason(portal, client):
    job_id = portal.add_job({"command": ["true"]})
    client.claim(job_id)
    with pytest.raises(Conflict) as info:
        client.claim(job_id)  # a duplicate delivery of the same job id
    assert info.value.code == "not_queued" and info.value.fields == {"status": "running"}
    assert portal.count("POST", "/claim$") == 2


def test_unknown_job_is_not_found(portal, client):
    with pytest.raises(NotFound):
        client.claim("no-such-job")


def test_attempt_calls_carry_the_worker_token_and_the_fencing_token(portal, client):
    job_id = portal.add_job({"command": ["true"]})
    claim = client.claim(job_id)
    assert (
        client.attempt_heartbeat(claim["attempt_id"], claim["fencing_token"], {"progress": 0.5})["directive"]
        == "continue"
    )
    with pytest.raises(Conflict):
        client.append_log(claim["attempt_id"], "stale-token", "hello")
    assert portal.attempts[claim["attempt_id"]].log == ""  # a stale token changed nothing
    stranger = WorkerClient(portal.url, "not-a-token", backoff=Backoff(retries=0))
    with pytest.raises(PortalError) as info:
        stranger.heartbeat({})
    assert info.value.status == 401


def test_connection_refused_is_retried_then_reported_as_unavailable():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again below: nothing listens there
    sleeps: list[float] = []
    client = WorkerClient(
        f"http://127.0.0.1:{port}",
        "t",
        timeout_s=2,
        backoff=Backoff(retries=3, base_s=0.5, cap_s=1.0, sleep=sleeps.append),
    )
    with pytest.raises(PortalUnavailable):
        client.heartbeat({})
    assert len(sleeps) == 3
    assert all(
        0 <= s <= cap for s, cap in zip(sleeps, [0.5, 1.0, 1.0], strict=True)
    )  # backoff, capped, jittered


def test_claim_next_long_polls_and_answers_none_on_204(portal, client):
    assert client.claim_next(wait_s=0.3) is None
    job_id = portal.add_job({"command": ["true"]})
    assert client.claim_next(wait_s=0.3)["job_id"] == job_id


def test_fake_gpus_env_pretends_a_gpu(monkeypatch):
    monkeypatch.setenv(
        "LOCUS_FAKE_GPUS", '[{"name": "Fake A100", "memory_gb": 40, "compute_capability": "8.0"}]'
    )
    caps = capabilities.probe()
    assert caps["gpus"] == [{"name": "Fake A100", "memory_gb": 40.0, "compute_capability": "8.0"}]
    assert caps["cpu_count"] >= 1 and caps["memory_gb"] > 0 and caps["python"] and caps["hostname"]
    monkeypatch.setenv("LOCUS_FAKE_GPUS", "[]")
    assert capabilities.probe()["gpus"] == []
    monkeypatch.setenv("LOCUS_FAKE_GPUS", "{oops")
    with pytest.raises(ValueError, match="LOCUS_FAKE_GPUS"):
        capabilities.probe()


def test_nvidia_smi_lines_are_parsed_into_gb_and_compute_capability():
    gpu = capabilities._parse_smi_line("NVIDIA H100 80GB HBM3, 81559, 9.0")
    assert gpu == {"name": "NVIDIA H100 80GB HBM3", "memory_gb": 85.52, "compute_capability": "9.0"}
    assert capabilities._parse_smi_line("Tesla K80, 11441")["compute_capability"] is None


def test_download_retries_a_5xx_and_returns_size_and_sha256(portal, client, tmp_path):
    from tests.unit.worker_fake_portal import sha256

    url = portal.add_file("frames.tif", b"\x00\x01" * 5000)
    portal.fail_next("^/files/", 503)
    size, digest = client.download(url, tmp_path / "frames.tif")
    assert (size, digest) == (10000, sha256(b"\x00\x01" * 5000))
    assert (tmp_path / "frames.tif").read_bytes() == b"\x00\x01" * 5000
    assert len(portal.file_request_headers) == 2
    assert not any("Authorization" in h for h in portal.file_request_headers)  # signed URLs: no worker token


def test_gpu_slots_map_onto_the_cards_the_operator_lent(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert capabilities.device_ids([0, 1]) == ["0", "1"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert capabilities.device_ids([1]) == ["3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert capabilities.visible_devices() == []
