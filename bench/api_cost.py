"""Per-request cost of the user API's hot paths, in-process: CPU ms and SQL queries of submit, list, detail.

    python bench/api_cost.py [--requests 200] [--jobs 1000] [--label NAME]

bench/load.py measures latency through gunicorn; on a small machine its p95 is CPU queueing, so this bench
measures what each request costs. It runs the portal in this process on production settings (as
bench/stack.py starts gunicorn: `LOCUS_MODE=production`, PostgreSQL, Redis cache and broker, throttling on)
against a fresh database `locus_api_cost`, seeds --jobs queued diagnostics jobs over 20 users (the measured
user owns 50 of them, one full list page), then sends --requests of each operation through Django's test
client with an API token, interleaved (submit, list, detail, ...) so that noise from other load falls on all
three alike:

- submit: `POST /api/v1/jobs/` (diagnostics selftest; its Celery message goes to Redis db 13),
- list:   `GET /api/v1/jobs/` (first cursor page, 50 jobs),
- detail: `GET /api/v1/jobs/<id>/` of one of the user's jobs.

Each request's CPU time is `time.process_time()` around the call (the whole middleware + DRF stack and the
client's own small overhead, which is the same before and after a change); queries are counted in a separate
pass with CaptureQueriesContext (which slows each request a little, so it is kept out of the timing).
Afterwards it checks that the answers are unchanged: list items and job details (a queued job and one run to
the end, with an attempt, events and an output) byte for byte what the DRF serializers render, and a
submission's answer byte for byte what a GET of the new job gives. Prints median / p90 CPU ms, median wall ms
and queries per operation; writes bench/results/api_cost.json, keeping earlier runs under their --label
(e.g. `baseline`, `optimised`) for comparison.
"""

import sys
from pathlib import Path

# bench/platform.py shadows the standard library's `platform`: keep bench/ off the import path.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from datetime import UTC, datetime  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.stack import percentile, reset_database  # noqa: E402

DB_NAME = "locus_api_cost"
ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS = "redis://127.0.0.1:6379/13"
OPS = ("submit", "list", "detail")
SUBMIT = {"application": "diagnostics", "entrypoint": "selftest", "params": {"matrix_size": 64}}


def production_env(workdir: Path) -> dict[str, str]:
    """What bench/stack.py gives gunicorn, plus the load bench's cache and quota (bench/load.py)."""
    return {
        "LOCUS_MODE": "production", "SECRET_KEY": "api-cost-" + "x" * 60,
        "ALLOWED_HOSTS": "127.0.0.1,localhost,testserver",
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{DB_NAME}", "CELERY_BROKER_URL": REDIS,
        "CACHE_URL": REDIS, "EMAIL_URL": "consolemail://", "LOCUS_PUBLIC_URL": "http://127.0.0.1:8000",
        "LOCUS_VAR_DIR": str(workdir / "var"), "SECURE_SSL_REDIRECT": "false", "LOG_LEVEL": "WARNING",
        "LOCUS_MAX_ACTIVE_JOBS": str(10**6), "DJANGO_SETTINGS_MODULE": "portal.settings",
    }


def drop_database() -> None:
    import psycopg

    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')


def seed(jobs: int, users: int = 20) -> tuple[str, list[str]]:
    """`users` users with `jobs` queued jobs between them; returns the measured user's token and job ids."""
    from django.contrib.auth import get_user_model

    from jobs import services
    from portal.accounts.models import ApiToken

    cast = [get_user_model().objects.create_user(f"cost{i:02d}", f"cost{i:02d}@example.org", None)
            for i in range(users)]
    _, token = ApiToken.issue(cast[0], "api-cost")
    mine = []
    for n in range(jobs):
        owner = cast[0] if n < 50 else cast[1 + n % (users - 1)]
        job, _ = services.submit(owner, application="diagnostics", entrypoint="selftest",
                                 params={"matrix_size": 64})
        if owner is cast[0]:
            mine.append(str(job.pk))
    return token, mine


def finished_job(owner_name: str) -> str:
    """A job of the measured user run to the end by a worker: an attempt, events and an output file, so that the
    JSON check covers every part of the detail (the timed requests read queued jobs, as bench/load.py does)."""
    from django.contrib.auth import get_user_model

    from jobs import services, states
    from jobs.models import EnrollmentToken, File

    owner = get_user_model().objects.get(username=owner_name)
    _, raw = EnrollmentToken.issue(None)
    worker, _ = services.enroll(raw, "bench-worker", {"cpu_count": 4, "memory_gb": 16, "gpus": []},
                                selftest_job=False)
    job, _ = services.submit(owner, application="diagnostics", entrypoint="selftest", params={"repeats": 3})
    attempt = services.claim(job.pk, worker)
    services.append_log(attempt, "multiplying\n")

    def register(job, attempt):
        File.objects.create(owner=owner, job=job, attempt=attempt, key=f"bench/{job.pk}/report.json",
                            name="report.json", size=2, sha256="0" * 64, content_type="application/json")

    states.complete(attempt.pk, attempt.fencing_token, exit_code=0, failure_class=None, cpu_seconds=1.5,
                    register_outputs=register)
    return str(job.pk)


def check_same_json(client, ids: list[str], finished: str) -> dict[str, int]:
    """The answers are the JSON that the DRF serializers give (byte for byte), and a submission's answer is what
    a GET of the new job gives. Raises AssertionError naming the first difference."""
    from rest_framework.renderers import JSONRenderer

    from jobs.api.serializers import JobListSerializer, JobSerializer
    from jobs.models import Dataset, File, Job

    render = JSONRenderer().render
    checked = {"submit": 0, "list": 0, "detail": 0}
    owner = Job.objects.get(pk=finished).owner
    dataset = Dataset.objects.create(owner=owner, name="bench")
    files = [File.objects.create(owner=owner, dataset=dataset, key=f"bench/{dataset.pk}/{name}", name=name,
                                 size=3, sha256=f"{i}" * 64) for i, name in enumerate(["a.tif", "b.h5"])]
    with_inputs = {"application": "diagnostics", "entrypoint": "checksum", "params": {"copy": True},
                   "inputs": {"files": [str(f.pk) for f in files]}}
    for body in (SUBMIT, SUBMIT, with_inputs):
        posted = client.post("/api/v1/jobs/", body, content_type="application/json")
        again = client.get(f"/api/v1/jobs/{posted.json()['id']}/")
        assert posted.content == again.content, f"submit answer differs from GET:\n{posted.content}\n{again.content}"
        checked["submit"] += 1
    listed = client.get("/api/v1/jobs/").json()
    for item in listed["results"]:
        expected = render(JobListSerializer(Job.objects.get(pk=item["id"])).data)
        assert render(item) == expected, f"list item differs:\n{render(item)}\n{expected}"
        checked["list"] += 1
    for job_id in [finished, *ids[:10]]:
        job = Job.objects.prefetch_related("attempts__worker", "events", "outputs").get(pk=job_id)
        answer = client.get(f"/api/v1/jobs/{job_id}/").content
        assert answer == render(JobSerializer(job).data), f"detail differs:\n{answer}\n{render(JobSerializer(job).data)}"
        checked["detail"] += 1
    return checked


def request(client, op: str, ids: list[str], rng: random.Random):
    if op == "submit":
        return client.post("/api/v1/jobs/", SUBMIT, content_type="application/json")
    if op == "list":
        return client.get("/api/v1/jobs/")
    return client.get(f"/api/v1/jobs/{rng.choice(ids)}/")


def measure(client, ids: list[str], n: int, warmup: int) -> dict[str, dict]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    rng = random.Random(0)
    cpu: dict[str, list[float]] = {op: [] for op in OPS}
    wall: dict[str, list[float]] = {op: [] for op in OPS}
    for i in range(warmup + n):
        for op in OPS:
            w0, c0 = time.perf_counter(), time.process_time()
            response = request(client, op, ids, rng)
            c1, w1 = time.process_time(), time.perf_counter()
            if response.status_code not in (200, 201):
                raise RuntimeError(f"{op}: {response.status_code} {response.content[:300]!r}")
            if i >= warmup:
                cpu[op].append((c1 - c0) * 1000)
                wall[op].append((w1 - w0) * 1000)
    queries: dict[str, list[int]] = {op: [] for op in OPS}
    sql: dict[str, list[str]] = {}
    for _ in range(5):
        for op in OPS:
            with CaptureQueriesContext(connection) as ctx:
                request(client, op, ids, rng)
            queries[op].append(len(ctx.captured_queries))
            sql[op] = [q["sql"][:300] for q in ctx.captured_queries]
    return {op: {"n": len(cpu[op]), "cpu_ms_median": statistics.median(cpu[op]),
                 "cpu_ms_p90": percentile(cpu[op], 90), "wall_ms_median": statistics.median(wall[op]),
                 "queries": int(statistics.median(queries[op])), "queries_seen": sorted(set(queries[op])),
                 "sql": sql[op]} for op in OPS}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200, help="measured requests per operation")
    parser.add_argument("--warmup", type=int, default=20, help="unmeasured requests per operation first")
    parser.add_argument("--jobs", type=int, default=1000, help="queued jobs seeded before measuring")
    parser.add_argument("--label", default="current", help="name of this run in the JSON (e.g. baseline)")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="locus-api-cost-"))
    (workdir / "var" / "static").mkdir(parents=True)  # whitenoise warns about a missing STATIC_ROOT
    os.environ.update(production_env(workdir))
    import redis

    reset_database(ADMIN_URL, DB_NAME)
    broker = redis.Redis.from_url(REDIS)
    broker.flushdb()
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=os.environ.copy(),
                   check=True, timeout=600)
    import django

    django.setup()
    from django.test import Client

    try:
        t0 = time.perf_counter()
        token, ids = seed(args.jobs)
        print(f"{args.jobs} queued jobs seeded in {time.perf_counter() - t0:.1f} s; measuring "
              f"{args.requests} requests of each operation ...", flush=True)
        client = Client(HTTP_AUTHORIZATION=f"Token {token}", HTTP_ACCEPT="application/json")
        rows = measure(client, ids, args.requests, args.warmup)
        checked = check_same_json(client, ids, finished_job("cost00"))
        print("same JSON as the DRF serializers: " + ", ".join(f"{op} {n}" for op, n in checked.items()))
    finally:
        from django.db import connections

        connections.close_all()
        broker.flushdb()
        drop_database()

    print(f"\n{'op':8} {'n':>5} {'cpu ms p50':>11} {'cpu ms p90':>11} {'wall ms p50':>12} {'queries':>8}")
    for op, r in rows.items():
        print(f"{op:8} {r['n']:>5} {r['cpu_ms_median']:>11.2f} {r['cpu_ms_p90']:>11.2f} "
              f"{r['wall_ms_median']:>12.2f} {r['queries']:>8}")
    load = os.getloadavg()
    print(f"label {args.label}; load average {load[0]:.1f} on {os.cpu_count()} cores")

    out = ROOT / "bench" / "results" / "api_cost.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(out.read_text()) if out.exists() else {}
    runs = previous.get("runs", {})
    runs[args.label] = {"args": vars(args), "when": datetime.now(UTC).isoformat(timespec="seconds"),
                        "cpu_count": os.cpu_count(), "loadavg": load, "ops": rows, "same_json_checked": checked}
    out.write_text(json.dumps({"runs": runs}, indent=2))
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
