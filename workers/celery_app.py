"""The agent's own Celery app (no Django): consumes job ids from the queues this worker may serve.

Settings follow design §4. The broker message is only a doorbell: the task claims the job over HTTP and the
portal's database decides. That is why a duplicate or late message is harmless (claim answers 409, the
message is acked and dropped) and why acks are late (a worker that dies mid-job leaves the message to the
broker's redelivery *and* the portal's lease sweeper, whichever comes first; the claim fences duplicates).
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celery import Celery
from celery.exceptions import Reject
from kombu import Exchange, Queue

from workers.capabilities import CODE_ROOT
from workers.client import Conflict, NotFound, PortalError, PortalUnavailable, WorkerClient
from workers.runner import AttemptRun, Outcome, RunnerSettings

log = logging.getLogger("locus.worker.celery")

TASK_NAME = "locus.run_job"
# Shared tiers, institution pools, and a worker's own queue (jobs pinned to it, such as its selftest).
JOB_QUEUE_RE = re.compile(
    r"^(cpu|gpu\.\d+|pool\.[a-z0-9][a-z0-9_-]*\.(cpu|gpu\.\d+)|worker\.[0-9a-f]{8}-[0-9a-f-]{27})$"
)
DEFAULT_VISIBILITY_TIMEOUT_S = 43200 + 3600  # above the longest registry timeout (12 h training)
PORTAL_DOWN_REQUEUE_S = 10.0


def default_broker_url(explicit: str | None = None) -> str:
    """`explicit` (already resolved by the CLI), else `CELERY_BROKER_URL`, else the embedded filesystem broker."""
    return explicit or os.environ.get("CELERY_BROKER_URL") or "filesystem://"


def broker_dir() -> Path:
    """The folder the embedded filesystem broker shares with the portal: `LOCUS_BROKER_DIR` or var/broker."""
    return Path(os.environ.get("LOCUS_BROKER_DIR") or CODE_ROOT / "var" / "broker").expanduser()


def job_queue(name: str) -> Queue:
    """A job queue declared exactly as the portal declares it: direct exchange and routing key = name."""
    return Queue(name, Exchange(name, type="direct"), routing_key=name)


def validate_queues(names: list[str]) -> list[str]:
    """Only job queues: consuming `notify`/`maintenance` would take the portal's own tasks."""
    bad = [n for n in names if not JOB_QUEUE_RE.match(n)]
    if bad:
        raise ValueError(
            f"not a job queue: {bad[0]!r} (expected cpu, gpu.<GB>, pool.<slug>.<tier> or worker.<id>)"
        )
    if not names:
        raise ValueError("no queues to consume")
    return names


def make_app(queues: list[str], *, broker_url: str | None = None, gpu: bool = False) -> Celery:
    """Build the Celery app for these queues; `gpu` turns on one task per child (design §4)."""
    url = default_broker_url(broker_url)
    # Celery lets $CELERY_BROKER_URL override the broker given here, and loads Django (its fixup) whenever
    # $DJANGO_SETTINGS_MODULE is set — which can silently point the agent at another broker. The resolved
    # URL wins (the runner keeps it out of the job's environment), and no fixups: the agent is Django-free.
    os.environ["CELERY_BROKER_URL"] = url
    app = Celery("locus-worker", broker=url, set_as_current=True, fixups=[])
    visibility_s = int(os.environ.get("LOCUS_VISIBILITY_TIMEOUT_S") or DEFAULT_VISIBILITY_TIMEOUT_S)
    transport_options: dict[str, Any] = {
        # Queues in the order given (the portal lists the worker's own, then its pools, then the shared
        # tiers): Redis BRPOP takes from the first non-empty one, so a pool worker serves its pool first.
        "queue_order_strategy": "priority",
        "visibility_timeout": visibility_s,
        # kombu scans for messages past their visibility timeout only every interval × throttle seconds
        # (100 s by default); tie the scan to the timeout so a short one (tests) takes effect.
        "unacked_restore_interval": max(1, min(60, visibility_s // 4)),
        "unacked_restore_throttle": 1,
    }
    if url.startswith("filesystem://"):
        folder = broker_dir()
        (folder / "processed").mkdir(parents=True, exist_ok=True)
        transport_options.update(
            data_folder_in=str(folder),
            data_folder_out=str(folder),
            processed_folder=str(folder / "processed"),
            control_folder=str(folder / "control"),
            store_processed=False,
        )
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_queues=[job_queue(q) for q in validate_queues(list(queues))],
        task_create_missing_queues=False,
        task_default_queue=queues[0],
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        # Jobs run as subprocesses, so this matters only for a prefork pool; kept per design §4.
        worker_max_tasks_per_child=1 if gpu else None,
        worker_hijack_root_logger=False,
        worker_enable_remote_control=False,  # no pidbox: the filesystem transport has no fanout by default
        worker_send_task_events=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,
    )
    app.task(name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True)(
        run_job
    )
    return app


@dataclass
class AgentContext:
    """What the task needs from `start`: the portal client, run settings, and the GPU slots to hand out."""

    client: WorkerClient
    settings: RunnerSettings
    gpu_slots: Any = None  # workers.agent.GpuSlots
    outcomes: list[Outcome] = field(default_factory=list)  # for tests and the agent's own log


_context: AgentContext | None = None


def set_context(context: AgentContext | None) -> None:
    global _context
    _context = context


def run_job(task: Any, job_id: str) -> str:
    """`locus.run_job(job_id)`: claim over HTTP, run, complete. Returns a short word for the worker log."""
    if _context is None:
        raise RuntimeError("locus.run_job needs the agent context (start it with `python -m workers start`)")
    job_id = str(job_id)
    if _context.settings.shutdown.is_set():
        # Received just as the agent stops: give the doorbell back instead of claiming and handing back.
        raise Reject("worker shutting down", requeue=True)
    try:
        claim = _context.client.claim(job_id)
    except Conflict as exc:
        log.info("job %s: not claimable (%s); message dropped", job_id, exc)
        return "dropped"
    except NotFound:
        log.warning("job %s: unknown to the portal; message dropped", job_id)
        return "unknown"
    except PortalUnavailable as exc:
        # The portal is down: keep the doorbell. Requeue after a pause instead of spinning on it.
        log.error("job %s: portal unreachable (%s); message requeued", job_id, exc)
        time.sleep(PORTAL_DOWN_REQUEUE_S)
        raise Reject(str(exc), requeue=True) from None
    except PortalError as exc:
        log.error("job %s: claim refused (%s); message dropped", job_id, exc)
        return "refused"
    return run_claimed(_context, claim).ended_by or "done"


def run_claimed(context: AgentContext, claim: dict[str, Any]) -> Outcome:
    """Run a claim with a GPU slot when the job asks for one (concurrency = one job per GPU)."""
    want = int(((claim.get("spec") or {}).get("hardware") or {}).get("gpu") or 0)
    indices = context.gpu_slots.acquire(want) if context.gpu_slots is not None and want else []
    try:
        settings = RunnerSettings(**{**context.settings.__dict__, "gpu_indices": indices})
        outcome = AttemptRun(context.client, claim, settings).run()
    finally:
        if indices:
            context.gpu_slots.release(indices)
    context.outcomes.append(outcome)
    return outcome
