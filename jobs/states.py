"""Every status transition of jobs and attempts (design §3), each a conditional UPDATE.

A transition names the state it expects; if the row is no longer in it (a duplicate delivery, a stale
fencing token, a race with the sweeper or a cancel), the UPDATE touches no row and `Conflict` is raised
with the current state. Terminal states never change. Side effects (dispatch, email) are queued with
`transaction.on_commit`, so they happen only if the transition really committed.
"""

from __future__ import annotations

import contextlib
import secrets
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from jobs import dispatch
from jobs.models import Attempt, Job, JobEvent, Worker

QUEUED, RUNNING = Job.Status.QUEUED, Job.Status.RUNNING
SUCCEEDED, FAILED, CANCELLED = Job.Status.SUCCEEDED, Job.Status.FAILED, Job.Status.CANCELLED
FAILURE_CLASSES = ("input", "algorithm", "infrastructure")


class Conflict(Exception):
    """The transition does not apply to the current state. Maps to HTTP 409 with `status` in the body."""

    def __init__(self, message: str, status: str | None = None):
        super().__init__(message)
        self.message = message
        self.status = status


def lease_delta() -> timedelta:
    return timedelta(seconds=settings.LOCUS_LEASE_SECONDS)


def event(job: Job | str, kind: str, message: str = "", attempt: Attempt | None = None, **data) -> JobEvent:
    job_id = job.pk if isinstance(job, Job) else job
    return JobEvent.objects.create(job_id=job_id, attempt=attempt, kind=kind, message=message, data=data)


def _current_status(job_id) -> str | None:
    return Job.objects.filter(pk=job_id).values_list("status", flat=True).first()


def _finish(job: Job | str, status: str, **fields) -> bool:
    """running|queued → terminal, once. Queues the notification email on commit."""
    job_id = job.pk if isinstance(job, Job) else job
    now = timezone.now()
    updated = Job.objects.filter(pk=job_id, status__in=[QUEUED, RUNNING]).update(
        status=status, finished_at=now, waiting_reason="", **fields
    )
    if updated:
        kind_message = {SUCCEEDED: "Job succeeded", FAILED: "Job failed", CANCELLED: "Job cancelled"}
        ev = event(job_id, status, fields.get("reason") or kind_message[status])
        transaction.on_commit(lambda: dispatch.send_notification(job_id, ev.pk))
        parent_id = (job.parent_id if isinstance(job, Job)
                     else Job.objects.filter(pk=job_id).values_list("parent_id", flat=True).first())
        if parent_id:  # a pipeline's step ended: the pipeline may move on (jobs.pipelines.advance)
            transaction.on_commit(lambda: dispatch.advance_pipeline(parent_id))
    return bool(updated)


def finish_reused(job: Job) -> bool:
    """queued → succeeded without a worker: a train answered with a model that already exists
    (jobs.trained_models), in the transaction that submitted it."""
    now = timezone.now()
    Job.objects.filter(pk=job.pk, status=QUEUED).update(started_at=now)
    return _finish(job, SUCCEEDED, progress=1.0)


def finish_pipeline(pipeline: Job, status: str, reason: str) -> bool:
    """A pipeline's own job ends with its steps (jobs.pipelines): running → succeeded | failed, once."""
    fields = {"progress": 1.0} if status == SUCCEEDED else {"reason": reason}
    return _finish(pipeline, status, **fields)


def _requeue(job_id, reason: str, attempt: Attempt | None = None) -> bool:
    """running → queued for another attempt; a new broker message is sent on commit."""
    job = Job.objects.only("queue").get(pk=job_id)
    updated = Job.objects.filter(pk=job_id, status=RUNNING).update(status=QUEUED, progress=0.0, progress_detail={},
                                                                   queued_at=timezone.now())
    if updated:
        event(job_id, "requeued", reason, attempt=attempt)
        transaction.on_commit(lambda: dispatch.send_job(job_id, job.queue))
    return bool(updated)


@transaction.atomic
def claim(job_id, worker: Worker, code_version: str = "") -> Attempt:
    """queued → running: a new Attempt with a fresh fencing token and lease. A job pinned to another worker
    is refused here, in the same conditional UPDATE, so no path (broker, pull, a forged id) gets around it."""
    now = timezone.now()
    updated = (Job.objects.filter(pk=job_id, status=QUEUED, cancel_requested=False)
               .filter(Q(pinned_worker__isnull=True) | Q(pinned_worker=worker))
               .update(status=RUNNING, attempt_count=F("attempt_count") + 1, waiting_reason="", progress=0.0))
    if not updated:
        row = Job.objects.filter(pk=job_id).values("status", "pinned_worker_id").first()
        if row is None:
            raise Conflict("no such job")
        if row["status"] == QUEUED and row["pinned_worker_id"] not in (None, worker.pk):
            raise Conflict("job is pinned to another worker", row["status"])
        raise Conflict(f"job is {row['status']}, not queued", row["status"])
    job = Job.objects.get(pk=job_id)
    if job.started_at is None:
        Job.objects.filter(pk=job_id).update(started_at=now)
    attempt = Attempt.objects.create(
        job=job, number=job.attempt_count, worker=worker, fencing_token=secrets.token_hex(24),
        lease_expires_at=now + lease_delta(), started_at=now, code_version=code_version,
    )
    event(job, "claimed", f"attempt {attempt.number} started on {worker.name}", attempt=attempt,
          worker=str(worker.pk))
    return attempt


def _running_attempt(attempt_id, token: str, *, allow_cancelled: bool = False) -> Attempt:
    """The attempt a worker call refers to, if its fencing token is current; else Conflict (409)."""
    attempt = Attempt.objects.select_related("job").filter(pk=attempt_id).first()
    if attempt is None:
        raise Conflict("no such attempt")
    if not secrets.compare_digest(attempt.fencing_token, token or ""):
        raise Conflict("stale fencing token", attempt.status)
    ok = {Attempt.Status.RUNNING, Attempt.Status.CANCELLED} if allow_cancelled else {Attempt.Status.RUNNING}
    if attempt.status not in ok:
        raise Conflict(f"attempt is {attempt.status}", attempt.status)
    return attempt


def heartbeat(attempt_id, token: str, progress: dict | None = None) -> tuple[str, Attempt]:
    """Extend the lease and record progress. Returns ('continue' | 'cancel', attempt)."""
    attempt = _running_attempt(attempt_id, token, allow_cancelled=True)
    if attempt.status == Attempt.Status.CANCELLED:
        return "cancel", attempt
    expires = timezone.now() + lease_delta()
    updated = Attempt.objects.filter(pk=attempt.pk, fencing_token=token, status=Attempt.Status.RUNNING).update(
        lease_expires_at=expires
    )
    if not updated:  # raced with the sweeper or a cancel since the read above
        status = Attempt.objects.filter(pk=attempt.pk).values_list("status", flat=True).first()
        if status == Attempt.Status.CANCELLED:
            return "cancel", attempt
        raise Conflict(f"attempt is {status}", status)
    attempt.lease_expires_at = expires
    if progress:
        fraction = progress.get("progress")
        fields = {"progress_detail": progress}
        if isinstance(fraction, int | float) and 0 <= fraction <= 1:
            fields["progress"] = float(fraction)
        Job.objects.filter(pk=attempt.job_id, status=RUNNING).update(**fields)
    return "continue", attempt


def check_fencing(attempt_id, token: str) -> Attempt:
    """For log/output calls: the attempt must be running with this token."""
    return _running_attempt(attempt_id, token)


def attempts_used(job: Job) -> int:
    """Claims that count against `max_attempts`: every one except those handed back at worker shutdown."""
    return job.attempt_count - job.attempts.filter(status=Attempt.Status.RELEASED).count()


@transaction.atomic
def complete(attempt_id, token: str, *, exit_code: int | None, failure_class: str | None, reason: str = "",
             cpu_seconds: float = 0.0, gpu_seconds: float = 0.0, register_outputs=None,
             handback: bool = False) -> Job:
    """running → succeeded | failed (or queued again for a retryable failure). Outputs registered atomically.

    `handback`: the worker is shutting down and stopped the job (or never started it); the attempt becomes
    `released` and the job is queued again at once without using one of its `max_attempts` — a rolling
    restart of the fleet must not fail a job that did nothing wrong.
    """
    attempt = _running_attempt(attempt_id, token)
    if handback and attempt.job.attempts.filter(status=Attempt.Status.RELEASED).count() >= settings.LOCUS_MAX_HANDBACKS:
        handback = False  # counts as an infrastructure failure from here on (LOCUS_MAX_HANDBACKS)
        failure_class = "infrastructure"
        reason = f"handed back more than {settings.LOCUS_MAX_HANDBACKS} times" + (f": {reason}" if reason else "")
    success = exit_code == 0 and not failure_class and not handback
    if handback:
        failure_class = "infrastructure"
    elif not success and failure_class not in FAILURE_CLASSES:
        failure_class = "algorithm"
    now = timezone.now()
    if handback:
        new_status = Attempt.Status.RELEASED
    else:
        new_status = Attempt.Status.SUCCEEDED if success else Attempt.Status.FAILED
    updated = Attempt.objects.filter(pk=attempt.pk, fencing_token=token, status=Attempt.Status.RUNNING).update(
        status=new_status, finished_at=now,
        exit_code=exit_code, failure_class=failure_class or "", reason=reason[:5000],
        cpu_seconds=max(cpu_seconds, 0.0), gpu_seconds=max(gpu_seconds, 0.0),
    )
    if not updated:
        status = Attempt.objects.filter(pk=attempt.pk).values_list("status", flat=True).first()
        raise Conflict(f"attempt is {status}", status)
    job = attempt.job
    if handback:
        event(job, "released", reason or "handed back by the worker", attempt=attempt, exit_code=exit_code)
        _requeue(job.pk, f"attempt {attempt.number} handed back (not counted against max_attempts)", attempt)
    elif success:
        if register_outputs:
            register_outputs(job, attempt)
        _finish(job, SUCCEEDED, progress=1.0)
    else:
        event(job, "attempt_failed", reason or f"exit code {exit_code}", attempt=attempt,
              exit_code=exit_code, failure_class=failure_class)
        spec = job.spec
        retryable = failure_class == "infrastructure" or (
            failure_class == "algorithm" and spec.get("retry_on_algorithm_failure", False)
        )
        if retryable and attempts_used(job) < job.max_attempts:
            _requeue(job.pk, f"retrying after {failure_class} failure", attempt)
        else:
            _finish(job, FAILED, failure_class=failure_class,
                    reason=reason or f"{failure_class} failure (exit code {exit_code})")
    job.refresh_from_db()
    return job


@transaction.atomic
def cancel(job: Job, by=None) -> Job:
    """queued|running → cancelled at once. A running attempt is marked cancelled; the worker learns it at
    its next heartbeat (directive `cancel`) and stops the process; its later calls get 409."""
    if job.status not in (QUEUED, RUNNING):
        raise Conflict(f"job is already {job.status}", job.status)
    Job.objects.filter(pk=job.pk).update(cancel_requested=True)
    Attempt.objects.filter(job=job, status=Attempt.Status.RUNNING).update(
        status=Attempt.Status.CANCELLED, finished_at=timezone.now(), reason="cancelled by user"
    )
    if not _finish(job, CANCELLED, reason="cancelled by user"):
        job.refresh_from_db()
        raise Conflict(f"job is already {job.status}", job.status)
    # A pipeline takes its unfinished steps with it (the steps not yet submitted never will be).
    for step in Job.objects.filter(parent=job, status__in=[QUEUED, RUNNING]):
        with contextlib.suppress(Conflict):  # it ended meanwhile
            cancel(step, by)
    job.refresh_from_db()
    return job


def _lose(attempt: Attempt, now, *, only_if=Q(), reason: str, kind: str, message: str) -> bool:
    """running → lost for one attempt; its job is requeued or, out of attempts, failed. In one transaction."""
    with transaction.atomic():
        updated = Attempt.objects.filter(only_if, pk=attempt.pk, status=Attempt.Status.RUNNING).update(
            status=Attempt.Status.LOST, finished_at=now, failure_class="infrastructure", reason=reason)
        if not updated:
            return False
        event(attempt.job_id, kind, message, attempt=attempt)
        job = Job.objects.get(pk=attempt.job_id)
        if attempts_used(job) < job.max_attempts:
            _requeue(job.pk, f"{message} (attempt {attempt.number})", attempt)
        else:
            _finish(job, FAILED, failure_class="infrastructure",
                    reason=f"{message}; all {job.max_attempts} attempts used")
    return True


def expire_leases(now=None) -> int:
    """Attempts whose lease ran out become `lost`; their job is requeued or, out of attempts, failed."""
    now = now or timezone.now()
    count = 0
    for attempt in Attempt.objects.filter(status=Attempt.Status.RUNNING, lease_expires_at__lt=now):
        count += _lose(attempt, now, only_if=Q(lease_expires_at__lt=now), kind="lease_lost",
                       reason="lease expired: the worker stopped heartbeating", message="lease lost")
    return count


def hand_back(worker: Worker, reason: str) -> int:
    """A revoked worker's running attempts become `lost` now (not at lease expiry); their jobs are requeued.

    The worker's later calls carry a revoked token (401), so nothing it sends can finish these attempts.
    """
    now = timezone.now()
    count = 0
    for attempt in Attempt.objects.filter(worker=worker, status=Attempt.Status.RUNNING):
        count += _lose(attempt, now, reason=reason, kind="handed_back", message=reason)
    return count


def reroute(job: Job, to_queue: str, message: str) -> bool:
    """queued on one queue → queued on another (pool spill-over). Only while still queued where it was."""
    with transaction.atomic():
        updated = Job.objects.filter(pk=job.pk, status=QUEUED, queue=job.queue).update(
            queue=to_queue, queued_at=timezone.now())
        if not updated:
            return False
        event(job, "spilled_over", message, from_queue=job.queue, to_queue=to_queue)
        transaction.on_commit(lambda: dispatch.send_job(job.pk, to_queue))
    return True


def change_route(job: Job, to_queue: str, spec: dict, message: str) -> bool:
    """queued on its GPU route → queued on its CPU route: queue, frozen spec (hardware, time limit, Device) and
    waiting reason in one conditional UPDATE, only while still queued where it was and on the GPU route, so
    a claim that came first wins and a second sweep moves nothing. A `cpu_route` event, then a new message."""
    with transaction.atomic():
        updated = (Job.objects.filter(pk=job.pk, status=QUEUED, cancel_requested=False, queue=job.queue,
                                      spec__route="gpu")
                   .update(queue=to_queue, spec=spec, queued_at=timezone.now(),
                           waiting_reason=spec.get("route_reason", "")[:300]))
        if not updated:
            return False
        event(job, "cpu_route", message, from_queue=job.queue, to_queue=to_queue,
              hardware=spec.get("hardware"), timeout_s=spec.get("timeout_s"))
        transaction.on_commit(lambda: dispatch.send_job(job.pk, to_queue))
    return True


def flag_waiting(job: Job, reason: str) -> None:
    """Tell the user why a queued job waits; an event only when the reason changes."""
    updated = Job.objects.filter(pk=job.pk, status=QUEUED).filter(~Q(waiting_reason=reason)).update(
        waiting_reason=reason
    )
    if updated and reason:
        event(job, "waiting", reason)
