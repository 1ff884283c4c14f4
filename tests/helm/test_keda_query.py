"""The KEDA trigger's SQL, exactly as the chart renders it, against the real PostgreSQL test database."""

from __future__ import annotations

import pytest
from django.db import connection

from tests.helm.test_chart import keda_queues
from tests.helm.values_sets import GPU_ON, KEDA_ON, merge, of_kind

# (queue, status) -> how many jobs
JOBS = {
    ("gpu.16", "queued"): 2, ("gpu.16", "running"): 1, ("gpu.16", "succeeded"): 3, ("gpu.16", "cancelled"): 1,
    ("gpu.8", "running"): 1, ("gpu.8", "failed"): 2,
    ("cpu", "queued"): 1, ("cpu", "running"): 1, ("cpu", "succeeded"): 1,
    ("gpu.80", "queued"): 1, ("pool.mpi.gpu.80", "running"): 1, ("pool.other.gpu.80", "queued"): 4,
    ("gpu.24", "queued"): 5,
}
EXPECTED = {"cpu": 2, "gpu-16": 4, "mpi-a100": 2}  # queued + running on each pool's queues


@pytest.fixture
def jobs(user):
    from jobs.models import Job

    Job.objects.bulk_create([
        Job(owner=user, application="diagnostics", version="1.0", entrypoint="selftest", spec={}, queue=queue,
            status=status)
        for (queue, status), count in JOBS.items() for _ in range(count)
    ])


def test_keda_query_counts_queued_and_running_jobs_of_the_pools_queues(chart, jobs):
    docs = chart.template(merge(KEDA_ON, GPU_ON))
    counts = {}
    for scaled in of_kind(docs, "ScaledObject"):
        pool = scaled["metadata"]["labels"]["locus.io/pool"]
        query = scaled["spec"]["triggers"][0]["metadata"]["query"]
        with connection.cursor() as cursor:
            cursor.execute(query)
            (counts[pool],) = cursor.fetchone()
        expected = sum(n for (queue, status), n in JOBS.items()
                       if queue in keda_queues(scaled) and status in ("queued", "running"))
        assert counts[pool] == expected, pool
    assert counts == EXPECTED


def test_keda_query_is_zero_when_only_finished_jobs_remain(chart, user):
    from jobs.models import Job

    Job.objects.create(owner=user, application="diagnostics", version="1.0", entrypoint="selftest", spec={},
                       queue="gpu.16", status="succeeded")
    docs = chart.template(merge(KEDA_ON, GPU_ON))
    for scaled in of_kind(docs, "ScaledObject"):
        with connection.cursor() as cursor:
            cursor.execute(scaled["spec"]["triggers"][0]["metadata"]["query"])
            assert cursor.fetchone() == (0,)
