"""Reusable fixtures for reliability tests: throw-away servers that a test may crash and restart.

`private_redis` and `private_postgres` run on free ports in the test's temp dir; the machine's shared
PostgreSQL and Redis are never touched. `chaos` is a whole deployment on them (bench/trials.py), shared by
the module's trials so that it starts once.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bench.stack import PrivatePostgres, PrivateRedis, temp_workdir


def _have_postgres_server() -> bool:
    return bool(sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb")) or shutil.which("initdb"))


needs_servers = pytest.mark.skipif(
    not (_have_postgres_server() and shutil.which("redis-server")),
    reason="needs the PostgreSQL server binaries (initdb, pg_ctl) and redis-server",
)


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/reliability" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
            item.add_marker(needs_servers)


@pytest.fixture
def private_redis(tmp_path):
    """A redis-server of this test's own (no persistence); `.restart()` loses every message, like a crash."""
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def private_postgres():
    """A PostgreSQL cluster of this test's own (run as the `postgres` OS user); `.restart()` drops clients."""
    workdir = temp_workdir("locus-pg-")
    server = PrivatePostgres(workdir)
    server.init()
    server.start()
    yield server
    server.destroy()
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def chaos(request):
    """Portal + portal Celery + two worker agents on a private PostgreSQL and Redis, short leases.

    Its work dir (every process's log) is kept when a test failed, and named in the output."""
    from bench.trials import Chaos

    failed_before = request.session.testsfailed
    deployment = Chaos(lease_s=5, sweep_s=1.0, redispatch_s=5.0, agents=2, visibility_s=4)
    yield deployment
    deployment.close()
    if request.session.testsfailed > failed_before:
        print(f"\nchaos logs kept in {deployment.workdir / 'stack'}")
    else:
        shutil.rmtree(deployment.workdir, ignore_errors=True)
