"""The selftest after enrollment: a `diagnostics selftest` job pinned to the new worker, and its verdict.

The job runs the registry's own selftest on that worker only (its own queue `worker.<id>`, and claim refuses
every other worker). When it ends, the hardware it saw is compared with what the worker registered: a worker
that claims a GPU its jobs cannot see fails, even though the job itself exited 0.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib.auth import get_user_model
from django.core.files.storage import default_storage
from django.utils import timezone

from jobs.capabilities import normalise
from jobs.models import Job, Worker

APPLICATION, ENTRYPOINT = "diagnostics", "selftest"
SYSTEM_USERNAME = "locus-system"
MAX_REPORT_BYTES = 256 * 1024


def system_user():
    """Owner of selftests for workers enrolled with a token nobody owns (management command, tests).

    It cannot log in (inactive, unusable password); it exists so every job has an owner.
    """
    user_model = get_user_model()
    user, created = user_model.objects.get_or_create(username=SYSTEM_USERNAME, defaults={"is_active": False})
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user


def is_selftest(job: Job) -> bool:
    return job.pinned_worker_id is not None and job.application == APPLICATION and job.entrypoint == ENTRYPOINT


def verdict(job: Job, report: dict[str, Any] | None, worker: Worker) -> dict[str, Any]:
    """Pass/fail with the reasons, and the few facts the workers page shows."""
    checks = []
    if job.status != Job.Status.SUCCEEDED:
        checks.append(f"the selftest job {job.status}" + (f": {job.reason}" if job.reason else ""))
    report = report or {}
    registered = len(normalise(worker.capabilities)["gpus"])
    seen = len(report.get("gpus") or [])
    if job.status == Job.Status.SUCCEEDED and seen < registered:
        checks.append(f"the worker registered {registered} GPU(s) but the job saw {seen}")
    matmul = report.get("matmul") or {}
    return {
        "job": str(job.pk), "status": job.status, "passed": not checks, "problems": checks,
        "finished_at": (job.finished_at or timezone.now()).isoformat(),
        "hostname": report.get("hostname"), "cpu_count": report.get("cpu_count"),
        "memory_gb": report.get("memory_gb"),
        "gpus": [{k: g.get(k) for k in ("name", "memory_gb", "compute_capability")} for g in report.get("gpus") or []],
        "device": matmul.get("device"), "gflops": matmul.get("gflops"),
    }


def read_report(job: Job) -> dict[str, Any] | None:
    """The job's `report.json` output, if it is there, small and valid JSON."""
    output = job.outputs.filter(name="report.json").order_by("-created_at").first()
    if output is None or output.size > MAX_REPORT_BYTES:
        return None
    try:
        with default_storage.open(output.key, "rb") as fh:
            data = json.loads(fh.read(MAX_REPORT_BYTES + 1))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def record(job: Job) -> None:
    """Store the verdict on the pinned worker once its selftest is terminal (a re-run replaces it)."""
    if not is_selftest(job) or not job.is_terminal:
        return
    worker = Worker.objects.filter(pk=job.pinned_worker_id).first()
    if worker is None:
        return
    Worker.objects.filter(pk=worker.pk).update(selftest_job=job, selftest_report=verdict(job, read_report(job), worker))
