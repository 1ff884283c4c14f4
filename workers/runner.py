"""Run one claimed attempt end to end (docs/worker-api.md, "What the agent does with a claim").

The subprocess is the unit of isolation: it gets its own process group (so SIGTERM/SIGKILL reach everything it
started), its own scratch dir, and CUDA initialised only inside it. Three threads accompany it: stdout/stderr
readers (log lines + JSON progress), a log shipper (one batch per ~1 s, so a chatty job does not flood the
portal), and the lease heartbeat (every lease_s/3, carrying the latest progress, bringing back `cancel`).
Any 409 means the portal has given up on this attempt: the job is killed and nothing is uploaded, because a
newer attempt may already own the job's outputs.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from workers.capabilities import CODE_ROOT, device_ids
from workers.client import Conflict, PortalError, WorkerClient

log = logging.getLogger("locus.worker.runner")

LOG_CHUNK_CHARS = 256 * 1024
MAX_PROGRESS_BYTES = 64 * 1024  # the portal's limit on one progress document (jobs/api/worker_contract.py)
SECRET_ENV = ("CELERY_BROKER_URL", "LOCUS_WORKER_CONFIG")


class InfrastructureError(Exception):
    """Trouble on this machine or on the way (download check, disk full, upload): the portal retries it."""


class InputChanged(Exception):
    """An input's stored bytes no longer match the checksum taken at upload, download after download: the
    file changed in storage. Retrying cannot help, so this is an `input` failure with a one-line reason."""


@dataclass
class RunnerSettings:
    scratch: Path
    grace_s: float = 10.0  # SIGTERM → SIGKILL
    drain_s: float = 0.0  # at agent shutdown, how long a running job may go on to finish by itself
    log_interval_s: float = 1.0  # log batching period
    min_heartbeat_s: float = 0.5  # floor for lease_s / 3 (a tiny lease must not spin)
    poll_s: float = 0.1  # how often the wait loop looks at the child and the flags
    code_root: Path = CODE_ROOT
    gpu_indices: list[int] = field(default_factory=list)  # GPUs this run may use (CUDA_VISIBLE_DEVICES)
    shutdown: threading.Event = field(default_factory=threading.Event)  # set when the agent is stopping


@dataclass
class Outcome:
    """What happened, for the agent's log and for tests. `completed` is False when the portal ended it."""

    completed: bool
    exit_code: int | None = None
    failure_class: str | None = None
    reason: str = ""
    outputs: list[dict[str, Any]] = field(default_factory=list)
    job_status: str | None = None
    ended_by: str | None = None  # "cancel" | "conflict" | "timeout" | "shutdown" | None


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _safe_part(name: str, what: str) -> str:
    """One path component from the portal; never lets a name escape the scratch dir."""
    part = Path(str(name)).name
    if part in ("", ".", ".."):
        raise InfrastructureError(f"refusing {what} name {name!r}")
    return part


def build_command(spec: dict[str, Any], inputs: Path, outputs: Path, params: Path) -> list[str]:
    """`spec.command` with `python` meaning this interpreter, plus the three job arguments."""
    command = [str(c) for c in spec.get("command") or []]
    if not command:
        raise InfrastructureError("the claim's spec has no command")
    if command[0] in ("python", "python3"):
        command[0] = sys.executable
    return [*command, "--inputs", str(inputs), "--outputs", str(outputs), "--params", str(params)]


class AttemptRun:
    """One attempt on this machine. Call `run()` once; it always removes the scratch dir."""

    def __init__(self, client: WorkerClient, claim: dict[str, Any], settings: RunnerSettings):
        self.client = client
        self.claim = claim
        self.settings = settings
        self.attempt_id = str(claim["attempt_id"])
        self.fencing_token = str(claim["fencing_token"])
        self.spec: dict[str, Any] = claim.get("spec") or {}
        self.lease_s = float(claim.get("lease_s") or 60)
        self.dir = settings.scratch / _safe_part(self.attempt_id, "attempt")
        self.cancelled = threading.Event()  # directive "cancel"
        self.over = threading.Event()  # a 409: the portal no longer accepts this attempt
        self._stop = threading.Event()  # stops the heartbeat and log threads
        self._progress: dict[str, Any] | None = None
        self._log_lock = threading.Lock()
        self._log_buffer: list[str] = []
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=5)
        self._threads: list[threading.Thread] = []
        # When the last heartbeat that the portal accepted was *sent*: the lease runs from about then.
        self._lease_ok_at = time.monotonic()
        self.cpu_seconds = 0.0
        self.wall_s = 0.0

    # -- public -------------------------------------------------------------------------------------------
    def run(self) -> Outcome:
        log.info(
            "attempt %s of job %s: %s",
            self.attempt_id,
            self.claim.get("job_id"),
            " ".join(map(str, self.spec.get("command") or [])),
        )
        self._start_thread(self._heartbeat_loop, "heartbeat")
        try:
            outcome = self._run()
        except Exception as exc:  # noqa: BLE001 - an agent bug is an infrastructure failure
            log.exception("attempt %s: agent error", self.attempt_id)
            outcome = self._complete(
                None, "infrastructure", f"worker agent error: {type(exc).__name__}: {exc}"
            )
        finally:
            self._stop.set()
            proc = getattr(self, "_proc", None)
            if proc is not None and proc.returncode is None:  # after an agent bug: never leave it running
                _killpg(proc.pid, signal.SIGKILL)
                self._reap(proc, block=True)
            for thread in self._threads:
                thread.join(timeout=10)
            shutil.rmtree(self.dir, ignore_errors=True)
        log.info("attempt %s: %s", self.attempt_id, _describe(outcome))
        return outcome

    # -- the steps ----------------------------------------------------------------------------------------
    def _run(self) -> Outcome:
        try:
            inputs_dir, outputs_dir, params_path = self._prepare()
        except InfrastructureError as exc:
            if self.over.is_set():
                return Outcome(completed=False, ended_by="conflict", reason="attempt is over")
            return self._complete(None, "infrastructure", str(exc))
        except InputChanged as exc:
            return self._complete(None, "input", str(exc))
        except Conflict:
            return Outcome(completed=False, ended_by="conflict", reason="attempt is over")
        if ended := self._ended_before_start():
            return ended

        command = build_command(self.spec, inputs_dir, outputs_dir, params_path)
        proc = self._spawn(command)
        self._start_thread(self._log_loop, "log-shipper")
        ended_by = self._wait(proc)
        exit_code = proc.returncode
        self._stop_readers()
        self._flush_logs()

        if ended_by == "cancel":  # the portal already marked it; the final log flush may have had a 409
            return Outcome(completed=False, exit_code=exit_code, ended_by="cancel", reason="cancelled")
        if self.over.is_set() or ended_by == "conflict":
            return Outcome(
                completed=False, exit_code=exit_code, ended_by="conflict", reason="attempt is over"
            )
        if ended_by is None and exit_code == -signal.SIGTERM:
            # A SIGTERM we did not send: the service manager may be stopping us too (systemd's default
            # KillMode signals the whole cgroup). Give our own signal handler a moment to say so.
            self.settings.shutdown.wait(0.5)
        if ended_by == "shutdown" or (exit_code < 0 and self.settings.shutdown.is_set()):
            # Handed back: the portal requeues the job at once, without using one of its max_attempts.
            return self._complete(exit_code, "infrastructure", "worker shutting down", ended_by="shutdown")
        if ended_by == "timeout":
            timeout = self.spec.get("timeout_s")
            return self._complete(-9, "algorithm", f"timeout after {_fmt_s(timeout)} s", ended_by="timeout")
        if exit_code != 0:
            failure_class = "input" if exit_code == 2 else "algorithm"
            tail = self._stderr_tail[-1] if self._stderr_tail else ""
            reason = f"exit code {exit_code}" + (f": {tail}" if tail else "")
            if self._scratch_full():
                # The job died because this machine's scratch disk is full, not because of its code or input:
                # another worker may well have the room, so it is retried there.
                failure_class, reason = "infrastructure", f"disk full under the worker's scratch dir; {reason}"
            return self._complete(exit_code, failure_class, reason[:1000])
        try:
            outputs = self._upload_outputs(outputs_dir)
        except Conflict:
            return Outcome(completed=False, exit_code=0, ended_by="conflict", reason="attempt is over")
        except (PortalError, OSError, InfrastructureError) as exc:
            return self._complete(0, "infrastructure", f"upload failed: {exc}"[:1000])
        return self._complete(0, None, "", outputs=outputs)

    def _prepare(self) -> tuple[Path, Path, Path]:
        """Scratch layout, inputs downloaded and verified, params.json written."""
        inputs_dir, outputs_dir = self.dir / "inputs", self.dir / "outputs"
        inputs = self.claim.get("inputs") or []
        try:
            shutil.rmtree(self.dir, ignore_errors=True)  # a redelivered attempt id starts clean
            inputs_dir.mkdir(parents=True)
            outputs_dir.mkdir()
            need = sum(int(i.get("size") or 0) for i in inputs)
            free = shutil.disk_usage(self.dir).free
            if need > free:
                raise InfrastructureError(
                    f"disk full: inputs need {need / 1e9:.2f} GB, "
                    f"{free / 1e9:.2f} GB free under {self.settings.scratch}"
                )
            for item in inputs:
                if self.over.is_set() or self.cancelled.is_set() or self.settings.shutdown.is_set():
                    break
                self._download(item, inputs_dir)
            params_path = self.dir / "params.json"
            params_path.write_text(json.dumps(self.spec.get("params") or {}, indent=2))
        except OSError as exc:
            prefix = "disk full" if exc.errno == errno.ENOSPC else "scratch dir"
            raise InfrastructureError(f"{prefix}: {exc}") from None
        return inputs_dir, outputs_dir, params_path

    def _download(self, item: dict[str, Any], inputs_dir: Path) -> None:
        slot_dir = inputs_dir / _safe_part(item.get("slot", "inputs"), "slot")
        slot_dir.mkdir(exist_ok=True)
        dest = slot_dir / _safe_part(item.get("name", ""), "input file")
        want_size = int(item["size"]) if item.get("size") is not None else None
        want_sha = str(item.get("sha256") or "").lower()
        seen: list[tuple[int, str]] = []
        for _ in range(2):  # a second download tells a damaged transfer from bytes that changed in storage
            try:
                size, sha256 = self.client.download(item["url"], dest)
            except Conflict:
                raise InfrastructureError(f"download of {dest.name} refused (409)") from None
            except PortalError as exc:
                raise InfrastructureError(f"download of {dest.name} failed: {exc}") from None
            if (want_size is None or size == want_size) and (not want_sha or sha256 == want_sha):
                return
            seen.append((size, sha256))
        if seen[0] == seen[1]:
            raise InputChanged(
                f"input {dest.name} changed after it was uploaded: it now has {size} bytes with sha256 "
                f"{sha256[:12]}…, not the {want_size} bytes with sha256 {want_sha[:12]}… checked at upload; "
                "upload it again"
            )
        raise InfrastructureError(f"download of {dest.name}: got {size} bytes with sha256 {sha256[:12]}…, "
                                  f"expected {want_size} bytes with sha256 {want_sha[:12]}…")

    def _ended_before_start(self) -> Outcome | None:
        if self.over.is_set():
            return Outcome(completed=False, ended_by="conflict", reason="attempt is over")
        if self.cancelled.is_set():
            return Outcome(completed=False, ended_by="cancel", reason="cancelled")
        if self.settings.shutdown.is_set():
            return self._complete(None, "infrastructure", "worker shutting down", ended_by="shutdown")
        return None

    def _spawn(self, command: list[str]) -> subprocess.Popen[bytes]:
        env = dict(
            os.environ,
            PYTHONUNBUFFERED="1",
            LOCUS_JOB_ID=str(self.claim.get("job_id", "")),
            LOCUS_ATTEMPT_ID=self.attempt_id,
        )
        for secret in SECRET_ENV:  # the job needs none of the agent's credentials
            env.pop(secret, None)
        if self.settings.gpu_indices:
            # PCI order, so the ids mean the same cards as nvidia-smi's (the probe's) numbering.
            env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
            env["CUDA_VISIBLE_DEVICES"] = ",".join(device_ids(self.settings.gpu_indices))
        proc = subprocess.Popen(
            command,
            cwd=self.settings.code_root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=_parent_death_signal(),  # only prctl runs between fork and exec
        )
        self._proc = proc
        self._started = time.monotonic()
        assert proc.stdout is not None and proc.stderr is not None
        self._readers = [
            self._start_thread(self._read, "stdout", proc.stdout, True),
            self._start_thread(self._read, "stderr", proc.stderr, False),
        ]
        return proc

    def _wait(self, proc: subprocess.Popen[bytes]) -> str | None:
        """Wait for the child; stop it on timeout, cancel, 409 or shutdown. Returns what ended it, if any."""
        timeout = self.spec.get("timeout_s")
        deadline = self._started + float(timeout) if timeout else None
        ended_by = None
        drain_until: float | None = None  # set when the agent starts shutting down
        while not self._reap(proc, block=False):
            self._check_lease()
            if drain_until is None and self.settings.shutdown.is_set():
                drain_until = time.monotonic() + self.settings.drain_s
                if self.settings.drain_s > 0:
                    log.info("attempt %s: shutting down; the job has %.0f s to finish", self.attempt_id,
                             self.settings.drain_s)
            if self.over.is_set():
                ended_by = "conflict"
            elif self.cancelled.is_set():
                ended_by = "cancel"
            elif drain_until is not None and time.monotonic() >= drain_until:
                ended_by = "shutdown"
            elif deadline is not None and time.monotonic() >= deadline:
                ended_by = "timeout"
            if ended_by:
                log.info("attempt %s: stopping the job (%s)", self.attempt_id, ended_by)
                self._terminate(proc)
                break
            time.sleep(self.settings.poll_s)
        self.wall_s = time.monotonic() - self._started
        _killpg(proc.pid, signal.SIGKILL)  # leftovers of the group must not keep a GPU busy
        return ended_by

    def _terminate(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGTERM to the whole group, `grace_s` to exit, then SIGKILL."""
        _killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.settings.grace_s
        while time.monotonic() < deadline:
            if self._reap(proc, block=False):
                return
            time.sleep(self.settings.poll_s)
        log.warning(
            "attempt %s: still running %.0f s after SIGTERM; SIGKILL", self.attempt_id, self.settings.grace_s
        )
        _killpg(proc.pid, signal.SIGKILL)
        self._reap(proc, block=True)

    def _reap(self, proc: subprocess.Popen[bytes], block: bool) -> bool:
        """wait4 rather than Popen.wait: it also gives the child's CPU time (its waited-for children included)."""
        if proc.returncode is not None:
            return True
        pid, status, usage = os.wait4(proc.pid, 0 if block else os.WNOHANG)
        if pid == 0:
            return False
        proc.returncode = os.waitstatus_to_exitcode(status)
        self.cpu_seconds = usage.ru_utime + usage.ru_stime
        return True

    def _upload_outputs(self, outputs_dir: Path) -> list[dict[str, Any]]:
        """Request a target per file, send the bytes, and return the manifest for `complete`."""
        root = outputs_dir.resolve()
        uploaded = []
        for path in sorted(outputs_dir.rglob("*")):
            # A symlink could point at any file on this machine: never upload through one.
            if path.is_symlink() or not path.is_file() or not path.resolve().is_relative_to(root):
                continue
            self._check_lease()
            if self.over.is_set():
                raise Conflict("attempt is over")
            name = path.relative_to(outputs_dir).as_posix()
            size, sha256 = path.stat().st_size, sha256_of(path)
            target = self.client.output_target(self.attempt_id, self.fencing_token, name, size, sha256)
            self.client.upload(target, path)
            uploaded.append({"name": name, "key": target.get("key"), "size": size, "sha256": sha256})
            log.info("attempt %s: uploaded %s (%d bytes)", self.attempt_id, name, size)
        return uploaded

    def _complete(
        self,
        exit_code: int | None,
        failure_class: str | None,
        reason: str,
        *,
        outputs: list[dict[str, Any]] | None = None,
        ended_by: str | None = None,
    ) -> Outcome:
        gpus_used = min(
            int((self.spec.get("hardware") or {}).get("gpu") or 0), len(self.settings.gpu_indices)
        )
        result = {
            "exit_code": exit_code,
            "failure_class": failure_class,
            "reason": reason,
            "outputs": outputs or [],
            "cpu_seconds": round(self.cpu_seconds, 3),
            "gpu_seconds": round(self.wall_s * gpus_used, 3),
        }
        if ended_by == "shutdown":
            result["handback"] = True  # not the job's fault: the portal requeues it without using an attempt
        outcome = Outcome(
            completed=True,
            exit_code=exit_code,
            failure_class=failure_class,
            reason=reason,
            outputs=outputs or [],
            ended_by=ended_by,
        )
        self._stop.set()  # no heartbeat may race with (and outlive) complete
        try:
            outcome.job_status = self.client.complete(self.attempt_id, self.fencing_token, result).get(
                "job_status"
            )
        except Conflict as exc:
            log.warning("attempt %s: complete refused, the attempt is over (%s)", self.attempt_id, exc)
            return Outcome(
                completed=False, exit_code=exit_code, ended_by="conflict", reason="attempt is over"
            )
        except PortalError as exc:
            log.error(
                "attempt %s: complete failed (%s); the lease sweeper will recover the job",
                self.attempt_id,
                exc,
            )
            outcome.completed = False
        return outcome

    def _check_lease(self) -> None:
        """Self-fencing: with no accepted heartbeat for a whole lease, the portal has (or soon will have)
        declared this attempt lost and handed the job to another worker. Stop now rather than run on and
        race the new attempt; nothing is uploaded (the portal would refuse it anyway: stale fencing token)."""
        if not self.over.is_set() and time.monotonic() - self._lease_ok_at > self.lease_s:
            log.warning(
                "attempt %s: no heartbeat accepted for %.0f s (the lease); giving the attempt up",
                self.attempt_id,
                self.lease_s,
            )
            self.over.set()

    def _scratch_full(self) -> bool:
        """True when the job's stderr says ENOSPC or the scratch filesystem has (almost) no room left."""
        if any("No space left on device" in line for line in self._stderr_tail):
            return True
        try:
            return shutil.disk_usage(self.dir).free < 64 * 1024
        except OSError:
            return False

    # -- threads ------------------------------------------------------------------------------------------
    def _start_thread(self, target: Any, name: str, *args: Any) -> threading.Thread:
        thread = threading.Thread(target=target, args=args, name=f"{name}-{self.attempt_id}", daemon=True)
        thread.start()
        self._threads.append(thread)
        return thread

    def _read(self, stream: IO[bytes], is_stdout: bool) -> None:
        with stream:
            for raw in iter(stream.readline, b""):
                line = raw.decode("utf-8", errors="replace")
                # A progress document over the portal's limit would have every heartbeat refused (and the
                # lease lost): such a line stays in the log only.
                if is_stdout and line.lstrip().startswith("{") and len(raw) <= MAX_PROGRESS_BYTES:
                    with contextlib.suppress(ValueError):
                        obj = json.loads(line)
                        if isinstance(obj, dict) and "progress" in obj:
                            self._progress = obj
                elif not is_stdout and line.strip():
                    self._stderr_tail.append(line.strip())
                with self._log_lock:
                    self._log_buffer.append(line)

    def _stop_readers(self) -> None:
        for thread in getattr(self, "_readers", []):
            thread.join(timeout=5)  # a grandchild holding the pipe was SIGKILLed with the group

    def _log_loop(self) -> None:
        while not self._stop.wait(self.settings.log_interval_s):
            self._flush_logs()

    def _flush_logs(self) -> None:
        with self._log_lock:
            text = "".join(self._log_buffer)
            self._log_buffer.clear()
        if not text or self.over.is_set():
            return
        for start in range(0, len(text), LOG_CHUNK_CHARS):
            try:
                self.client.append_log(
                    self.attempt_id, self.fencing_token, text[start : start + LOG_CHUNK_CHARS]
                )
            except Conflict:
                self.over.set()
                return
            except PortalError as exc:
                log.warning(
                    "attempt %s: dropped %d chars of log (%s)", self.attempt_id, len(text) - start, exc
                )
                return

    def _heartbeat_loop(self) -> None:
        interval = max(self.settings.min_heartbeat_s, self.lease_s / 3)
        while not self._stop.wait(interval):
            sent_at = time.monotonic()
            try:
                answer = self.client.attempt_heartbeat(self.attempt_id, self.fencing_token, self._progress)
            except Conflict as exc:
                log.warning("attempt %s: heartbeat refused, the attempt is over (%s)", self.attempt_id, exc)
                self.over.set()
                return
            except PortalError as exc:
                log.warning("attempt %s: heartbeat failed (%s); trying again", self.attempt_id, exc)
                continue
            self._lease_ok_at = max(self._lease_ok_at, sent_at)
            if answer.get("directive") == "cancel" and not self.cancelled.is_set():
                log.info("attempt %s: the portal asks to cancel", self.attempt_id)
                self.cancelled.set()
            if answer.get("lease_s"):
                interval = max(self.settings.min_heartbeat_s, float(answer["lease_s"]) / 3)


def _parent_death_signal() -> Any:
    """A pre-exec hook making the job die with the agent (Linux prctl PR_SET_PDEATHSIG), else None.

    The job runs in its own session, so a SIGKILLed agent would otherwise leave it running as an orphan,
    holding a GPU for an attempt nobody can complete any more (the portal requeues it when the lease ends).
    libc is resolved here, before fork: the hook itself only calls one function.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def hook() -> None:
        prctl(1, int(signal.SIGKILL))  # 1 = PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the agent died between fork and prctl
            os._exit(137)

    return hook


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _fmt_s(value: Any) -> str:
    return f"{float(value):g}" if value is not None else "?"


def _describe(outcome: Outcome) -> str:
    if not outcome.completed:
        return f"ended without complete ({outcome.ended_by or outcome.reason})"
    if outcome.failure_class is None:
        return f"succeeded, {len(outcome.outputs)} output(s), job {outcome.job_status}"
    return f"{outcome.failure_class} failure: {outcome.reason} (job {outcome.job_status})"


def run_claim(client: WorkerClient, claim: dict[str, Any], settings: RunnerSettings) -> Outcome:
    """Convenience entry: run one claim and return its outcome."""
    return AttemptRun(client, claim, settings).run()
