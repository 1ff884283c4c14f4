"""The selftest after enrollment, end to end: real agents, Redis, the live portal. The job pinned to a new
worker runs there and nowhere else, even when another agent receives its doorbell."""

from jobs import dispatch
from jobs.models import Job, Worker
from tests.integration.conftest import wait_until


def test_a_new_workers_selftest_runs_on_it_and_its_report_reaches_the_workers_api(portal, settings, start_agent,
                                                                                  staff):
    from rest_framework.test import APIClient

    settings.LOCUS_SELFTEST_ON_ENROLL = True
    first = start_agent()
    w1 = wait_until(lambda: Worker.objects.filter(name="agent-1").first(), what="agent-1 enrolled")
    wait_until(lambda: Job.objects.get(pk=w1.selftest_job_id).status == "succeeded", 120,
               what="agent-1's own selftest")

    def ring_the_wrong_door(name: str) -> None:
        """agent-2 is enrolled but not started: send its selftest's doorbell to `cpu`, which agent-1 consumes."""
        job = Worker.objects.get(name=name).selftest_job
        assert job.status == "queued" and job.queue == f"worker.{job.pinned_worker_id}"
        assert dispatch.send_job(job.pk, "cpu")
        wait_until(lambda: f"job {job.pk}: not claimable" in first.output(), 60,
                   what="agent-1 to receive and drop the pinned job's doorbell")

    start_agent(before_start=ring_the_wrong_door)
    w2 = Worker.objects.get(name="agent-2")
    job = wait_until(lambda: (j := Job.objects.get(pk=w2.selftest_job_id)).is_terminal and j, 120,
                     what="agent-2's selftest")
    assert job.status == "succeeded", job.reason
    assert [a.worker_id for a in job.attempts.all()] == [w2.pk]  # one attempt, on agent-2 only
    assert "pinned to another worker" in first.output()
    w2.refresh_from_db()
    report = w2.selftest_report
    assert report["passed"] and report["job"] == str(job.pk) and report["problems"] == []
    assert report["cpu_count"] >= 1 and report["device"].startswith("cpu") and report["gflops"] > 0

    admin = APIClient()
    admin.force_authenticate(staff)
    listed = {w["name"]: w for w in admin.get("/api/v1/workers/").json()}
    assert listed["agent-2"]["selftest"]["result"] == "passed"
    assert listed["agent-2"]["selftest"]["report"]["hostname"] == report["hostname"]
    assert job.attempts.get().cpu_seconds > 0  # measured by the agent from the child's rusage
