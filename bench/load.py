"""Load benchmark: many concurrent API clients submitting and polling against gunicorn + PostgreSQL + Redis.

    python bench/load.py [--clients 100] [--duration 60] [--queued 1000] [--think 0.5]

Starts a real portal (gunicorn, production settings, throttling and quotas on, cache and broker on Redis db
12) on a fresh database `locus_load`, seeds --queued diagnostics jobs spread over one user per client (no
agents run, so every job stays queued), then runs --clients threads for --duration seconds. Each client owns
an API token and loops: submit a diagnostics selftest job, list its jobs (first page), fetch the detail of
one of its jobs, pausing --think seconds (± 50 %) between requests, as a polling script would.
Prints throughput, p50/p95/p99 latency of submit, list and detail, and the error count; writes
bench/results/load.json. Needs PostgreSQL and Redis (see .ci/services.sh).
"""

import sys
from pathlib import Path

# bench/platform.py shadows the standard library's `platform`: keep bench/ off the import path.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

import argparse  # noqa: E402
import http.client  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.stack import Stack, percentile, reset_database  # noqa: E402

DB_NAME = "locus_load"
ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS = "redis://127.0.0.1:6379/12"
OPS = ("submit", "list", "detail")


def make_portal(args: argparse.Namespace, workdir: Path) -> Stack:
    """gunicorn on production settings against the bench database (no agents, no portal Celery worker)."""
    return Stack(workdir, f"postgres://postgres@127.0.0.1:5432/{DB_NAME}", REDIS, web_workers=args.workers,
                 web_threads=args.threads, extra_env={
                     "CACHE_URL": REDIS,
                     # The bench measures the platform, not the per-user quota: clients pile up queued jobs.
                     "LOCUS_MAX_ACTIVE_JOBS": str(10**6)})


def portal_up(portal: Stack) -> None:
    import redis

    reset_database(ADMIN_URL, DB_NAME)
    redis.Redis.from_url(REDIS).flushdb()
    portal.migrate()
    portal.start_portal()


def seed(clients: int, queued: int) -> list[tuple[str, list[str]]]:
    """One user + API token per client; `queued` jobs spread over them. Returns (token, job ids) per client."""
    from django.contrib.auth import get_user_model

    from jobs import services
    from portal.accounts.models import ApiToken

    out = []
    for i in range(clients):
        user = get_user_model().objects.create_user(f"load{i:03d}", f"load{i:03d}@example.org", None)
        _, token = ApiToken.issue(user, "load")
        out.append((token, []))
    for n in range(queued):
        token, ids = out[n % clients]
        user = get_user_model().objects.get(username=f"load{n % clients:03d}")
        job, _ = services.submit(user, application="diagnostics", entrypoint="selftest",
                                 params={"matrix_size": 64})
        ids.append(str(job.pk))
    return out


def cpu_by_role() -> dict[str, float]:
    """CPU seconds (user + system) so far of every process on the machine, summed by role: the portal's
    gunicorn processes, this load generator, PostgreSQL, Redis and everything else."""
    tick = os.sysconf("SC_CLK_TCK")
    totals = dict.fromkeys(("gunicorn", "clients", "postgresql", "redis", "other"), 0.0)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # exited meanwhile
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        seconds = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
        if int(entry.name) == os.getpid():
            role = "clients"
        elif "gunicorn" in cmdline and "portal.wsgi" in cmdline:
            role = "gunicorn"
        elif cmdline.startswith(("postgres", "/usr/lib/postgresql")):
            role = "postgresql"
        elif cmdline.startswith("redis-server") or "/redis-server" in cmdline:
            role = "redis"
        else:
            role = "other"
        totals[role] += seconds
    return totals


class Http:
    """One client's keep-alive connection, on the standard library's http.client: the load generator shares
    the 2 cores with the portal, and `requests` spends several times more CPU per call. A connection error is
    counted, and the next request opens a new connection (no silent retry)."""

    def __init__(self, url: str, token: str):
        host, port = url.removeprefix("http://").split(":")
        self.host, self.port = host, int(port)
        self.headers = {"Authorization": f"Token {token}", "Accept": "application/json",
                        "Content-Type": "application/json"}
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
        try:
            self.conn.request(method, path, body=json.dumps(body) if body is not None else None,
                              headers=self.headers)
            response = self.conn.getresponse()
            return response.status, response.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()  # reconnects on the next request
            raise


def client_loop(url: str, token: str, job_ids: list[str], stop_at: float, think: float, seed_: int,
                samples: dict[str, list[float]], errors: dict[str, int], error_kinds: dict[str, int],
                lock: threading.Lock) -> None:
    rng = random.Random(seed_)
    client = Http(url, token)
    ids = list(job_ids)
    local: dict[str, list[float]] = {op: [] for op in OPS}
    local_errors = dict.fromkeys(OPS, 0)
    kinds: dict[str, int] = {}
    time.sleep(rng.uniform(0, think or 0.05))  # clients do not all start on the same tick
    step = rng.randrange(3)
    while time.monotonic() < stop_at:
        op = OPS[step % 3]
        step += 1
        t0 = time.perf_counter()
        try:
            if op == "submit":
                status, body = client.call("POST", "/api/v1/jobs/", {
                    "application": "diagnostics", "entrypoint": "selftest", "params": {"matrix_size": 64}})
            elif op == "list":
                status, body = client.call("GET", "/api/v1/jobs/")
            else:
                status, body = client.call("GET", f"/api/v1/jobs/{rng.choice(ids)}/")
            elapsed = time.perf_counter() - t0
            ok = status in (200, 201)
            if ok and op == "submit":
                ids.append(json.loads(body)["id"])
            if not ok:
                kinds[f"{op} {status}"] = kinds.get(f"{op} {status}", 0) + 1
        except (OSError, http.client.HTTPException) as exc:
            elapsed, ok = time.perf_counter() - t0, False
            kinds[f"{op} {type(exc).__name__}"] = kinds.get(f"{op} {type(exc).__name__}", 0) + 1
        if ok:
            local[op].append(elapsed)
        else:
            local_errors[op] += 1
        if think:
            time.sleep(think * rng.uniform(0.5, 1.5))
    with lock:
        for op in OPS:
            samples[op] += local[op]
            errors[op] += local_errors[op]
        for kind, n in kinds.items():
            error_kinds[kind] = error_kinds.get(kind, 0) + n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument("--queued", type=int, default=1000, help="queued jobs seeded before the load")
    parser.add_argument("--think", type=float, default=0.5, help="seconds between a client's requests (±50%%)")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=8, help="threads per gunicorn worker")
    parser.add_argument("--out", default="bench/results/load.json", help="where to write the JSON result")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="locus-load-"))
    portal = make_portal(args, workdir)
    os.environ.update({k: v for k, v in portal.env.items() if k != "LOG_LEVEL"})
    os.environ["DJANGO_SETTINGS_MODULE"] = "portal.settings"
    try:
        portal_up(portal)
        import django

        django.setup()
        t0 = time.perf_counter()
        cast = seed(args.clients, args.queued)
        print(f"portal up at {portal.url}; {args.clients} users, {args.queued} queued jobs seeded in "
              f"{time.perf_counter() - t0:.1f} s; load for {args.duration:.0f} s ...", flush=True)
        samples: dict[str, list[float]] = {op: [] for op in OPS}
        errors = dict.fromkeys(OPS, 0)
        error_kinds: dict[str, int] = {}
        lock = threading.Lock()
        cpu_before = cpu_by_role()
        start = time.monotonic()
        stop_at = start + args.duration
        with ThreadPoolExecutor(args.clients) as pool:
            for i, (token, ids) in enumerate(cast):
                pool.submit(client_loop, portal.url, token, ids, stop_at, args.think, i, samples, errors,
                            error_kinds, lock)
        wall = time.monotonic() - start
        cpu_after = cpu_by_role()
        from jobs.models import Job

        queued_after = Job.objects.filter(status=Job.Status.QUEUED).count()
    finally:
        portal.down()

    rows = {}
    for op in OPS:
        values = samples[op]
        rows[op] = {"n": len(values), "errors": errors[op], "per_s": len(values) / wall,
                    "p50_ms": percentile(values, 50) * 1000, "p95_ms": percentile(values, 95) * 1000,
                    "p99_ms": percentile(values, 99) * 1000,
                    "max_ms": (max(values) if values else float("nan")) * 1000}
    total = sum(r["n"] for r in rows.values())
    total_errors = sum(errors.values())
    print(f"\n{'op':8} {'n':>7} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8} {'errors':>7}")
    for op, r in rows.items():
        print(f"{op:8} {r['n']:>7} {r['per_s']:>8.1f} {r['p50_ms']:>8.1f} {r['p95_ms']:>8.1f} {r['p99_ms']:>8.1f} "
              f"{r['max_ms']:>8.1f} {r['errors']:>7}")
    print(f"{'all':8} {total:>7} {total / wall:>8.1f} {'':>8} {'':>8} {'':>8} {'':>8} {total_errors:>7}")
    if error_kinds:
        print("errors: " + ", ".join(f"{k} × {n}" for k, n in sorted(error_kinds.items())))
    cpu = {role: {"core_pct": 100 * (cpu_after[role] - cpu_before[role]) / wall,
                  "ms_per_request": 1000 * (cpu_after[role] - cpu_before[role]) / max(total, 1)}
           for role in cpu_before}
    print("CPU during the load (% of one core; ms per request): " + ", ".join(
        f"{role} {c['core_pct']:.0f} % ({c['ms_per_request']:.1f})" for role, c in cpu.items()))
    goal = total_errors == 0 and all(rows[op]["p95_ms"] < 200 for op in ("list", "detail"))
    print(f"queued jobs at the end: {queued_after}; goal (0 errors, p95 < 200 ms for list/detail): "
          f"{'met' if goal else 'NOT met'}")
    result = {"args": vars(args), "wall_s": wall, "ops": rows, "errors": total_errors, "error_kinds": error_kinds,
              "queued_after": queued_after, "cpu_count": os.cpu_count(), "cpu": cpu, "goal_met": goal}
    out = ROOT / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return 0 if goal else 1


if __name__ == "__main__":
    sys.exit(main())
