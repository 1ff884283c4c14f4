"""Small helpers the page modules share: quota figures, queue positions, status vocabulary."""

from __future__ import annotations

from django.conf import settings

from jobs import services
from jobs.models import Job


def quota(user) -> dict:
    used = services.used_bytes(user)
    total = services.quota_bytes(user)
    return {"used": used, "total": total, "left": max(total - used, 0),
            "percent": min(100.0, round(100.0 * used / total, 1)) if total else 100.0,
            "max_file": settings.LOCUS_MAX_FILE_BYTES}


def queue_position(job: Job) -> int | None:
    """1 for the next queued job of its queue; None unless queued."""
    if job.status != Job.Status.QUEUED:
        return None
    ahead = Job.objects.filter(status=Job.Status.QUEUED, queue=job.queue, cancel_requested=False,
                               created_at__lt=job.created_at).count()
    return ahead + 1


def job_row(job: Job) -> dict:
    """What the jobs list shows of a job (the live JSON and the first render share it)."""
    detail = job.progress_detail or {}
    return {"id": str(job.pk), "status": job.status, "progress": round(job.progress or 0.0, 4),
            "stage": detail.get("stage") or "", "epoch": detail.get("epoch"),
            "queue": job.queue, "queue_position": queue_position(job), "waiting_reason": job.waiting_reason,
            "reason": job.reason, "terminal": job.is_terminal}
