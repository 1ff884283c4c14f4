"""Celery tasks of the portal side; each one calls a service and is safe to run twice."""

from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.template.loader import render_to_string
from django.utils import timezone

from jobs import pipelines, services, uploads
from jobs.models import Job, JobEvent
from jobs.notifications import wants_email

log = logging.getLogger(__name__)


@shared_task(name="jobs.tasks.send_job_email", bind=True, acks_late=True, max_retries=5, default_retry_delay=30)
def send_job_email(self, job_id: str, event_id: int | None = None) -> bool:
    """One email per terminal transition, honouring the owner's preference; a redelivery sends nothing."""
    job = Job.objects.select_related("owner").filter(pk=job_id).first()
    if job is None or not job.is_terminal or not wants_email(job):
        return False
    if not Job.objects.filter(pk=job.pk, notified_at__isnull=True).update(notified_at=timezone.now()):
        return False  # already sent
    context = {"job": job, "url": f"{settings.PUBLIC_URL}/jobs/{job.pk}/", "user": job.owner,
               "outputs": list(job.outputs.all()[:20])}
    # One line: a failure reason is often a multi-line traceback, and a newline in a header is refused.
    subject = " ".join(render_to_string("jobs/email/job_finished_subject.txt", context).split())
    message = EmailMultiAlternatives(subject, render_to_string("jobs/email/job_finished.txt", context),
                                     settings.DEFAULT_FROM_EMAIL, [job.owner.email])
    message.attach_alternative(render_to_string("jobs/email/job_finished.html", context), "text/html")
    try:
        message.send()
    except Exception as exc:
        Job.objects.filter(pk=job.pk).update(notified_at=None)  # let the retry send it
        raise self.retry(exc=exc) from exc
    JobEvent.objects.create(job=job, kind="email_sent", message=f"notified {job.owner.email}")
    return True


@shared_task(name="jobs.tasks.sweep_leases")
def sweep_leases() -> dict[str, int]:
    """Expire leases, requeue or fail their jobs, flag unschedulable jobs, re-send stale messages, drop
    abandoned uploads."""
    result = {**services.sweep(), "uploads_expired": uploads.expire_stale(),
              "pipelines_ended": pipelines.advance_running()}
    if any(result.values()):
        log.info("sweep: %s", result)
    return result


@shared_task(name="jobs.tasks.advance_pipeline", acks_late=True)
def advance_pipeline(pipeline_id: str) -> str | None:
    """Submit the steps of a pipeline that can start now, or end it (safe to run twice)."""
    return pipelines.advance(pipeline_id)
