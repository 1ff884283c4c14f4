"""Platform benchmark: latency, throughput and crash recovery against local PostgreSQL + Redis.

    python bench/platform.py [--jobs 200] [--kills 10] [--agents 2]

Starts a real portal (gunicorn), the portal-side Celery worker with beat, and N worker agents in broker
mode, all on production settings (lease 30 s, sweep 15 s unless overridden). Then:
  1. idle latency: jobs submitted one at a time to idle workers → submit→running and submit→succeeded;
  2. burst: --jobs jobs submitted at once → admission rate, latency percentiles, lost/duplicated;
  3. crash: kill -9 an agent (its whole session) mid-job --kills times → kill→running-again, lost jobs.
Prints a table and writes bench/results/platform.json. Needs PostgreSQL and Redis (see .ci/services.sh).
"""

import sys
from pathlib import Path

if __name__ != "__main__":
    # This file shares its name with the standard library's `platform`. A sibling script run as
    # `python bench/x.py` has bench/ first on sys.path, so its `import platform` lands here: hand it the
    # standard library's module instead (the import system returns whatever sys.modules holds now).
    import importlib.util
    import sysconfig

    _spec = importlib.util.spec_from_file_location("platform", Path(sysconfig.get_path("stdlib")) / "platform.py")
    _std = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_std)
    sys.modules["platform"] = _std
elif sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)  # run as a script: keep bench/ off the import path

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402

import requests  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.stack import Stack, reset_database, summary  # noqa: E402

DB_NAME = "locus_bench"
ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
BROKER = "redis://127.0.0.1:6379/14"


def make_stack(args: argparse.Namespace, workdir: Path) -> Stack:
    return Stack(workdir, f"postgres://postgres@127.0.0.1:5432/{DB_NAME}", BROKER, lease_s=args.lease,
                 sweep_s=args.sweep, web_workers=3, web_threads=8,
                 extra_env={"LOCUS_MAX_ACTIVE_JOBS": str(max(1000, 2 * args.jobs))})


def stack_up(stack: Stack, agents: int) -> None:
    import redis

    reset_database(ADMIN_URL, DB_NAME)
    redis.Redis.from_url(BROKER).flushdb()
    stack.up()
    for _ in range(agents):
        stack.add_agent(grace_s=10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--idle-jobs", type=int, default=30)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--agents", type=int, default=2)
    parser.add_argument("--lease", type=int, default=30)
    parser.add_argument("--sweep", type=float, default=15.0)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="locus-bench-"))
    stack = make_stack(args, workdir)
    os.environ.update({k: v for k, v in stack.env.items() if k != "LOG_LEVEL"})
    os.environ["DJANGO_SETTINGS_MODULE"] = "portal.settings"
    import django

    django.setup()
    from django.contrib.auth import get_user_model

    from jobs.models import Attempt, File, Job
    from portal.accounts.models import ApiToken

    try:
        stack_up(stack, args.agents)
        user = get_user_model().objects.create_user("bench", "bench@example.org", "bench")
        _, token = ApiToken.issue(user, "bench")
        session = requests.Session()
        session.headers["Authorization"] = f"Token {token}"

        def submit(params: dict) -> str:
            response = session.post(f"{stack.url}/api/v1/jobs/", json={
                "application": "diagnostics", "entrypoint": "selftest", "params": params}, timeout=30)
            response.raise_for_status()
            return response.json()["id"]

        def wait_terminal(ids: list[str], timeout: float) -> None:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if not Job.objects.filter(pk__in=ids).exclude(status__in=Job.TERMINAL).exists():
                    return
                time.sleep(0.25)
            raise SystemExit(f"jobs still not finished after {timeout} s")

        def latencies(ids: list[str]) -> tuple[list[float], list[float]]:
            to_running, to_done = [], []
            for job in Job.objects.filter(pk__in=ids).prefetch_related("attempts"):
                first = min(job.attempts.all(), key=lambda a: a.number, default=None)
                if first:
                    to_running.append((first.started_at - job.created_at).total_seconds())
                if job.finished_at and job.status == Job.Status.SUCCEEDED:
                    to_done.append((job.finished_at - job.created_at).total_seconds())
            return to_running, to_done

        # Warm-up: one job per agent so every agent has imported what it needs.
        wait_terminal([submit({"matrix_size": 64}) for _ in range(args.agents)], 120)
        print(f"stack up in {workdir}; {args.agents} agents warm", flush=True)

        idle_ids = []
        for _ in range(args.idle_jobs):
            idle_ids.append(submit({"matrix_size": 64}))
            wait_terminal(idle_ids[-1:], 60)
        idle_running, idle_done = latencies(idle_ids)

        t0 = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            burst_ids = list(pool.map(lambda _: submit({"matrix_size": 64}), range(args.jobs)))
        admission_s = time.perf_counter() - t0
        wait_terminal(burst_ids, 60 + 10 * args.jobs)
        burst_done_s = time.perf_counter() - t0
        burst_running, burst_done = latencies(burst_ids)

        recoveries, kill_ids = [], []
        for i in range(args.kills):
            job_id = submit({"matrix_size": 64, "duration_s": 20})
            kill_ids.append(job_id)
            while not Attempt.objects.filter(job_id=job_id, status="running").exists():
                time.sleep(0.05)
            attempt = Attempt.objects.select_related("worker").get(job_id=job_id, status="running")
            victim = attempt.worker.name
            time.sleep(1.0)
            killed_at = time.time()
            stack.agents[victim].process.kill9()
            stack.remove_agent(stack.agents[victim])
            stack.add_agent(grace_s=10)  # the crashed machine comes back as a new worker; the job must not wait for it
            while not Attempt.objects.filter(job_id=job_id, number=2).exists():
                if time.time() - killed_at > 300:
                    break
                time.sleep(0.1)
            second = Attempt.objects.filter(job_id=job_id, number=2).first()
            if second:
                recoveries.append(second.started_at.timestamp() - killed_at)
            print(f"  kill {i + 1}/{args.kills}: {victim} → running again after "
                  f"{recoveries[-1] if second else float('nan'):.1f} s", flush=True)
        wait_terminal(kill_ids, 300)

        all_ids = idle_ids + burst_ids + kill_ids
        statuses = dict(Job.objects.filter(pk__in=all_ids).values_list("id", "status"))
        lost = sum(1 for s in statuses.values() if s != Job.Status.SUCCEEDED)
        duplicated = sum(1 for job_id in all_ids if File.objects.filter(job_id=job_id).count() > 1)
        multi_success = sum(1 for job_id in all_ids
                            if Attempt.objects.filter(job_id=job_id, status="succeeded").count() > 1)
        result = {
            "conditions": {"agents": args.agents, "lease_s": args.lease, "sweep_s": args.sweep,
                           "broker": "redis", "database": "postgresql", "job": "diagnostics selftest, 64² matmul",
                           "cpu_count": os.cpu_count()},
            "idle": {"submit_to_running_s": summary(idle_running), "submit_to_succeeded_s": summary(idle_done)},
            "burst": {"jobs": args.jobs, "admission_jobs_per_s": args.jobs / admission_s,
                      "throughput_jobs_per_s": args.jobs / burst_done_s,
                      "submit_to_running_s": summary(burst_running), "submit_to_succeeded_s": summary(burst_done)},
            "crash": {"kills": args.kills, "kill_to_running_again_s": summary(recoveries)},
            "lost_jobs": lost, "duplicated_outputs": duplicated, "jobs_succeeded_twice": multi_success,
            "baseline_opencloud": {"submit_to_running_s": "10-30 (30 s polling)", "dead_worker_noticed_s": "300-360"},
        }
    finally:
        stack.down()

    rows = [
        ("idle submit→running", result["idle"]["submit_to_running_s"]),
        ("idle submit→succeeded", result["idle"]["submit_to_succeeded_s"]),
        (f"burst({args.jobs}) submit→running", result["burst"]["submit_to_running_s"]),
        (f"burst({args.jobs}) submit→succeeded", result["burst"]["submit_to_succeeded_s"]),
        ("kill -9 → running again", result["crash"]["kill_to_running_again_s"]),
    ]
    print(f"\n{'measure':34} {'n':>4} {'p50 s':>8} {'p95 s':>8} {'max s':>8}")
    for name, s in rows:
        print(f"{name:34} {s['n']:>4} {s['p50']:>8.3f} {s['p95']:>8.3f} {s['max']:>8.3f}")
    print(f"\nadmission {result['burst']['admission_jobs_per_s']:.1f} jobs/s, "
          f"throughput {result['burst']['throughput_jobs_per_s']:.2f} jobs/s with {args.agents} agents")
    print(f"lost {lost}, duplicated outputs {duplicated}, succeeded twice {multi_success}")
    out = ROOT / "bench" / "results" / "platform.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out.relative_to(ROOT)}")
    return 0 if lost == 0 and duplicated == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
