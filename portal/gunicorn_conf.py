"""gunicorn settings for the portal: `gunicorn -c python:portal.gunicorn_conf portal.wsgi`.

The image, the Helm chart and bench/stack.py all start the portal this way; command-line flags still win.

Threads, because agents long-poll `claim-next` for up to 30 s and a sync worker would sit out each poll.
A keep-alive longer than clients idle between calls (gunicorn's 2 s default races a client polling every
1–3 s, which then sees a reset). And a time limit on socket I/O: the stock threaded worker waits for the rest
of a request with no limit at all, so clients that vanish mid-request without a FIN or RST — a network
partition, a laptop closed during an upload, a slowloris — each pin a thread until none is left and the
portal stops answering. The chaos trials (bench/chaos.py) found exactly that after ~8 partitions.
"""

from __future__ import annotations

import logging
import os

from gunicorn.glogging import Logger
from gunicorn.workers.gthread import ThreadWorker

from portal.log_filters import RedactSecrets

threads = int(os.environ.get("LOCUS_WEB_THREADS", "8"))
keepalive = 75
worker_class = "portal.gunicorn_conf.IOTimeoutThreadWorker"
logger_class = "portal.gunicorn_conf.RedactingLogger"
# Longest silence tolerated inside one request or answer (between two packets, not for the whole transfer).
IO_TIMEOUT_S = float(os.environ.get("LOCUS_WEB_IO_TIMEOUT_S", "60"))


class RedactingLogger(Logger):
    """gunicorn's logger with tokens and signed transfer URLs masked (portal/log_filters.py). gunicorn logs
    through loggers of its own, outside Django's LOGGING: its access lines carry every request's path, and a
    transfer URL's path is its credential."""

    def setup(self, cfg) -> None:
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            if not any(isinstance(f, RedactSecrets) for f in log.filters):  # setup runs again on SIGHUP
                log.addFilter(RedactSecrets())


class _StalledClientLine(logging.Filter):
    """gunicorn logs a full traceback for any socket error it does not know; a stalled client gets one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], TimeoutError):
            record.msg, record.args = "client silent for %.0f s mid-request; connection closed", (IO_TIMEOUT_S,)
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


class IOTimeoutThreadWorker(ThreadWorker):
    """gunicorn's threaded worker, with `IO_TIMEOUT_S` on each request's socket reads and writes."""

    def init_process(self) -> None:
        self.log.error_log.addFilter(_StalledClientLine())
        super().init_process()

    def handle(self, conn):
        # The parent turns the socket blocking (no limit) before every request; limit it here, each time.
        conn.sock.settimeout(IO_TIMEOUT_S)
        return super().handle(conn)
