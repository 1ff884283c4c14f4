"""Chaos trials: break one part of a real deployment while jobs run, then check that nothing was lost,
duplicated or left stuck, and that the job's attempts and events tell what really happened.

Used by tests/reliability/ (a few trials of each) and bench/chaos.py (≥ 100). The deployment is `Chaos`:
a private PostgreSQL cluster and a private Redis (so they can be restarted), the portal, the portal's
Celery worker with beat, and worker agents that each reach the portal through their own cuttable proxy.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.stack import (
    Agent,
    PrivatePostgres,
    PrivateRedis,
    Stack,
    TcpProxy,
    reset_database,
    temp_workdir,
    wait_until,
)

TERMINAL = ("succeeded", "failed", "cancelled")
DB_NAME = "locus_chaos"


@dataclass
class Verdict:
    """What the database says about one job after a trial."""

    job_id: str
    status: str
    attempts: list[dict[str, Any]]
    stuck: bool = False
    lost: bool = False
    duplicated: bool = False
    problems: list[str] = field(default_factory=list)  # the story does not add up

    @property
    def ok(self) -> bool:
        return not (self.stuck or self.lost or self.duplicated or self.problems)


@dataclass
class TrialResult:
    name: str
    verdicts: list[Verdict]
    problems: list[str] = field(default_factory=list)  # trial-specific expectations that failed
    seconds: float = 0.0
    load: tuple[float, float] = (0.0, 0.0)  # 1-minute load average before and after: a starved box explains a lot

    @property
    def ok(self) -> bool:
        return not self.problems and all(v.ok for v in self.verdicts)

    def describe(self) -> str:
        lines = [f"{self.name}: {'ok' if self.ok else 'FAILED'} (load average {self.load[0]:.1f} → "
                 f"{self.load[1]:.1f} on {os.cpu_count()} cores)"]
        lines += [f"  trial: {p}" for p in self.problems]
        for v in self.verdicts:
            if not v.ok:
                flags = [k for k in ("stuck", "lost", "duplicated") if getattr(v, k)]
                story = "; ".join(f"{a['number']}:{a['status']}/{a['failure_class']}/{a['reason'][:60]}"
                                  for a in v.attempts)
                lines.append(f"  job {v.job_id} {v.status} {flags} {v.problems} attempts [{story}]")
        return "\n".join(lines)


class Chaos:
    """The deployment the trials break. `close()` stops everything and removes the private servers."""

    def __init__(self, workdir: Path | None = None, *, lease_s: int = 5, sweep_s: float = 1.0,
                 redispatch_s: float = 5.0, agents: int = 2, visibility_s: int = 4):
        self.workdir = workdir or temp_workdir("locus-chaos-")
        self.lease_s, self.base_agents, self.visibility_s = lease_s, agents, visibility_s
        self.pg = PrivatePostgres(self.workdir)
        self.redis = PrivateRedis(self.workdir)
        self.stack: Stack | None = None
        self.proxies: dict[str, TcpProxy] = {}
        self.pg.init()
        self.pg.start()
        reset_database(self.pg.admin_url, DB_NAME)
        self.redis.start()
        self.stack = Stack(self.workdir / "stack", self.pg.url(DB_NAME), self.redis.url, lease_s=lease_s,
                           sweep_s=sweep_s, redispatch_s=redispatch_s, web_workers=2, web_threads=8,
                           extra_env={"LOCUS_MAX_ACTIVE_JOBS": "100000", "DB_CONN_MAX_AGE": "60"})
        self.stack.up()
        self.session = self.stack.session(self.stack.create_user("chaos"))
        self.api = f"{self.stack.url}/api/v1"

    def close(self) -> None:
        if self.stack:
            self.stack.down()
        for proxy in self.proxies.values():
            proxy.close()
        self.redis.stop()
        self.pg.destroy()

    # -- agents -------------------------------------------------------------------------------------------
    def agents(self) -> list[Agent]:
        assert self.stack
        return [a for a in self.stack.agents.values() if a.alive()]

    def add_agent(self, *, scratch: Path | None = None, env: dict[str, str] | None = None,
                  wait: bool = True) -> Agent:
        """An agent whose every portal call goes through its own TcpProxy (so it alone can be cut off)."""
        assert self.stack
        proxy = TcpProxy(self.stack.port)
        agent_env = {"LOCUS_VISIBILITY_TIMEOUT_S": str(self.visibility_s), **(env or {})}
        agent = self.stack.add_agent(portal_url=proxy.url, scratch=scratch, env=agent_env, grace_s=2)
        self.proxies[agent.name] = proxy
        if wait:
            self.stack.wait_consuming(agent)
        return agent

    def ensure_agents(self, n: int | None = None) -> list[Agent]:
        n = self.base_agents if n is None else n
        while len(self.agents()) < n:
            self.add_agent()
        return self.agents()

    def stop_agent(self, agent: Agent) -> int:
        code = agent.process.stop(timeout=30)
        self.forget_agent(agent)
        return code

    def forget_agent(self, agent: Agent) -> None:
        """A stopped or killed agent leaves the deployment, with its proxy (threads and sockets)."""
        assert self.stack
        self.stack.remove_agent(agent)
        if proxy := self.proxies.pop(agent.name, None):
            proxy.close()

    def stop_all_agents(self) -> None:
        for agent in self.agents():
            self.stop_agent(agent)

    def agent_of(self, worker_id: str) -> Agent:
        assert self.stack
        return next(a for a in self.stack.agents.values() if a.worker_id == worker_id)

    # -- jobs ---------------------------------------------------------------------------------------------
    def submit(self, params: dict | None = None, *, entrypoint: str = "selftest", inputs: dict | None = None,
               application: str = "diagnostics") -> str:
        body = {"application": application, "entrypoint": entrypoint, "params": params or {},
                "inputs": inputs or {}, "notify": "never"}
        response = self.session.post(f"{self.api}/jobs/", json=body, timeout=60)
        if response.status_code != 201:
            raise RuntimeError(f"submit: {response.status_code} {response.text[:500]}")
        return response.json()["id"]

    def upload(self, name: str, data: bytes) -> str:
        dataset = self.session.post(f"{self.api}/datasets/", json={"name": "chaos"}, timeout=30).json()
        response = self.session.post(f"{self.api}/datasets/{dataset['id']}/files/", files={"file": (name, data)},
                                     timeout=60)
        if response.status_code != 201:
            raise RuntimeError(f"upload: {response.status_code} {response.text[:500]}")
        return response.json()["id"]

    def sql(self, query: str, *args: Any) -> list[tuple]:
        import psycopg

        for attempt in range(30):  # the cluster may be restarting under us
            try:
                with psycopg.connect(self.pg.url(DB_NAME).replace("postgres://", "postgresql://"),
                                     connect_timeout=5) as conn:
                    return conn.execute(query, args).fetchall()
            except psycopg.OperationalError:
                if attempt == 29:
                    raise
                time.sleep(1)
        return []

    def wait_running(self, job_id: str, timeout: float = 60, number: int | None = None) -> tuple[str, str]:
        """(attempt id, worker id) of the job's running attempt, once the job's process is really going."""
        query = "SELECT id, worker_id, number FROM jobs_attempt WHERE job_id = %s AND status = 'running'"
        if number is not None:
            query += f" AND number = {int(number)}"
        row = wait_until(lambda: (r := self.sql(query, job_id)) and r[0], timeout, f"job {job_id} to run")
        return str(row[0]), str(row[1])

    def wait_started(self, job_id: str, timeout: float = 60) -> tuple[str, str]:
        """Like wait_running, and the job's subprocess has reported progress (it is mid-job, not mid-download)."""
        attempt, worker = self.wait_running(job_id, timeout)
        wait_until(lambda: self.sql("SELECT 1 FROM jobs_job WHERE id = %s AND progress > 0 AND status = "
                                    "'running'", job_id) or self._attempt_over(attempt), timeout,
                   f"job {job_id} to report progress")
        return attempt, worker

    def _attempt_over(self, attempt_id: str) -> bool:
        return bool(self.sql("SELECT 1 FROM jobs_attempt WHERE id = %s AND status <> 'running'", attempt_id))

    def wait_terminal(self, ids: list[str], timeout: float) -> bool:
        try:
            wait_until(lambda: not self.sql("SELECT 1 FROM jobs_job WHERE id = ANY(%s::uuid[]) AND status NOT IN "
                                            "('succeeded', 'failed', 'cancelled')", ids),
                       timeout, "jobs to finish", interval=0.3)
        except TimeoutError:
            return False
        return True

    def verdict(self, job_id: str, *, expect: str = "succeeded", outputs: int = 1) -> Verdict:
        """Check every invariant of one job (see the module docstring) from the database and the storage."""
        job = self.sql("SELECT status, attempt_count, max_attempts, owner_id, failure_class FROM jobs_job "
                       "WHERE id = %s", job_id)[0]
        status, attempt_count, max_attempts, owner_id, _ = job
        attempts = [dict(id=str(r[0]), number=r[1], status=r[2], failure_class=r[3], reason=r[4] or "",
                         worker=str(r[5]))
                    for r in self.sql("SELECT id, number, status, failure_class, reason, worker_id FROM jobs_attempt "
                                      "WHERE job_id = %s ORDER BY number", job_id)]
        events = [(k, str(a) if a else None) for k, a in
                  self.sql("SELECT kind, attempt_id FROM jobs_jobevent WHERE job_id = %s ORDER BY created_at, id",
                           job_id)]
        files = self.sql("SELECT key, attempt_id, size, sha256 FROM jobs_file WHERE job_id = %s", job_id)
        v = Verdict(job_id, status, attempts)
        v.stuck = status not in TERMINAL
        v.lost = not v.stuck and status != expect
        succeeded = [a for a in attempts if a["status"] == "succeeded"]
        winner = succeeded[0]["id"] if len(succeeded) == 1 else None
        v.duplicated = len(succeeded) > 1 or (status == "succeeded" and len(files) != outputs) or any(
            str(f[1]) != winner for f in files)
        # Bytes in storage: only the winning attempt's outputs exist, each with the checksum it reported.
        job_dir = self.stack.media_root / "users" / str(owner_id) / "jobs" / job_id if self.stack else None
        stored = sorted(p for p in job_dir.rglob("*") if p.is_file()) if job_dir and job_dir.exists() else []
        registered = {self.stack.media_root / f[0]: f for f in files} if self.stack else {}
        for path in stored:
            if path not in registered:
                v.duplicated = True
                v.problems.append(f"unregistered object in storage: {path.relative_to(job_dir)}")
        for path, (_, _, size, sha) in registered.items():
            if not path.exists():
                v.problems.append(f"registered output missing from storage: {path.name}")
            elif path.stat().st_size != size or hashlib.sha256(path.read_bytes()).hexdigest() != sha:
                v.problems.append(f"output {path.name} does not match its registered checksum")
        # The story: attempts 1..n, every claim an event, one terminal event, each earlier attempt explained.
        if [a["number"] for a in attempts] != list(range(1, attempt_count + 1)):
            v.problems.append(f"attempt numbers {[a['number'] for a in attempts]} vs attempt_count {attempt_count}")
        kinds = [k for k, _ in events]
        if kinds.count("claimed") != len(attempts):
            v.problems.append(f"{kinds.count('claimed')} claimed events for {len(attempts)} attempts")
        terminal_events = [k for k in kinds if k in TERMINAL]
        if not v.stuck and terminal_events != [status]:
            v.problems.append(f"terminal events {terminal_events} for a {status} job")
        if not v.stuck and any(a["status"] == "running" for a in attempts):
            v.problems.append("an attempt still running on a finished job")
        explain = {"lost": "lease_lost", "failed": "attempt_failed", "released": "released"}
        for a in attempts:
            need = explain.get(a["status"])
            if need and (need, a["id"]) not in events:
                v.problems.append(f"attempt {a['number']} is {a['status']} without a {need} event")
        for a in attempts[:-1]:
            if a["status"] not in ("lost", "failed", "released") or ("requeued", a["id"]) not in events:
                v.problems.append(f"attempt {a['number']} ({a['status']}) was followed by another without a requeue")
        if attempts and status == "succeeded" and attempts[-1]["status"] != "succeeded":
            v.problems.append(f"succeeded job whose last attempt is {attempts[-1]['status']}")
        used = sum(1 for a in attempts if a["status"] != "released")
        if used > max_attempts:
            v.problems.append(f"{used} attempts used of max_attempts {max_attempts}")
        return v

    def settle(self, ids: list[str], timeout: float = 120, **expect: Any) -> list[Verdict]:
        self.wait_terminal(ids, timeout)
        return [self.verdict(i, **expect) for i in ids]


# -- the trials ----------------------------------------------------------------------------------------------
# Each takes the deployment, breaks one thing, and returns its verdicts plus trial-specific problems.
# Jobs are diagnostics selftests kept busy for a few seconds (`duration_s`), so the fault lands mid-job.
BUSY = {"matrix_size": 32, "repeats": 1}


def trial_kill9(ch: Chaos) -> TrialResult:
    """kill -9 the agent (its whole session, the job's process too) mid-job: the lease sweeper requeues it."""
    ch.ensure_agents()
    job = ch.submit({**BUSY, "duration_s": 6})
    attempt, worker = ch.wait_started(job)
    killed = ch.agent_of(worker)
    killed.process.kill9()
    ch.forget_agent(killed)
    ch.ensure_agents()
    (v,) = ch.settle([job], timeout=90)
    problems = []
    first = v.attempts[0] if v.attempts else {}
    if first.get("status") != "lost":
        problems.append(f"the killed agent's attempt is {first.get('status')}, not lost")
    return TrialResult("kill -9 agent", [v], problems)


def trial_sigterm(ch: Chaos) -> TrialResult:
    """SIGTERM the agent mid-job: it stops the job, hands it back (attempt `released`, not counted) and exits."""
    ch.ensure_agents()
    job = ch.submit({**BUSY, "duration_s": 8})
    attempt, worker = ch.wait_started(job)
    agent = ch.agent_of(worker)
    code = ch.stop_agent(agent)
    ch.ensure_agents()
    (v,) = ch.settle([job], timeout=90)
    problems = []
    if code != 0:
        problems.append(f"the agent exited with {code} after SIGTERM")
    first = next((a for a in v.attempts if a["id"] == attempt), {})
    if first.get("status") != "released":
        problems.append(f"the shut-down agent's attempt is {first.get('status')} ({first.get('reason')}), "
                        "not released")
    if "Traceback" in agent.output():
        problems.append("traceback in the agent's log")
    return TrialResult("SIGTERM agent", [v], problems)


def trial_sigterm_drain(ch: Chaos) -> TrialResult:
    """SIGTERM an agent started with a drain window longer than its job: it takes no new work, lets the job
    finish, uploads and completes it, then exits — one attempt, on that agent."""
    ch.stop_all_agents()  # the draining agent must be the one that runs the job
    agent = ch.add_agent(env={"LOCUS_DRAIN_S": "60"})
    job = ch.submit({**BUSY, "duration_s": 4})
    attempt, worker = ch.wait_started(job)
    code = ch.stop_agent(agent)
    ch.ensure_agents()
    (v,) = ch.settle([job], timeout=90)
    problems = []
    if code != 0:
        problems.append(f"the draining agent exited with {code}")
    if [(a["id"], a["status"]) for a in v.attempts] != [(attempt, "succeeded")] or worker != agent.worker_id:
        problems.append(f"attempts {[(a['number'], a['status']) for a in v.attempts]}: the job did not finish "
                        "on the draining agent")
    return TrialResult("SIGTERM agent with drain", [v], problems)


def trial_redis_restart(ch: Chaos) -> TrialResult:
    """Restart the broker mid-job (no persistence: every queued message is lost); jobs still all finish."""
    ch.ensure_agents()
    running = ch.submit({**BUSY, "duration_s": 5})
    ch.wait_started(running)
    queued = [ch.submit({**BUSY, "duration_s": 1}) for _ in range(3)]
    ch.redis.restart(down_s=1.0)
    during = ch.submit({**BUSY, "duration_s": 1})  # sent to a fresh broker
    return TrialResult("restart Redis", ch.settle([running, *queued, during], timeout=150))


def trial_postgres_restart(ch: Chaos) -> TrialResult:
    """Restart PostgreSQL while jobs run: agents retry through the outage; every job finishes once."""
    ch.ensure_agents()
    ids = [ch.submit({**BUSY, "duration_s": 4}) for _ in range(3)]
    ch.wait_started(ids[0])
    ch.pg.restart(down_s=1.0)
    ch.stack.wait_healthy() if ch.stack else None
    return TrialResult("restart PostgreSQL", ch.settle(ids, timeout=150))


def trial_partition(ch: Chaos) -> TrialResult:
    """Cut one agent off the portal for longer than the lease: it must stop its job and upload nothing;
    the job runs again elsewhere and only the new attempt's outputs exist."""
    ch.ensure_agents()
    job = ch.submit({**BUSY, "duration_s": 3 * ch.lease_s})
    attempt, worker = ch.wait_started(job)
    agent = ch.agent_of(worker)
    proxy = ch.proxies[agent.name]
    proxy.cut()
    problems = []
    try:
        wait_until(lambda: "stopping the job (conflict)" in agent.output(), 4 * ch.lease_s,
                   "the cut-off agent to stop its job")
        wait_until(lambda: f"attempt {attempt}: ended without complete" in agent.output(), 30,
                   "the cut-off agent to give the attempt up")
        wait_until(lambda: ch.sql("SELECT 1 FROM jobs_attempt WHERE id = %s AND status = 'lost'", attempt),
                   4 * ch.lease_s, "the portal to declare the attempt lost")
    except TimeoutError as exc:
        problems.append(str(exc))
    finally:
        # The network comes back (while the new attempt may run): the old attempt must stay quiet. The
        # cut-off agent may hold the job's new message meanwhile (its claim cannot get through); it claims
        # once healed, or hands the message back.
        proxy.heal()
    (v,) = ch.settle([job], timeout=90)
    first = next((a for a in v.attempts if a["id"] == attempt), {})
    if first.get("status") != "lost":
        problems.append(f"the cut-off attempt is {first.get('status')}, not lost")
    if f"attempt {attempt}: uploaded" in agent.output():
        problems.append("the cut-off agent uploaded outputs of its stale attempt")
    return TrialResult("portal unreachable > lease", [v], problems)


def trial_disk_full(ch: Chaos) -> TrialResult:
    """The agent's scratch disk fills up mid-job: an `infrastructure` failure ("disk full"), retried on a
    worker with room, not an `algorithm` failure charged to the job."""
    if os.geteuid() != 0:
        return TrialResult("scratch disk full", [], ["needs root to mount a small tmpfs"])
    mount = ch.workdir / f"tmpfs-{time.monotonic_ns()}"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], check=True)
    problems: list[str] = []
    try:
        ch.stop_all_agents()
        data = os.urandom(2 * 1024 * 1024)
        file_id = ch.upload("big.bin", data)
        small = ch.add_agent(scratch=mount)
        job = ch.submit({"copy": True}, entrypoint="checksum", inputs={"files": [file_id]})
        wait_until(lambda: ch.sql("SELECT 1 FROM jobs_attempt WHERE job_id = %s AND number = 1 AND status <> "
                                  "'running'", job), 60, "the first attempt to end")
        ch.stop_agent(small)  # a retry it may have claimed meanwhile is handed back
        ch.ensure_agents()
        (v,) = ch.settle([job], timeout=90, outputs=2)
        first = v.attempts[0]
        if first["status"] != "failed" or first["failure_class"] != "infrastructure" or \
                "disk full" not in first["reason"]:
            problems.append(f"first attempt {first['status']}/{first['failure_class']}: {first['reason'][:200]}")
        if any(mount.iterdir()):
            problems.append(f"scratch not cleaned: {[p.name for p in mount.iterdir()]}")
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
    return TrialResult("scratch disk full", [v] if "v" in locals() else [], problems)


def trial_duplicate_delivery(ch: Chaos) -> TrialResult:
    """The same message delivered to two agents: one claims, the other gets 409 and drops it."""
    agents = ch.ensure_agents()
    job = ch.submit({**BUSY, "duration_s": 2})
    send_duplicates(ch.redis.url, job, "cpu", copies=2)
    (v,) = ch.settle([job], timeout=90)
    problems = []
    if len(v.attempts) != 1:
        problems.append(f"{len(v.attempts)} attempts for one job delivered three times")
    try:
        wait_until(lambda: sum(f"job {job}: not claimable" in a.output() for a in agents) >= 1, 30,
                   "a duplicate to be dropped")
    except TimeoutError as exc:
        problems.append(str(exc))
    return TrialResult("duplicate delivery", [v], problems)


def trial_visibility_timeout(ch: Chaos) -> TrialResult:
    """A job that outlives the broker's visibility timeout: Redis hands its message to another agent, whose
    claim gets 409; the job runs once."""
    agents = ch.ensure_agents()
    job = ch.submit({**BUSY, "duration_s": 3 * ch.visibility_s})
    ch.wait_started(job)
    (v,) = ch.settle([job], timeout=120)
    problems = []
    if len(v.attempts) != 1:
        problems.append(f"{len(v.attempts)} attempts for a job redelivered after the visibility timeout")
    try:
        wait_until(lambda: any(f"job {job}: not claimable" in a.output() for a in agents), 30,
                   "the redelivered message to be dropped")
    except TimeoutError as exc:
        problems.append(str(exc))
    return TrialResult("visibility timeout", [v], problems)


def send_duplicates(broker_url: str, job_id: str, queue: str, copies: int) -> None:
    """Publish `locus.run_job(job_id)` again, as a broker redelivery or a double send would."""
    from celery import Celery
    from kombu import Queue

    app = Celery("chaos-sender", broker=broker_url, set_as_current=False, fixups=[])
    app.conf.update(task_serializer="json", accept_content=["json"])
    # The URL is passed explicitly: Celery would otherwise prefer $CELERY_BROKER_URL (a test's settings).
    with app.connection_for_write(broker_url) as conn:
        for _ in range(copies):
            app.send_task("locus.run_job", args=[job_id], queue=Queue(queue, routing_key=queue),
                          routing_key=queue, connection=conn)


TRIALS: dict[str, Callable[[Chaos], TrialResult]] = {
    "kill9": trial_kill9,
    "sigterm": trial_sigterm,
    "sigterm_drain": trial_sigterm_drain,
    "redis_restart": trial_redis_restart,
    "postgres_restart": trial_postgres_restart,
    "partition": trial_partition,
    "disk_full": trial_disk_full,
    "duplicate_delivery": trial_duplicate_delivery,
    "visibility_timeout": trial_visibility_timeout,
}


def run_trial(ch: Chaos, name: str) -> TrialResult:
    t0, load0 = time.monotonic(), os.getloadavg()[0]
    try:
        result = TRIALS[name](ch)
    except Exception as exc:  # noqa: BLE001 - a trial that could not finish is a failed trial, not a crash
        result = TrialResult(name, [], [f"{type(exc).__name__}: {exc}"])
    result.seconds = time.monotonic() - t0
    result.load = (load0, os.getloadavg()[0])
    return result

