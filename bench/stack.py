"""A real Locus deployment on loopback, for benchmarks and reliability tests: portal (gunicorn), the
portal-side Celery worker with beat, worker agents, and the servers they need.

Shared by bench/platform.py, bench/load.py, bench/chaos.py and tests/reliability/. Every process runs in its
own session, so a kill reaches its children too. `PrivateRedis` and `PrivatePostgres` are throw-away servers
on free ports: chaos trials restart *those*, never the machine's shared ones.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
ENV_PREFIXES = ("LOCUS_", "DATABASE_", "CELERY_", "CACHE_", "DJANGO_", "EMAIL_", "AWS_", "S3_", "MEDIA_")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = (len(values) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50": percentile(values, 50), "p95": percentile(values, 95),
            "max": max(values) if values else float("nan"),
            "mean": statistics.fmean(values) if values else float("nan")}


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.2):
    """Poll until `predicate()` is truthy; its value, or TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def wait_for_port(port: int, timeout: float = 30) -> None:
    def is_open() -> bool:
        with socket.socket() as sock:
            sock.settimeout(0.5)
            return sock.connect_ex(("127.0.0.1", port)) == 0

    wait_until(is_open, timeout, f"port {port}")


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any Locus/Django/Celery setting (a test's must not leak in)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIXES)}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def reset_database(admin_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


class Process:
    """A child in its own session with its output in a log file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path, user: str | None = None):
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        with self.log_path.open("a") as log:
            self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True, user=user)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        """To the whole session (the agent, its job subprocess, anything they started)."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def kill9(self) -> None:
        """A machine crash: every process of the session at once, no handler runs."""
        subprocess.run(["pkill", "-9", "-s", str(self.proc.pid)], check=False)
        self.proc.wait()

    def stop(self, timeout: float = 20) -> int:
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.proc.wait()
        return self.proc.returncode


class PrivateRedis:
    """redis-server on a free port, no persistence: a restart loses every message, as a crash would."""

    def __init__(self, workdir: Path, port: int | None = None):
        self.workdir = workdir
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: Process | None = None

    def start(self) -> None:
        self.proc = Process(f"redis-{self.port}", ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                                                    "--save", "", "--appendonly", "no", "--daemonize", "no",
                                                    "--dir", str(self.workdir)], os.environ.copy(), self.workdir)
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.proc:
            self.proc.kill9()  # a crash, not a shutdown: nothing is saved
            self.proc = None

    def restart(self, down_s: float = 0.0) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()


class PrivatePostgres:
    """A PostgreSQL cluster of its own (initdb + pg_ctl) on a free port, run as the `postgres` OS user.

    PostgreSQL refuses to run as root, hence `runuser`/`user=`; the data dir is handed to that user.
    """

    def __init__(self, workdir: Path, port: int | None = None, os_user: str = "postgres"):
        self.port = port or free_port()
        self.os_user = os_user
        self.dir = workdir / "pg"
        self.data = self.dir / "data"
        self.bin = self._bindir()
        self.admin_url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @staticmethod
    def _bindir() -> Path:
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        if found:
            return found[-1].parent
        initdb = shutil.which("initdb")
        if not initdb:
            raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) not found")
        return Path(initdb).parent

    def url(self, dbname: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{dbname}"

    def _run(self, *argv: str, timeout: float = 120) -> None:
        user = self.os_user if os.geteuid() == 0 else None
        subprocess.run(list(argv), check=True, capture_output=True, timeout=timeout, user=user, cwd=self.dir)

    def init(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.dir, self.os_user, self.os_user)
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "--no-sync", "-E", "UTF8")

    def start(self) -> None:
        # fsync off: this cluster holds throw-away test data; a restart here is a shutdown, not a power cut.
        opts = (f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "server.log"),
                  "-o", opts, "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        """`fast` drops every client connection at once, as a failover or a crash restart would."""
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def restart(self, down_s: float = 0.0, mode: str = "fast") -> None:
        self.stop(mode)
        time.sleep(down_s)
        self.start()

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


class TcpProxy:
    """A loopback TCP forwarder that can be cut: the network between one agent and the portal.

    `cut()` is a partition: from then on no byte gets through either way and nothing is closed — open
    connections go silent, new ones are accepted and then hear nothing, as when packets are dropped (no FIN,
    no RST: each side finds out only by its own time limits). `heal()` lets traffic through again; the
    connections that lived through the cut are reset, as a router that lost their state would.
    """

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._cut = threading.Event()
        self._conns: set[socket.socket] = set()
        self._cut_through: set[socket.socket] = set()  # open while cut: reset at heal
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        self._closed = False
        threading.Thread(target=self._accept, daemon=True, name=f"proxy-{self.port}").start()

    def cut(self) -> None:
        with self._lock:
            self._cut.set()
            self._cut_through = set(self._conns)

    def heal(self) -> None:
        with self._lock:
            stale, self._cut_through = self._cut_through, set()
            self._cut.clear()
        for conn in stale:
            _reset(conn)

    def close(self) -> None:
        self._closed = True
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for conn in conns:
            _reset(conn)
        _reset(self._server)

    def _track(self, *socks: socket.socket) -> None:
        with self._lock:
            self._conns.update(socks)
            if self._cut.is_set():
                self._cut_through.update(socks)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if self._cut.is_set():  # the far side is unreachable: hold the connection, say nothing
                self._track(client)
                threading.Thread(target=self._pipe, args=(client, None), daemon=True).start()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                _reset(client)
                continue
            upstream.settimeout(None)
            self._track(client, upstream)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket | None) -> None:
        try:
            while data := src.recv(65536):
                if dst is not None and not self._cut.is_set() and src not in self._cut_through:
                    dst.sendall(data)  # else dropped, like a packet on a cut link
        except OSError:
            pass
        finally:
            for s in (src, dst):
                if s is not None:
                    with self._lock:
                        self._conns.discard(s)
                    _reset(s)


def _reset(sock: socket.socket) -> None:
    """Close with a RST; shutdown() first, so that a thread blocked in recv() on it wakes up (close() alone
    leaves the socket open while any thread is still inside a call on it)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


class Agent:
    """One enrolled worker-agent process (`python -m workers start`)."""

    def __init__(self, name: str, worker_id: str, process: Process, scratch: Path):
        self.name, self.worker_id, self.process, self.scratch = name, worker_id, process, scratch

    def alive(self) -> bool:
        return self.process.alive()

    def output(self) -> str:
        return self.process.output()


class Stack:
    """Portal (gunicorn) + portal Celery worker with beat + agents, on production settings.

    `database_url` and `broker_url` point at the servers to use (shared or private); `lease_s`/`sweep_s`
    are short in tests so that recovery paths run in seconds.
    """

    def __init__(self, workdir: Path, database_url: str, broker_url: str, *, lease_s: float = 30,
                 sweep_s: float = 15.0, redispatch_s: float = 60.0, web_workers: int = 2, web_threads: int = 8,
                 extra_env: dict[str, str] | None = None):
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.database_url, self.broker_url = database_url, broker_url
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.web_workers, self.web_threads = web_workers, web_threads
        self.media_root = workdir / "var" / "media"
        self.env = clean_env(
            LOCUS_MODE="production", SECRET_KEY="stack-" + "x" * 60, ALLOWED_HOSTS="127.0.0.1,localhost",
            DATABASE_URL=database_url, CELERY_BROKER_URL=broker_url, EMAIL_URL="consolemail://",
            LOCUS_PUBLIC_URL=self.url, LOCUS_VAR_DIR=str(workdir / "var"), SECURE_SSL_REDIRECT="false",
            LOCUS_LEASE_SECONDS=str(int(lease_s)), LOCUS_SWEEP_SECONDS=str(sweep_s),
            LOCUS_REDISPATCH_SECONDS=str(redispatch_s), LOG_LEVEL="WARNING",
            DJANGO_SETTINGS_MODULE="portal.settings", **(extra_env or {}),
        )
        self.procs: dict[str, Process] = {}
        self.agents: dict[str, Agent] = {}
        self._count = 0

    # -- lifecycle ----------------------------------------------------------------------------------------
    def migrate(self) -> None:
        subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=self.env, check=True,
                       timeout=600)

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Process:
        proc = Process(name, argv, env or self.env, self.workdir)
        self.procs[name] = proc
        return proc

    def start_portal(self) -> None:
        # As deployed (portal/gunicorn_conf.py: threads, keep-alive 75 s, a limit on silent clients).
        self.start("portal", [sys.executable, "-m", "gunicorn", "portal.wsgi", "-c", "python:portal.gunicorn_conf",
                              "-b", f"127.0.0.1:{self.port}", "-w", str(self.web_workers), "--threads",
                              str(self.web_threads), "--timeout", "60"])
        self.wait_healthy()

    def start_celery(self) -> None:
        self.start("portal-celery", [sys.executable, "-m", "celery", "-A", "portal", "worker", "-B", "-Q",
                                     "notify,maintenance", "--pool", "solo", "--loglevel", "INFO",
                                     "-s", str(self.workdir / "beat-schedule")])

    def up(self) -> None:
        self.migrate()
        self.start_portal()
        self.start_celery()

    def wait_healthy(self, timeout: float = 90) -> None:
        def healthy() -> bool:
            try:
                return requests.get(f"{self.url}/healthz", timeout=2).ok
            except requests.RequestException:
                return False

        wait_until(healthy, timeout, "the portal to answer /healthz", interval=0.3)

    def down(self) -> None:
        for proc in [*self.procs.values()]:
            proc.signal(signal.SIGTERM)
        for proc in [*self.procs.values()]:
            try:
                proc.proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.signal(signal.SIGKILL)
                proc.proc.wait()

    # -- management ---------------------------------------------------------------------------------------
    def manage(self, *args: str, stdin: str | None = None) -> str:
        done = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, input=stdin,
                              capture_output=True, text=True, timeout=120)
        if done.returncode:
            raise RuntimeError(f"manage.py {' '.join(args)} failed: {done.stderr.strip()[-2000:]}")
        return done.stdout

    def create_user(self, username: str, email: str | None = None) -> str:
        """A user with an API token; returns the raw token."""
        code = ("from django.contrib.auth import get_user_model\n"
                "from portal.accounts.models import ApiToken\n"
                f"u = get_user_model().objects.create_user({username!r}, {email or username + '@example.org'!r}, "
                "None)\n"
                "print(ApiToken.issue(u, 'stack')[1])\n")
        return self.manage("shell", "-c", code).strip().splitlines()[-1]

    def session(self, token: str) -> requests.Session:
        session = requests.Session()
        session.headers["Authorization"] = f"Token {token}"
        return session

    # -- agents -------------------------------------------------------------------------------------------
    def add_agent(self, *, name: str | None = None, portal_url: str | None = None, scratch: Path | None = None,
                  grace_s: float = 2.0, env: dict[str, str] | None = None, pull: bool = False) -> Agent:
        """Enroll a worker and start its agent; `portal_url` lets it reach the portal through a TcpProxy."""
        self._count += 1
        name = name or f"agent-{self._count}"
        config = self.workdir / f"{name}.json"
        raw = self.manage("enrollment_token", "--hours", "1").strip()
        agent_env = clean_env(LOCUS_LOG_LEVEL="INFO", **(env or {}))
        subprocess.run([sys.executable, "-m", "workers", "enroll", "--portal", portal_url or self.url,
                        "--enrollment-token", raw, "--name", name, "--config", str(config), "--force"],
                       cwd=ROOT, env=agent_env, check=True, capture_output=True, timeout=60)
        scratch = scratch or self.workdir / f"{name}-scratch"
        argv = [sys.executable, "-m", "workers", "start", "--config", str(config), "--scratch", str(scratch),
                "--grace", str(grace_s)]
        argv += ["--pull"] if pull else ["--broker", self.broker_url]
        process = Process(name, argv, agent_env, self.workdir)
        agent = Agent(name, json.loads(config.read_text())["worker_id"], process, scratch)
        self.agents[name] = agent
        self.procs[name] = process
        return agent

    def wait_consuming(self, agent: Agent, timeout: float = 60) -> None:
        """Until the agent's Celery consumer is connected (its log says it is ready)."""
        wait_until(lambda: "ready" in agent.output() or not agent.alive(), timeout, f"{agent.name} to be ready")
        if not agent.alive():
            raise RuntimeError(f"{agent.name} exited:\n{agent.output()[-3000:]}")

    def remove_agent(self, agent: Agent) -> None:
        self.agents.pop(agent.name, None)
        self.procs.pop(agent.name, None)


def temp_workdir(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)  # a private PostgreSQL (another OS user) must be able to reach its data dir inside
    return path
