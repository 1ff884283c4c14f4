"""When a job's end is emailed to its owner: the preference's values, their wording, and the rule.

The default (for accounts that never chose, and new ones) is `LONG`: an email when a job fails, or when it took
longer than `LOCUS_NOTIFY_LONG_JOB_MINUTES` from submission to its end (queue time included: that is how long
its owner waited), so that a quick job watched on its page sends nothing. `always` still emails every end.

"""

from __future__ import annotations

from django.conf import settings

from jobs.models import Job

LONG: str = Job.Notify.LONG
DEFAULT = LONG
VALUES: list[str] = list(dict.fromkeys([LONG, *Job.Notify.values]))


def long_minutes() -> float:
    return float(settings.LOCUS_NOTIFY_LONG_JOB_MINUTES)


def _minutes() -> str:
    return f"{long_minutes():g} min"


def job_choices() -> list[tuple[str, str]]:
    """The new-job form's radio buttons, the default first."""
    return [(LONG, f"Email me if it fails or takes over {_minutes()}"), (Job.Notify.ALWAYS, "Email me when it ends"),
            (Job.Notify.FAILURE, "Email me only if it fails"), (Job.Notify.NEVER, "No email")]


def profile_choices() -> list[tuple[str, str]]:
    """The profile page's default for new jobs."""
    return [(LONG, f"Email me when a job fails or takes over {_minutes()} (from submission to its end)"),
            (Job.Notify.ALWAYS, "Email me whenever a job ends"),
            (Job.Notify.FAILURE, "Email me only when a job fails"),
            (Job.Notify.NEVER, "Never email me about jobs")]


def label(value: str) -> str:
    """How the job page names a job's choice."""
    return {LONG: f"email if it fails or takes over {_minutes()}", Job.Notify.ALWAYS: "email when it ends",
            Job.Notify.FAILURE: "email only if it fails", Job.Notify.NEVER: "no email"}.get(value, value)


def took_long(job: Job) -> bool:
    """Whether the job took at least LOCUS_NOTIFY_LONG_JOB_MINUTES from submission to its end."""
    if job.finished_at is None or job.created_at is None:
        return False
    return (job.finished_at - job.created_at).total_seconds() >= 60.0 * long_minutes()


def wants_email(job: Job) -> bool:
    """Whether the end of `job` (terminal) is emailed to its owner, by the job's own choice."""
    if job.notify == Job.Notify.NEVER or not job.owner.email:
        return False
    if job.notify == Job.Notify.ALWAYS or job.status == Job.Status.FAILED:
        return True  # `failure` and `long` both tell of failures
    return job.notify == LONG and took_long(job)
