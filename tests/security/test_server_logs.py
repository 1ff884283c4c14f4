"""Tokens and signed transfer URLs are masked in every server's log: gunicorn's access and error lines (the
image and the chart), Django's dev server (the embedded default, `manage.py demo`) and whatever the demo's
child processes print. Real servers on loopback; a transfer URL's path is its credential."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import requests

from bench.stack import clean_env, free_port, wait_for_port
from jobs.management.commands.demo import _relay
from portal.log_filters import RedactSecrets

ROOT = Path(__file__).resolve().parents[2]
TRANSFER_TOKEN = "eyJvcCI6ImdldCIsImtleSI6InVzZXJzLzEveCJ9:1tX9Zq:Sig-nature_0123456789abcdef"
API_TOKEN = "lus_" + "Q" * 43


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _assert_masked(text: str) -> None:
    assert "/worker/transfer/[redacted]" in text, text[-3000:]  # the line is there…
    assert TRANSFER_TOKEN not in text and TRANSFER_TOKEN.split(":")[0] not in text, text[-3000:]  # …its secret not


def test_gunicorn_access_lines_mask_transfer_urls_and_tokens(tmp_path):
    port = free_port()
    log = tmp_path / "gunicorn.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "python:portal.gunicorn_conf", "-w", "1", "--threads", "1",
             "-b", f"127.0.0.1:{port}", "--access-logfile", "-", "tests.unit.wsgi_hello:app"],
            cwd=ROOT, env=clean_env(), stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port)
        base = f"http://127.0.0.1:{port}"
        assert requests.get(f"{base}/api/v1/worker/transfer/{TRANSFER_TOKEN}", timeout=10).status_code == 200
        assert requests.get(f"{base}/api/v1/jobs/?token={API_TOKEN}", timeout=10).status_code == 200
        time.sleep(0.5)
    finally:
        _stop(proc)
    text = log.read_text()
    _assert_masked(text)
    assert API_TOKEN not in text and "lus_[redacted]" in text


def test_the_dev_server_masks_transfer_urls_in_its_access_lines(tmp_path):
    """`manage.py runserver` as the embedded default and the demo run it (SQLite, DEBUG): a refused transfer URL
    is logged (403 is a warning), without its signature."""
    port = free_port()
    log = tmp_path / "runserver.log"
    env = clean_env(LOCUS_VAR_DIR=str(tmp_path / "var"))
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, timeout=60)
        answer = requests.get(f"http://127.0.0.1:{port}/api/v1/worker/transfer/{TRANSFER_TOKEN}", timeout=10)
        assert answer.status_code == 403
        deadline = time.monotonic() + 10
        while "/worker/transfer/" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        _stop(proc)
    _assert_masked(log.read_text())


def test_djangos_own_loggers_print_only_through_the_redacting_handler():
    """The settings' LOGGING, as every Django process (dev server, gunicorn workers, Celery) loads it: Django's
    loggers reach no handler but the redacting console (not Python's last resort, not Django's own console)."""
    console = next(h for h in logging.getLogger().handlers if any(isinstance(f, RedactSecrets) for f in h.filters))
    out = io.StringIO()
    old = console.setStream(out)
    try:
        line = f"GET /api/v1/worker/transfer/{TRANSFER_TOKEN} HTTP/1.1"
        for name in ["django.server", "django.security.csrf", "django.request"]:
            logger = logging.getLogger(name)
            logger.warning('"%s" %s %s', line, 403, 10)
            handlers, current = [], logger
            while current:  # the handlers a record of this logger reaches
                handlers += [h for h in current.handlers if not type(h).__module__.startswith("_pytest")]
                current = current.parent if current.propagate else None
            assert handlers == [console], (name, handlers)
    finally:
        console.setStream(old)
    text = out.getvalue()
    _assert_masked(text)
    assert text.count("[redacted]") == 3


def test_the_demo_relays_its_childrens_output_masked():
    read, write = os.pipe()
    with os.fdopen(write, "wb") as child:
        child.write(f'[portal] "GET /api/v1/worker/transfer/{TRANSFER_TOKEN} HTTP/1.1" 403\n'.encode())
        child.write(f"requests.exceptions.HTTPError: 401 for url: /api/v1/jobs/ (token {API_TOKEN})\n".encode())
    sink = io.StringIO()
    _relay(os.fdopen(read, "rb"), sink)
    text = sink.getvalue()
    _assert_masked(text)
    assert API_TOKEN not in text and text.count("\n") == 2


_CELERY_LOGS = """
import logging, django
django.setup()
from portal.celery import app
app.log.setup(loglevel="INFO")  # what `celery -A portal worker` does at start
logging.getLogger("celery.worker").error("GET /api/v1/worker/transfer/%s failed", TOKEN)
"""


def test_the_portals_celery_worker_keeps_the_redacting_handler():
    """Celery replaces the root logger's handlers unless told not to; the portal's worker must keep ours."""
    out = subprocess.run([sys.executable, "-c", f"TOKEN = {TRANSFER_TOKEN!r}\n" + _CELERY_LOGS], cwd=ROOT,
                         env={**clean_env(), "DJANGO_SETTINGS_MODULE": "portal.settings_test"},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    _assert_masked(out.stdout + out.stderr)
