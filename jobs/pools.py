"""Institution pools (design §4): members' jobs go to their institution's private queue first, and spill over
to the shared tiers when no pool worker claims them within the institution's wait.

A pool exists while an enabled worker serves it (`Worker.pools` holds the institution's slug): enrolling the
first pool worker opens it, revoking the last one closes it. A job is routed to `pool.<slug>.<tier>` only when
one of those workers' hardware covers that tier, so a job never waits on a pool that could never run it.

The CPU route (end of the module) is routing too: a job of an entrypoint that can also run on a CPU goes to the
`cpu` tier (or its pool's) when the user chooses Device = cpu, or when LOCUS_CPU_ROUTE_AFTER_SECONDS says so.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

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


# --- the CPU route (registry `cpu_route`, design §9) -------------------------------------------------------

def need_text(hardware: dict[str, Any]) -> str:
    """What a worker must have to take a job: '≥ 16 GB GPU memory', '≥ 2 CPU cores and ≥ 8 GB RAM'."""
    if hardware.get("gpu"):
        return f"≥ {hardware.get('gpu_memory_gb', 0)} GB GPU memory"
    return f"≥ {hardware.get('cpu', 1)} CPU cores and ≥ {hardware.get('memory_gb', 0)} GB RAM"


def recent_capabilities(now=None) -> list[dict[str, Any]] | None:
    """The capabilities of enabled workers seen within LOCUS_CPU_ROUTE_AFTER_SECONDS (and at least the online
    window, so an online worker always counts); None when the setting is off."""
    after = settings.LOCUS_CPU_ROUTE_AFTER_SECONDS
    if not after:
        return None
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=max(after, 3 * settings.LOCUS_LEASE_SECONDS))
    return list(Worker.objects.filter(enabled=True, last_seen__gte=cutoff).values_list("capabilities", flat=True))


def cpu_route_due(hardware: dict[str, Any], recent: list[dict[str, Any]] | None) -> bool:
    """Whether automatic-device jobs needing `hardware` go to their CPU route: the setting is on (`recent` is
    `recent_capabilities()`) and no worker seen within it could take them."""
    return recent is not None and not any(reg.covers(caps or {}, hardware) for caps in recent)


def on_cpu_route(spec: dict[str, Any], reason: str = "") -> dict[str, Any]:
    """A copy of a frozen spec (of an entrypoint with a CPU route) that runs on the CPU: the route's hardware
    and time limit, Device = cpu (a worker that also has a GPU gives a CPU job no GPU slot, so the job must not
    look for one), and `route_reason` when the deployment, not the user, chose the route."""
    route = spec["cpu_route"]
    new = {**spec, "route": "cpu", "hardware": dict(route["hardware"]), "timeout_s": route["timeout_s"],
           "params": {**spec["params"], reg.DEVICE_PARAM: "cpu"}}
    if reason:
        new["route_reason"] = reason
    return new


def auto_route_reason(spec: dict[str, Any]) -> str:
    """Why the deployment sends an automatic-device job to the CPU (the event and the job's waiting reason);
    `spec` is the job's GPU-route spec."""
    return (f"runs on a CPU ({reg.CpuRoute(**spec['cpu_route']).describe()}): no worker with "
            f"{need_text(spec['hardware'])} was online in the last {settings.LOCUS_CPU_ROUTE_AFTER_SECONDS} s "
            "and Device is automatic")


def choose_route(entry: reg.Entrypoint, spec: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """At submit: the frozen spec on the route the job takes, and a note for the submit event. An entrypoint
    with a CPU route records `route` ("gpu" | "cpu") and the route itself (so the sweep can move the job
    later without the registry); it runs on the CPU when the user chose Device = cpu, or left it automatic
    while no worker that could take the GPU job has been seen for LOCUS_CPU_ROUTE_AFTER_SECONDS."""
    if entry.cpu_route is None:
        return spec, ""
    cpu = entry.cpu_route
    spec = {**spec, "route": "gpu",
            "cpu_route": {"hardware": cpu.hardware, "timeout_s": cpu.timeout_s, "slowdown": cpu.slowdown}}
    auto = (spec["params"].get(reg.DEVICE_PARAM) is None
            and cpu_route_due(spec["hardware"], recent_capabilities()))
    if not entry.runs_on_cpu(spec["params"], auto_to_cpu=auto):
        return spec, ""
    if auto:
        reason = auto_route_reason(spec)
        return on_cpu_route(spec, reason), f" (CPU route: {reason})"
    return on_cpu_route(spec), " (CPU route: Device = cpu)"


def move_to_cpu_route(now=None) -> int:
    """Sweep: queued GPU jobs of entrypoints with a CPU route, Device automatic, that no worker seen within
    LOCUS_CPU_ROUTE_AFTER_SECONDS could take, go to the CPU route (queue, hardware and time limit change
    together; an event and the waiting reason say so). A job whose user chose Device = cuda stays."""
    recent = recent_capabilities(now)
    if recent is None:
        return 0
    moved = 0
    with transaction.atomic():
        for job in (Job.objects.filter(status=Job.Status.QUEUED, cancel_requested=False, pinned_worker__isnull=True,
                                       spec__route="gpu")
                    .select_related("owner").only("id", "queue", "spec", "owner")):
            spec = job.spec
            if (spec.get("params") or {}).get(reg.DEVICE_PARAM) is not None or not spec.get("cpu_route"):
                continue
            if not cpu_route_due(spec["hardware"], recent):
                continue
            new = on_cpu_route(spec, auto_route_reason(spec))
            queue = route(job.owner, reg.queue_for(new["hardware"]))
            moved += states.change_route(job, queue, new, f"moved from {job.queue} to {queue}: "
                                                          f"{new['route_reason']}")
    return moved
