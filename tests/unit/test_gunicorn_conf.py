"""The portal's gunicorn worker (portal/gunicorn_conf.py): a client that stops halfway through a request
no longer pins a thread for ever. Real gunicorn processes on loopback, one worker with one thread, so a single
stalled client is enough to stop the stock worker answering anyone."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from bench.stack import clean_env, free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]


def _gunicorn(tmp_path: Path, *extra: str):
    port = free_port()
    log = (tmp_path / f"gunicorn-{port}.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "python:portal.gunicorn_conf", "-w", "1", "--threads", "1",
         "-b", f"127.0.0.1:{port}", *extra, "tests.unit.wsgi_hello:app"],
        cwd=ROOT, env=clean_env(LOCUS_WEB_IO_TIMEOUT_S="1.5"), stdout=log, stderr=subprocess.STDOUT)
    wait_for_port(port)
    return proc, port, tmp_path / f"gunicorn-{port}.log"


def _stall(port: int, data: bytes) -> socket.socket:
    """A client that sends part of a request and then goes silent (no FIN, no RST), as behind a partition."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(data)
    return sock


HALF_HEADERS = b"GET / HTTP/1.1\r\nHost: x\r\n"
HALF_BODY = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly part of it"


@pytest.mark.parametrize("partial", [HALF_HEADERS, HALF_BODY], ids=["headers", "body"])
def test_a_client_stalled_mid_request_frees_its_thread(tmp_path, partial):
    proc, port, log = _gunicorn(tmp_path)
    try:
        stalled = _stall(port, partial)
        t0 = time.monotonic()
        answer = requests.get(f"http://127.0.0.1:{port}/", timeout=20)
        assert answer.status_code == 200 and answer.text == "hello 0\n"
        assert time.monotonic() - t0 < 10  # freed by the 1.5 s I/O limit, not by anything slower
        stalled.close()
    finally:
        proc.terminate()
        proc.wait(10)
    text = log.read_text()
    assert "client silent for 2 s mid-request; connection closed" in text  # one line, no traceback
    assert "Traceback" not in text


def test_the_stock_threaded_worker_hangs_on_the_same_client(tmp_path):
    """The control: without the limit, the only thread waits for the rest of the request for ever."""
    proc, port, _ = _gunicorn(tmp_path, "--worker-class", "gthread")
    try:
        stalled = _stall(port, HALF_HEADERS)
        with pytest.raises(requests.ReadTimeout):
            requests.get(f"http://127.0.0.1:{port}/", timeout=4)
        stalled.close()
    finally:
        proc.terminate()
        proc.wait(10)
