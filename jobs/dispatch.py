"""Messages to the broker: the job id to its hardware queue, notifications to `notify`.

Called from `transaction.on_commit` only, so a message never names a row that was rolled back. A send
that fails is logged, not raised: the row is the truth, and the sweeper re-sends for jobs queued too long.
"""

from __future__ import annotations

import logging

from celery import current_app
from django.db import DatabaseError
from django.utils import timezone
from kombu import Queue

from jobs.models import Job

log = logging.getLogger(__name__)

RUN_JOB_TASK = "locus.run_job"


def send_job(job_id, queue: str, *, marked: bool = False) -> bool:
    """Send the job id to its queue and record when (`dispatched_at`, which the redispatch sweep reads).

    `marked`: the caller wrote `dispatched_at` with the row already (submit, in its INSERT), so a send needs
    no UPDATE of its own; if the send fails, it is cleared so that the sweep re-sends at its next pass, as it
    does for any failed send.
    """
    try:
        current_app.send_task(RUN_JOB_TASK, args=[str(job_id)], queue=Queue(queue, routing_key=queue),
                              routing_key=queue)
    except Exception:  # noqa: BLE001 - broker down: the redispatch sweep will try again
        log.exception("could not send job %s to queue %s", job_id, queue)
        if marked:
            try:
                Job.objects.filter(pk=job_id).update(dispatched_at=None)
            except DatabaseError:  # then the sweep re-sends once dispatched_at is old enough
                log.exception("could not clear dispatched_at of job %s", job_id)
        return False
    if not marked:
        Job.objects.filter(pk=job_id).update(dispatched_at=timezone.now())
    return True


def send_notification(job_id, event_id: int) -> None:
    from jobs.tasks import send_job_email

    try:
        send_job_email.delay(str(job_id), event_id)
    except Exception:  # noqa: BLE001
        log.exception("could not queue the notification for job %s", job_id)


def advance_pipeline(pipeline_id) -> None:
    """The doorbell of a pipeline: a step ended or the pipeline began; `jobs.pipelines.advance` answers it."""
    from jobs.tasks import advance_pipeline

    try:
        advance_pipeline.delay(str(pipeline_id))
    except Exception:  # noqa: BLE001 - broker down: the sweep advances every running pipeline
        log.exception("could not queue the advance of pipeline %s", pipeline_id)
