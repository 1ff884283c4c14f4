"""Cost of pools and usage accounting at fleet scale, against local PostgreSQL.

    python bench/usage.py [--attempts 100000] [--users 500] [--workers 100] [--queued 2000] [--db NAME]

Fills a fresh database (dropped and re-created: NAME, default locus_bench_usage) with institutions, users,
workers and finished attempts (bulk inserts), then times what the portal does with them: the usage report
(staff, institution admin, plain user), the workers page's facts for every worker, routing a submission,
a pull-mode claim with pool-first ranking over many queued jobs, and one sweep's spill-over pass. Each figure
is the median of --repeats runs. Prints a table and writes bench/results/usage.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attempts", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--institutions", type=int, default=20)
    parser.add_argument("--workers", type=int, default=100)
    parser.add_argument("--queued", type=int, default=2000, help="queued jobs (half in pools) for claim/spill")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--db", default="locus_bench_usage")
    args = parser.parse_args()

    subprocess.run(["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists", args.db], check=True)
    subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", args.db], check=True)
    os.environ.update(DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{args.db}",
                      CELERY_BROKER_URL="memory://", DJANGO_SETTINGS_MODULE="portal.settings",
                      LOCUS_VAR_DIR=str(ROOT / "var" / "bench-usage"), LOCUS_SELFTEST_ON_ENROLL="false")
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.utils import timezone

    from jobs import pools, services, usage
    from jobs.models import Attempt, Institution, Job, Membership, Worker

    call_command("migrate", verbosity=0)
    now = timezone.now()
    user_model = get_user_model()
    users = user_model.objects.bulk_create([user_model(username=f"u{i}") for i in range(args.users)])
    insts = Institution.objects.bulk_create([Institution(slug=f"inst{i}", name=f"Inst {i}")
                                             for i in range(args.institutions)])
    Membership.objects.bulk_create([Membership(user=u, institution=insts[i % len(insts)], is_admin=i < len(insts))
                                    for i, u in enumerate(users)])
    caps = {"cpu_count": 16, "memory_gb": 64, "gpus": [{"name": "A100", "memory_gb": 80}]}
    workers = Worker.objects.bulk_create([
        Worker(name=f"w{i}", owner=users[i % len(users)], institution=insts[i % len(insts)],
               pools=[insts[i % len(insts)].slug] if i % 2 else [], capabilities=caps, last_seen=now)
        for i in range(args.workers)])
    spec = {"hardware": {"gpu": 0, "cpu": 1, "memory_gb": 1}}
    jobs = Job.objects.bulk_create([
        Job(owner=users[i % len(users)], application="diagnostics", version="1.0", entrypoint="selftest", spec=spec,
            queue="cpu", status=Job.Status.SUCCEEDED, attempt_count=1)
        for i in range(args.attempts)], batch_size=5000)
    Attempt.objects.bulk_create([
        Attempt(job=job, number=1, worker=workers[i % len(workers)], fencing_token=uuid.uuid4().hex,
                status=Attempt.Status.SUCCEEDED, lease_expires_at=now, finished_at=now - timedelta(minutes=i % 9000),
                cpu_seconds=30.0, gpu_seconds=120.0)
        for i, job in enumerate(jobs)], batch_size=5000)
    old = now - timedelta(hours=1)
    Job.objects.bulk_create([
        Job(owner=users[i % len(users)], application="diagnostics", version="1.0", entrypoint="selftest", spec=spec,
            queue=f"pool.{insts[i % len(insts)].slug}.cpu" if i % 2 else "cpu", queued_at=old)
        for i in range(args.queued)], batch_size=5000)

    staff = user_model.objects.create(username="staff", is_staff=True)
    admin, plain = users[0], users[-1]
    pool_worker = next(w for w in workers if w.pools)
    rows = [
        ("usage report, staff (all users)", timed(lambda: usage.report(
            staff, managed_workers=services.managed_workers(staff)), args.repeats)),
        ("usage report, institution admin", timed(lambda: usage.report(
            admin, managed_workers=services.managed_workers(admin)), args.repeats)),
        ("usage report, plain user", timed(lambda: usage.report(
            plain, managed_workers=services.managed_workers(plain)), args.repeats)),
        ("workers page facts, all workers", timed(lambda: services.worker_facts(Worker.objects.all()), args.repeats)),
        ("route one submission", timed(lambda: pools.route(plain, "cpu"), args.repeats)),
        ("claim-next ranking (rolled back)", timed(lambda: _claim_and_roll_back(services, pool_worker), args.repeats)),
    ]
    # Spill-over moves every pool job once; time that single pass (it is what the first sweep after an outage does).
    t0 = time.perf_counter()
    moved = pools.spill_over()
    rows.append((f"spill-over pass ({moved} pool jobs moved)", time.perf_counter() - t0))
    rows.append(("spill-over pass, nothing to move", timed(pools.spill_over, args.repeats)))

    print(f"{args.attempts} attempts, {args.users} users, {args.institutions} institutions, {args.workers} workers, "
          f"{args.queued} queued jobs; median of {args.repeats}")
    print(f"{'operation':45} {'ms':>10}")
    for name, seconds in rows:
        print(f"{name:45} {seconds * 1000:10.1f}")
    out = ROOT / "bench" / "results" / "usage.json"
    out.write_text(json.dumps({"params": vars(args), "ms": {name: round(s * 1000, 2) for name, s in rows}},
                              indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


def _claim_and_roll_back(services, worker) -> None:
    from django.db import transaction

    with transaction.atomic():
        assert services.claim_next(worker, 0) is not None
        transaction.set_rollback(True)


if __name__ == "__main__":
    raise SystemExit(main())
