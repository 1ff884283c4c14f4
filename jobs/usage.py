"""Usage accounting: who used how much compute, and whose workers donated it (docs/usage.md).

Every finished attempt carries what its worker measured: `cpu_seconds` (user + system CPU time of the job's
process tree, from the child's rusage) and `gpu_seconds` (wall time × GPUs allocated to the job). Sums here
are over attempts, so a retried job counts every attempt that ran. An attempt lost with its worker reported
nothing and counts zero. *Used* is charged to the job's owner and to each institution the owner belongs to;
*donated* is credited to the worker, its owner and its institution.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import Count, Q, QuerySet, Sum

from jobs.models import Attempt, Institution, Worker

FIELDS = ("attempts", "cpu_seconds", "gpu_seconds")


def _seconds(value: Any) -> float:
    """A stored sum as a finite number: a row written before the worker API bounded these (migration 0007
    mends them) must not make the usage pages fail."""
    value = float(value or 0.0)
    return value if math.isfinite(value) else 0.0


def _totals(row: dict[str, Any] | None) -> dict[str, float]:
    row = row or {}
    cpu, gpu = _seconds(row.get("cpu_seconds")), _seconds(row.get("gpu_seconds"))
    return {"attempts": int(row.get("attempts") or 0), "cpu_seconds": round(cpu, 3), "gpu_seconds": round(gpu, 3),
            "cpu_hours": round(cpu / 3600, 4), "gpu_hours": round(gpu / 3600, 4)}


def attempts(since: datetime | None = None, until: datetime | None = None) -> QuerySet[Attempt]:
    """Attempts that ended in [since, until) (all when unbounded); running attempts have reported nothing."""
    qs = Attempt.objects.filter(finished_at__isnull=False)
    if since:
        qs = qs.filter(finished_at__gte=since)
    if until:
        qs = qs.filter(finished_at__lt=until)
    return qs


_SUMS = {"attempts": Count("id"), "cpu_seconds": Sum("cpu_seconds"), "gpu_seconds": Sum("gpu_seconds")}


def total(qs: QuerySet[Attempt]) -> dict[str, float]:
    return _totals(qs.aggregate(**_SUMS))


def grouped(qs: QuerySet[Attempt], key: str) -> dict[Any, dict[str, float]]:
    """Totals per value of `key` (a lookup such as `worker` or `job__owner`), in one query."""
    return {row[key]: _totals(row) for row in qs.values(key).annotate(**_SUMS).order_by()}


def used_by_user(user, **period) -> dict[str, float]:
    return total(attempts(**period).filter(job__owner=user))


def donated_by_owner(user, **period) -> dict[str, float]:
    return total(attempts(**period).filter(worker__owner=user))


def used_by_institution(institution: Institution, **period) -> dict[str, float]:
    return total(attempts(**period).filter(job__owner__membership__institution=institution))


def donated_by_institution(institution: Institution, **period) -> dict[str, float]:
    return total(attempts(**period).filter(worker__institution=institution))


def donated_by_workers(workers: QuerySet[Worker], **period) -> dict[Any, dict[str, float]]:
    return grouped(attempts(**period).filter(worker__in=workers), "worker")


def used_by_users(users: QuerySet, **period) -> dict[Any, dict[str, float]]:
    return grouped(attempts(**period).filter(job__owner__in=users), "job__owner")


def report(user, *, since: datetime | None = None, until: datetime | None = None,
           managed_workers: QuerySet[Worker] | None = None) -> dict[str, Any]:
    """What `user` may see: their own use and donations, their institutions' totals, the workers they
    manage; staff see every institution and user, an institution admin the members of their institution."""
    period = {"since": since, "until": until}
    if user.is_staff:
        institutions = Institution.objects.all().order_by("slug")
        users = get_user_model().objects.all()
    else:
        institutions = Institution.objects.filter(membership__user=user).order_by("slug")
        admin_of = Institution.objects.filter(membership__user=user, membership__is_admin=True)
        users = get_user_model().objects.filter(Q(pk=user.pk) | Q(membership__institution__in=admin_of)).distinct()
    admin_slugs = set(Institution.objects.filter(membership__user=user, membership__is_admin=True)
                      .values_list("slug", flat=True))
    workers = (managed_workers if managed_workers is not None else Worker.objects.none()).select_related(
        "owner", "institution").order_by("name")
    per_worker = donated_by_workers(workers, **period)
    per_user = used_by_users(users, **period)
    names = dict(users.values_list("pk", "username"))
    return {
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
        "user": {"username": user.get_username(), "used": used_by_user(user, **period),
                 "donated": donated_by_owner(user, **period)},
        "institutions": [
            {"slug": inst.slug, "name": inst.name, "is_admin": inst.slug in admin_slugs,
             "used": used_by_institution(inst, **period), "donated": donated_by_institution(inst, **period)}
            for inst in institutions
        ],
        "workers": [
            {"id": str(w.pk), "name": w.name, "owner": w.owner.get_username() if w.owner else None,
             "institution": w.institution.slug if w.institution else None,
             "donated": per_worker.get(w.pk, _totals(None))}
            for w in workers
        ],
        "users": sorted(({"username": names[pk], "used": totals} for pk, totals in per_user.items() if pk in names),
                        key=lambda row: row["username"]),
    }
