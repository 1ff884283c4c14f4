"""Institution pools (design §4): members' jobs go to their institution's private queue first, and spill over
to the shared tiers when no pool worker claims them within the institution's wait.

A pool exists while an enabled worker serves it (`Worker.pools` holds the institution's slug): enrolling the
first pool worker opens it, revoking the last one closes it. A job is routed to `pool.<slug>.<tier>` only when
one of those workers' hardware covers that tier, so a job never waits on a pool that could never run it.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from algorithms import registry as reg
from jobs import states
from jobs.models import Institution, Job, Worker


def pool_queue(slug: str, tier: str) -> str:
    return f"pool.{slug}.{tier}"


def tier_queues(worker: Worker) -> list[str]:
    """The shared tiers a worker's registered hardware covers (`cpu`, `gpu.<GB>`...)."""
    return reg.queues_for_capabilities(worker.capabilities or {})


def route(user, tier: str) -> str:
    """The queue for a job of `user` needing `tier`: the first (by slug) of the user's institutions whose
    pool has an enabled worker covering the tier, else the shared tier itself."""
    slugs = list(Institution.objects.filter(membership__user=user).order_by("slug").values_list("slug", flat=True))
    if not slugs:
        return tier
    serving = [w for w in Worker.objects.filter(enabled=True).only("pools", "capabilities") if w.pools]
    for slug in slugs:
        if any(slug in w.pools and tier in tier_queues(w) for w in serving):
            return pool_queue(slug, tier)
    return tier


def spillover_seconds(slug: str) -> int:
    """The institution's own wait if it set one, else LOCUS_POOL_SPILLOVER_SECONDS."""
    own = Institution.objects.filter(slug=slug).values_list("pool_spillover_seconds", flat=True).first()
    return settings.LOCUS_POOL_SPILLOVER_SECONDS if own is None else int(own)


def shared_tier(job: Job) -> str:
    return reg.queue_for(job.spec.get("hardware", {}))


def spill_over(now=None) -> int:
    """Move pool jobs queued longer than their institution's wait to the shared tier (sweep, every pass)."""
    now = now or timezone.now()
    waits: dict[str, int] = {}
    moved = 0
    # One transaction for the pass (one commit, not one per job: a backlog after an outage moves at once);
    # each move is still its own conditional UPDATE, and the doorbells go out after the commit.
    with transaction.atomic():
        for job in Job.objects.filter(status=Job.Status.QUEUED, queue__startswith="pool.").only(
                "id", "queue", "queued_at", "spec"):
            slug = job.queue.split(".")[1]
            wait = waits.setdefault(slug, spillover_seconds(slug))
            if job.queued_at > now - timedelta(seconds=wait):
                continue
            tier = shared_tier(job)
            moved += states.reroute(job, tier, f"not claimed in pool {slug} within {wait} s; moved to the "
                                               f"shared queue {tier}")
    return moved
