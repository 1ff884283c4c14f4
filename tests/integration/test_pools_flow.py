"""Institution pools end to end: real agents on Redis, the live portal, the portal's beat running the sweep."""

from jobs import services
from jobs.models import Institution, Job, Membership, Worker
from tests.integration.conftest import submit, wait_for_status, wait_until


def test_a_pool_agent_takes_its_pool_job_before_an_older_shared_one(portal, user, other_user, user_session,
                                                                    start_agent):
    lab = Institution.objects.create(slug="lab", name="Lab")
    Membership.objects.create(user=user, institution=lab)
    outsider, _ = services.submit(other_user, application="diagnostics", entrypoint="selftest")

    pooled: list[str] = []

    def queue_pool_jobs(name: str) -> None:
        """The pool worker exists (so the pool does), its agent is not running yet: all three jobs wait."""
        for _ in range(2):
            pooled.append(submit(user_session))
        assert {Job.objects.get(pk=p).queue for p in pooled} == {"pool.lab.cpu"}

    start_agent(token={"institution": lab, "pools": ["lab"]}, before_start=queue_pool_jobs)
    for job_id in pooled:
        wait_for_status(user_session, job_id, {"succeeded"})
    wait_until(lambda: Job.objects.get(pk=outsider.pk).status == "succeeded", 90, what="the shared job")
    shared_start = Job.objects.get(pk=outsider.pk).attempts.get().started_at
    # Both pool jobs before the older shared one: priority order, not round robin (which would alternate).
    assert all(Job.objects.get(pk=p).attempts.get().started_at < shared_start for p in pooled)

def test_the_beat_spills_an_unclaimed_pool_job_to_a_shared_agent(portal, user, user_session, start_agent,
                                                                  portal_celery):
    lab = Institution.objects.create(slug="lab", name="Lab", pool_spillover_seconds=1)
    Membership.objects.create(user=user, institution=lab)
    # The pool exists (an enabled worker serves it) but its machine is off: nobody consumes pool.lab.cpu.
    Worker.objects.create(name="lab-pc-off", institution=lab, pools=["lab"],
                          capabilities={"cpu_count": 4, "memory_gb": 8, "gpus": []})
    shared = start_agent()
    job_id = submit(user_session)
    assert Job.objects.get(pk=job_id).queue == "pool.lab.cpu"
    job = wait_for_status(user_session, job_id, {"succeeded", "failed"}, timeout=120)
    assert job["status"] == "succeeded"
    kinds = [e["kind"] for e in job["events"] if e["kind"] not in ("waiting", "email_sent")]
    assert kinds == ["submitted", "spilled_over", "claimed", "succeeded"], kinds
    waiting = [e["message"] for e in job["events"] if e["kind"] == "waiting"]
    assert all("moves to the shared queue cpu after 1 s" in m for m in waiting)
    moved = Job.objects.get(pk=job_id)
    assert moved.queue == "cpu" and moved.attempts.get().worker.name == "agent-1"
    assert shared.alive()
