"""`locus.run_job` and the agent's Celery settings (design §4), without a broker: the task body is plain code."""

from __future__ import annotations

import threading

import pytest
from celery.exceptions import Reject

from tests.unit.worker_fake_portal import FakePortal
from workers import celery_app
from workers.agent import GpuSlots
from workers.client import Backoff, WorkerClient
from workers.runner import RunnerSettings


@pytest.fixture
def portal():
    fake = FakePortal().start()
    yield fake
    fake.stop()


@pytest.fixture
def context(portal, tmp_path):
    _, token = portal.add_worker()
    client = WorkerClient(portal.url, token, timeout_s=5, backoff=Backoff(retries=1, base_s=0.01))
    ctx = celery_app.AgentContext(
        client=client, settings=RunnerSettings(scratch=tmp_path), gpu_slots=GpuSlots(0)
    )
    celery_app.set_context(ctx)
    yield ctx
    celery_app.set_context(None)


def test_job_queue_settings_follow_the_design(tmp_path, monkeypatch):
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    monkeypatch.setenv("LOCUS_BROKER_DIR", str(tmp_path / "broker"))
    app = celery_app.make_app(["cpu", "gpu.8", "pool.ens-lyon.gpu.16"], gpu=True)
    conf = app.conf
    assert conf.task_serializer == "json" and conf.accept_content == ["json"]
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1 and conf.worker_max_tasks_per_child == 1
    assert conf.task_create_missing_queues is False
    assert [q.name for q in conf.task_queues] == ["cpu", "gpu.8", "pool.ens-lyon.gpu.16"]
    assert all(q.routing_key == q.name and q.exchange.name == q.name for q in conf.task_queues)
    options = conf.broker_transport_options
    assert options["visibility_timeout"] == 43200 + 3600
    assert options["data_folder_in"] == options["data_folder_out"] == str(tmp_path / "broker")
    assert "locus.run_job" in app.tasks
    assert celery_app.make_app(["cpu"]).conf.worker_max_tasks_per_child is None


@pytest.mark.parametrize("name", ["notify", "maintenance", "gpu", "pool.x", "CPU", ""])
def test_only_job_queues_may_be_consumed(name):
    with pytest.raises(ValueError):
        celery_app.validate_queues([name])


def test_a_job_that_is_not_queued_is_dropped(portal, context):
    job_id = portal.add_job({"command": ["true"]})
    portal.jobs[job_id].status = "running"
    assert celery_app.run_job(None, job_id) == "dropped"
    assert celery_app.run_job(None, "no-such-job") == "unknown"
    assert context.outcomes == []


def test_an_unreachable_portal_keeps_the_message(portal, context, monkeypatch):
    monkeypatch.setattr(celery_app, "PORTAL_DOWN_REQUEUE_S", 0)
    portal.fail_next("/claim$", 503, 503)
    with pytest.raises(Reject) as info:
        celery_app.run_job(None, portal.add_job({"command": ["true"]}))
    assert info.value.requeue is True


def test_gpu_slots_never_hand_one_card_to_two_jobs():
    slots = GpuSlots(2)
    a, b = slots.acquire(1), slots.acquire(1)
    assert sorted(a + b) == [0, 1]
    got: list[list[int]] = []
    waiter = threading.Thread(target=lambda: got.append(slots.acquire(1)))
    waiter.start()
    waiter.join(timeout=0.2)
    assert waiter.is_alive()  # both cards busy: the third job waits
    slots.release(a)
    waiter.join(timeout=5)
    assert got == [a]
    slots.release(b)
    slots.release(got[0])
    assert slots.acquire(5) == [0, 1]  # more than exist: all of them, not a deadlock


def test_a_message_received_during_shutdown_is_given_back_unclaimed(portal, context):
    context.settings.shutdown.set()
    job_id = portal.add_job({"command": ["true"]})
    with pytest.raises(Reject) as info:
        celery_app.run_job(None, job_id)
    assert info.value.requeue is True
    assert portal.jobs[job_id].status == "queued" and portal.count("POST", "/claim$") == 0
