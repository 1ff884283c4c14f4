"""`start`: keep this worker registered (heartbeat) and take jobs, from the broker or by HTTP long poll.

Both modes share one protocol (design §4): whatever brings the job id, the claim over HTTP decides, and the
same runner executes it.

Graceful shutdown (SIGTERM/SIGINT): the agent stops taking work at once; a running job may go on for up to
`--drain` seconds (default 0) and, if it finishes, is uploaded and completed as usual. Otherwise it is stopped
(SIGTERM, `--grace`, SIGKILL) and *handed back*: `complete` with `handback: true`, the attempt becomes
`released` and the portal requeues the job at once without using one of its max_attempts — a rolling restart
must not fail a job that did nothing wrong, nor make it wait for its lease to expire.
"""

from __future__ import annotations

import logging
import os
import platform
import signal
import threading
from dataclasses import dataclass
from typing import Any

from workers.client import PortalError, PortalUnavailable, WorkerClient
from workers.runner import RunnerSettings

log = logging.getLogger("locus.worker")

HEARTBEAT_S = 15.0


class GpuSlots:
    """Hands out GPU indices so that concurrent jobs never share a card (CUDA_VISIBLE_DEVICES)."""

    def __init__(self, count: int):
        self.count = count
        self._free = list(range(count))
        self._cond = threading.Condition()

    def acquire(self, n: int) -> list[int]:
        """Block until `n` cards are free (never more than exist: the portal checked the fit)."""
        n = min(n, self.count)
        with self._cond:
            self._cond.wait_for(lambda: len(self._free) >= n)
            taken, self._free = self._free[:n], self._free[n:]
            return taken

    def release(self, indices: list[int]) -> None:
        with self._cond:
            self._free = sorted(self._free + indices)
            self._cond.notify_all()


class WorkerHeartbeat:
    """POST heartbeat now and every 15 s; tells the caller which queues the portal allows.

    A revoked token (401/403) stops the agent: there is no point in taking jobs it may not complete.
    """

    def __init__(
        self,
        client: WorkerClient,
        capabilities: dict[str, Any],
        shutdown: threading.Event,
        interval_s: float = HEARTBEAT_S,
    ):
        self.client = client
        self.capabilities = capabilities
        self.shutdown = shutdown
        self.interval_s = interval_s
        self.queues: list[str] = []
        self._thread: threading.Thread | None = None

    def beat(self) -> dict[str, Any]:
        answer = self.client.heartbeat(self.capabilities)
        queues = list(answer.get("queues") or [])
        if self.queues and sorted(queues) != sorted(self.queues):
            log.warning(
                "the portal now allows queues %s (consuming %s); restart the agent to follow",
                ",".join(queues),
                ",".join(self.queues),
            )
        elif not self.queues:
            self.queues = queues
        return answer

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="worker-heartbeat", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self.shutdown.wait(self.interval_s):
            try:
                self.beat()
            except PortalUnavailable as exc:
                log.warning("worker heartbeat failed: %s", exc)
            except PortalError as exc:
                log.error("worker heartbeat refused: %s", exc)
                if exc.status in (401, 403):
                    log.error("this worker's token is no longer accepted; stopping")
                    os.kill(os.getpid(), signal.SIGTERM)
                    return


@dataclass
class StartOptions:
    queues: list[str]
    concurrency: int
    gpu_count: int
    broker_url: str | None
    worker_name: str


def run_broker(client: WorkerClient, settings: RunnerSettings, options: StartOptions) -> int:
    """Consume `locus.run_job` from the queues with a Celery worker in this process; returns its exit code."""
    from celery import signals

    from workers.celery_app import AgentContext, make_app, set_context

    app = make_app(options.queues, broker_url=options.broker_url, gpu=options.gpu_count > 0)
    set_context(AgentContext(client=client, settings=settings, gpu_slots=GpuSlots(options.gpu_count)))

    def on_shutting_down(**_: Any) -> None:
        # Runs in Celery's SIGTERM/SIGINT handler: tell running jobs to stop and report, then Celery's warm
        # shutdown waits for the task to return (and acks its message: the portal requeues the job).
        settings.shutdown.set()

    signals.worker_shutting_down.connect(on_shutting_down, weak=False)
    pool = "solo" if options.concurrency == 1 else "threads"
    log.info(
        "consuming %s from %s (pool %s, concurrency %d)",
        ",".join(options.queues),
        _redact(app.conf.broker_url),
        pool,
        options.concurrency,
    )
    worker = app.Worker(
        queues=options.queues,
        pool=pool,
        concurrency=options.concurrency,
        hostname=f"{options.worker_name}@{platform.node() or 'localhost'}",
        loglevel="INFO",
        without_gossip=True,
        without_mingle=True,
        without_heartbeat=True,
        quiet=True,
    )
    worker.start()
    return int(worker.exitcode or 0)


def run_pull(
    client: WorkerClient, settings: RunnerSettings, options: StartOptions, wait_s: float = 20
) -> int:
    """Long-poll `claim-next` from `concurrency` threads until SIGTERM/SIGINT; returns the exit code."""
    from workers.celery_app import AgentContext, run_claimed

    context = AgentContext(client=client, settings=settings, gpu_slots=GpuSlots(options.gpu_count))
    status = {"code": 0}

    def loop() -> None:
        delay = 1.0
        while not settings.shutdown.is_set():
            try:
                claim = client.claim_next(wait_s=wait_s)
            except PortalUnavailable as exc:
                log.warning("claim-next failed: %s; again in %.0f s", exc, delay)
                settings.shutdown.wait(delay)
                delay = min(delay * 2, 60)
                continue
            except PortalError as exc:
                log.error("claim-next refused: %s", exc)
                if exc.status in (401, 403):
                    status["code"] = 1
                    settings.shutdown.set()
                settings.shutdown.wait(5)
                continue
            delay = 1.0
            if claim is not None:
                run_claimed(context, claim)

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("%s: finishing up (running jobs are stopped and handed back)", signal.Signals(signum).name)
        settings.shutdown.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    threads = [
        threading.Thread(target=loop, name=f"pull-{i}", daemon=True) for i in range(options.concurrency)
    ]
    for thread in threads:
        thread.start()
    log.info("pulling jobs from %s (concurrency %d)", client.portal, options.concurrency)
    while any(t.is_alive() for t in threads):
        for thread in threads:
            thread.join(timeout=0.5)
    return status["code"]


def _redact(url: str) -> str:
    """Broker URLs may hold a password; never log it."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return url
