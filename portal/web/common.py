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


def job_origin(job: Job) -> dict:
    """What tells a job apart in the jobs list: its first input files and where they come from (a dataset, an
    earlier job's outputs), the step it is of a pipeline, and for a job without inputs the parameters it
    changed from their defaults. Reads `job.inputs` with their dataset and job (prefetch them for a list)."""
    items = [i for i in (job.spec or {}).get("inputs", []) if not i.get("sibling_of")]
    names = [str(i.get("name", "")) for i in items]
    shown = ", ".join(names[:2]) + (f" +{len(names) - 2} more" if len(names) > 2 else "")
    files = list(job.inputs.all())
    datasets = sorted({f.dataset.name for f in files if f.dataset_id})
    producers = {f.job for f in files if f.job_id}
    sources = [f"dataset {d}" for d in datasets[:2]] + [
        f"step {p.step}" if p.step and p.parent_id == job.parent_id and job.parent_id else
        f"outputs of {p.application} / {p.entrypoint} {str(p.pk)[:8]}" for p in sorted(producers, key=lambda p: p.created_at)[:2]]
    return {"inputs": shown, "source": " · ".join(sources), "step": job.step,
            "pipeline": job.parent.entrypoint if job.parent_id else "",
            "changed": "" if names else _changed_params(job)}


def _changed_params(job: Job) -> str:
    """Up to three plain parameters that differ from the schema's defaults, as `name value`."""
    from algorithms.registry import UnknownEntrypoint
    from jobs.registry import get_registry

    try:
        props = get_registry().get(job.application, job.version, job.entrypoint).params_schema.get("properties", {})
    except UnknownEntrypoint:
        return ""
    changed = [f"{k} {v}" for k, v in (job.params or {}).items()
               if not isinstance(v, dict | list) and k in props and v != props[k].get("default")]
    return " · ".join(changed[:3]) + (" …" if len(changed) > 3 else "")


def job_row(job: Job) -> dict:
    """What the jobs list shows of a job (the live JSON and the first render share it)."""
    detail = job.progress_detail or {}
    return {"id": str(job.pk), "status": job.status, "progress": round(job.progress or 0.0, 4),
            "stage": detail.get("stage") or "", "epoch": detail.get("epoch"),
            "queue": job.queue, "queue_position": queue_position(job), "waiting_reason": job.waiting_reason,
            "reason": job.reason, "terminal": job.is_terminal}
