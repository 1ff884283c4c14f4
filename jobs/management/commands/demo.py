"""`manage.py demo`: the whole platform on one machine with no servers, and the main job through it.

Starts the portal (HTTP), the portal-side Celery worker with beat (email + lease sweeper) and one worker
agent, all on the embedded default (SQLite, file-system broker, local media, file email). Then it simulates a
small movie for the bundled DECODE-Plex model (`algorithms.decode_plex.bundled`), puts the movie into a dataset of
the demo user, submits the `localize` pipeline with the bundled model from the model registry (fit on the CPU
route → drift → render + QC)
and prints the pipeline's page, where the rendered image, the drift plot and the QC report show. The worker's
enrollment selftest stays the worker check. Ctrl-C stops every process cleanly.
"""

from __future__ import annotations

import hashlib
import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from jobs import services
from jobs.models import Dataset, EnrollmentToken, File, Job
from portal.log_filters import redact

DEMO_USER, DEMO_PASSWORD = "demo", "locus-demo"
DEMO_DATASET = "Demo: simulated movie"
DEMO_FRAMES = 1000  # 64 × 64 px: ~12 s of fit on one CPU core, ~5600 localizations (a recognisable image)
ROOT = Path(settings.BASE_DIR)


class Command(BaseCommand):
    help = ("Run portal + worker + beat on the embedded default and the `localize` pipeline on a simulated movie "
            "(Ctrl-C stops all).")

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--exit-when-done", action="store_true",
                        help="stop everything once the demo pipeline ends (exit 0 only if it succeeded)")
        parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the demo pipeline")
        parser.add_argument("--frames", type=int, default=DEMO_FRAMES, help="frames of the simulated movie")

    def handle(self, *args, port: int, exit_when_done: bool, timeout: float, frames: int, **options):
        started = time.monotonic()
        if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.sqlite3" and not os.environ.get(
                "LOCUS_DEMO_ANY_DB"):
            self.stderr.write("note: DATABASE_URL is set; the demo uses that database")
        if _port_busy(port):
            raise CommandError(f"port {port} is already in use; pass --port N")
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.relays: list[threading.Thread] = []
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        try:
            call_command("migrate", interactive=False, verbosity=0)
            user = self.demo_user()
            portal_url = f"http://127.0.0.1:{port}"
            env = self.child_env(portal_url)
            self.start("portal", [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"], env)
            self.wait_for_portal(portal_url)
            self.start("portal-celery", [sys.executable, "-m", "celery", "-A", "portal", "worker", "-B",
                                         "-Q", "notify,maintenance", "--pool", "solo", "--loglevel", "WARNING",
                                         "-s", str(settings.VAR_DIR / "celerybeat-schedule")], env)
            config = settings.VAR_DIR / "demo-worker.json"
            if not config.exists():
                _, raw = EnrollmentToken.issue(user, hours=1, note="demo worker")
                subprocess.run([sys.executable, "-m", "workers", "enroll", "--portal", portal_url,
                                "--enrollment-token", raw, "--name", "demo-worker", "--config", str(config)],
                               cwd=ROOT, env=env, check=True)
            self.start("worker", [sys.executable, "-m", "workers", "start", "--config", str(config),
                                  "--scratch", str(settings.VAR_DIR / "scratch")], env)
            job = self.submit_demo(user, frames)
            url = f"{portal_url}/jobs/{job.pk}/"
            self.stdout.write(self.style.SUCCESS(
                f"\nLocus is running at {portal_url}/  (log in as {DEMO_USER} / {DEMO_PASSWORD})\n"
                f"Demo pipeline {job.pk} submitted: localize (fit with the bundled model on the CPU → drift "
                f"correction → render + QC) on a simulated {frames}-frame movie. Its page:\n  {url}\n"
                "Ctrl-C stops everything.\n"))
            status = self.wait_for(job, timeout)
            job.refresh_from_db()
            took = f"{time.monotonic() - started:.0f} s after start"
            if status == Job.Status.SUCCEEDED:
                self.stdout.write(self.style.SUCCESS(
                    f"demo pipeline succeeded ({took}). The rendered image, the drift plot and the QC report "
                    f"are on its page:\n  {url}"))
            else:
                self.stdout.write(f"demo pipeline {status} ({took}): {job.reason}\n  {url}")
            if exit_when_done:
                if status != Job.Status.SUCCEEDED:
                    raise CommandError(f"demo pipeline ended {status}: {job.reason}")
                self.wait_for_email(job)
                return
            while all(p.poll() is None for _, p in self.procs):
                time.sleep(1)
            dead = [name for name, p in self.procs if p.poll() is not None]
            raise CommandError(f"{', '.join(dead)} stopped unexpectedly; see its output above")
        except KeyboardInterrupt:
            _ignore_stop_signals()  # a second Ctrl-C (or SIGTERM) while stopping must not end in a traceback
            self.stdout.write("\nstopping…")
        finally:
            _ignore_stop_signals()
            self.stop_all()

    def demo_user(self):
        User = get_user_model()
        user, _ = User.objects.get_or_create(username=DEMO_USER, defaults={"email": "demo@localhost"})
        user.set_password(DEMO_PASSWORD)
        user.save()
        return user

    def submit_demo(self, user, frames: int) -> Job:
        """Simulate the movie, store it in the demo dataset, submit `localize` with the bundled model.

        The model is the registry's (`migrate` registers the bundled models; registering again is a no-op, and
        registers them where LOCUS_REGISTER_BUNDLED_MODELS is off). The movie is simulated with a fixed seed, so
        a second demo on the same database finds it (same name and sha256) instead of storing a copy.
        """
        from algorithms.decode_plex.bundled import GENERIC_2D_EMCCD, demo_movie
        from jobs.trained_models import register_bundled

        t0 = time.monotonic()
        movie, truth = demo_movie(n_frames=frames)
        self.stdout.write(f"simulated the demo movie: {len(truth)} emitter-frames in "
                          f"{time.monotonic() - t0:.1f} s")
        dataset, _ = Dataset.objects.get_or_create(owner=user, name=DEMO_DATASET, defaults={
            "description": "A movie simulated for the bundled DECODE-Plex model generic-2d-emccd (64 × 64 px, "
                           "100 nm pixels, EMCCD camera, blinking emitters on filaments, no drift)."})
        sha = hashlib.sha256(movie).hexdigest()
        movie_file = dataset.files.filter(name="demo-movie.tif", sha256=sha, status=File.Status.READY).first()
        if movie_file is None:
            movie_file = services.add_file(dataset, "demo-movie.tif", io.BytesIO(movie), size_hint=len(movie),
                                           content_type="image/tiff", expected_sha256=sha)
        model_sha = hashlib.sha256(GENERIC_2D_EMCCD.read_bytes()).hexdigest()
        model = next(m for m in register_bundled() if m.file.sha256 == model_sha)
        # notify "always": the pipeline is over in well under the long-job threshold, and the demo shows the
        # email it sends (var/mail/) as well as the page
        job, _ = services.submit(user, application="pipeline", entrypoint="localize",
                                 params={"fit": {"device": "cpu"}}, notify=Job.Notify.ALWAYS,
                                 inputs={"frames": [str(movie_file.pk)], "model": [str(model.file_id)]})
        return job

    def child_env(self, portal_url: str) -> dict[str, str]:
        env = {**os.environ, "LOCUS_PUBLIC_URL": portal_url, "PYTHONUNBUFFERED": "1",
               "LOCUS_VAR_DIR": str(settings.VAR_DIR), "CELERY_BROKER_URL": settings.CELERY_BROKER_URL}
        if settings.CELERY_BROKER_URL.startswith("filesystem"):
            env["LOCUS_BROKER_DIR"] = settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_in"]
        # One compute thread per job (unless the user chose): the demo shares a small machine with the portal,
        # Celery and whatever else runs, and torch's two OpenMP threads on a busy 2-core machine spun for 95 s
        # of wall (80 s CPU) on the demo's fit, against 18 s (11 s CPU) with one.
        env.setdefault("OMP_NUM_THREADS", "1")
        return env

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        # The children's output reaches the terminal through `redact`: whatever a child prints (a dev-server
        # access line, a traceback naming a transfer URL) shows no token.
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, start_new_session=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.procs.append((name, proc))
        for source, sink in ((proc.stdout, sys.stdout), (proc.stderr, sys.stderr)):
            relay = threading.Thread(target=_relay, args=(source, sink), name=f"demo-{name}-output", daemon=True)
            relay.start()
            self.relays.append(relay)

    def wait_for_portal(self, url: str, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        raise CommandError(f"the portal did not answer at {url} within {seconds:.0f} s")

    def wait_for(self, job: Job, timeout: float) -> str:
        """Poll the pipeline until it ends, printing each change of it and of its steps."""
        deadline = time.monotonic() + timeout
        t0 = time.monotonic()
        seen: dict[str, str] = {}
        while time.monotonic() < deadline:
            job.refresh_from_db()
            now = {"pipeline": job.status}
            for step, status in Job.objects.filter(parent=job).order_by("created_at").values_list("step", "status"):
                now[f"step {step}"] = status
            for name, status in now.items():
                if seen.get(name) != status:
                    self.stdout.write(f"  {time.monotonic() - t0:5.0f} s  {name} {status}")
            seen = now
            if job.is_terminal:
                return job.status
            if any(p.poll() is not None for _, p in self.procs):
                dead = [name for name, p in self.procs if p.poll() is not None]
                raise CommandError(f"{', '.join(dead)} stopped unexpectedly")
            time.sleep(0.5)
        raise CommandError(f"the demo pipeline did not finish within {timeout:.0f} s")

    def wait_for_email(self, job: Job, seconds: float = 30) -> None:
        """Before stopping, give the notify worker time to send the job's email (it lands in var/mail)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if Job.objects.filter(pk=job.pk, notified_at__isnull=False).exists():
                return
            time.sleep(0.5)
        self.stderr.write("the notification email was not sent within 30 s")

    def stop_all(self) -> None:
        """SIGTERM every child's process group, wait, then SIGKILL what is left."""
        for _, proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for name, proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.stderr.write(f"{name} did not stop in time; killing it")
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for relay in self.relays:  # the children's last lines, before the interpreter ends the relays
            relay.join(timeout=5)


def _relay(source, sink) -> None:
    """Copy a child's output line by line, redacted, until it closes (the child ended)."""
    try:
        for line in iter(source.readline, b""):
            sink.write(redact(line.decode("utf-8", errors="replace")))
            sink.flush()
    except (OSError, ValueError):  # our own output closed (the demo is exiting): nothing left to show it on
        pass
    finally:
        source.close()


def _ignore_stop_signals() -> None:
    """Stopping is bounded (stop_all waits 15 s, then kills): further interrupts would only cut it short."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _port_busy(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0
