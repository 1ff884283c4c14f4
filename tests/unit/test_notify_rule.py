"""The default job notification (jobs/notifications.py): an email when a job fails or took longer than
LOCUS_NOTIFY_LONG_JOB_MINUTES from submission to its end, not for every quick success; `always`, `failure`
and `never` keep their meaning; new accounts and accounts without a profile get the new default."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core import mail
from django.test import Client
from django.utils import timezone

from jobs import notifications, services
from jobs.models import Job
from jobs.tasks import send_job_email
from portal.accounts import services as accounts
from portal.accounts.models import Profile

pytestmark = pytest.mark.django_db


def ended(user, *, notify: str | None, status: str, minutes: float) -> Job:
    """A job of `user` that ended with `status`, `minutes` after it was submitted."""
    job, _ = services.submit(user, application="diagnostics", entrypoint="selftest", notify=notify)
    now = timezone.now()
    Job.objects.filter(pk=job.pk).update(status=status, created_at=now - timedelta(minutes=minutes), finished_at=now)
    job.refresh_from_db()
    return job


@pytest.mark.parametrize(("notify", "status", "minutes", "emailed"), [
    (None, "succeeded", 1, False),  # the default: a quick success watched on its page sends nothing
    (None, "succeeded", 6, True),  # ... one that took longer than 5 minutes is worth an email
    (None, "cancelled", 6, True),
    (None, "failed", 0.1, True),  # ... and every failure is
    ("always", "succeeded", 0.1, True),
    ("failure", "succeeded", 60, False),
    ("failure", "failed", 0.1, True),
    ("never", "failed", 60, False),
])
def test_who_gets_an_email_when_a_job_ends(user, settings, notify, status, minutes, emailed):
    settings.LOCUS_NOTIFY_LONG_JOB_MINUTES = 5
    job = ended(user, notify=notify, status=status, minutes=minutes)
    assert job.notify == (notify or notifications.LONG)
    assert notifications.wants_email(job) is emailed
    assert send_job_email.run(str(job.pk)) is emailed
    assert len(mail.outbox) == int(emailed)


def test_the_threshold_is_a_setting_and_zero_emails_every_end(user, settings):
    job = ended(user, notify=None, status="succeeded", minutes=2)
    settings.LOCUS_NOTIFY_LONG_JOB_MINUTES = 1
    assert notifications.wants_email(job)
    settings.LOCUS_NOTIFY_LONG_JOB_MINUTES = 30
    assert not notifications.wants_email(job)
    settings.LOCUS_NOTIFY_LONG_JOB_MINUTES = 0
    assert notifications.wants_email(ended(user, notify=None, status="succeeded", minutes=0))


def test_new_accounts_default_to_failures_and_long_jobs_and_may_choose_otherwise(user, settings):
    settings.LOCUS_NOTIFY_LONG_JOB_MINUTES = 5
    assert not Profile.objects.filter(user=user).exists()
    assert accounts.profile_of(user).notify == notifications.LONG  # created on first use with the new default
    signed_up = accounts.sign_up(username="maria", email="maria@example.org", password="Spectral-Lattice-42")
    assert signed_up.profile.notify == notifications.LONG
    client = Client()
    client.force_login(user)
    page = client.get("/account/").content.decode()
    assert 'value="long"' in page and "Email me when a job fails or takes over 5 min" in page
    form = client.get("/jobs/new/?application=diagnostics&entrypoint=selftest").content.decode()
    assert 'value="long" checked' in form and "Email me if it fails or takes over 5 min" in form
    client.post("/account/", {"email": user.email, "notify": "always"})
    assert Profile.objects.get(user=user).notify == "always"
    client.post("/jobs/new/?application=diagnostics&entrypoint=selftest", {"notify": "long"})
    job = Job.objects.get(owner=user)
    assert job.notify == "long"
    assert "Notification: email if it fails or takes over 5 min" in client.get(f"/jobs/{job.pk}/").content.decode()


def test_the_api_takes_the_new_choice_and_refuses_an_unknown_one(api):
    ok = api.post("/api/v1/jobs/", {"application": "diagnostics", "entrypoint": "selftest", "notify": "long"},
                  format="json")
    assert ok.status_code == 201 and ok.json()["notify"] == "long"
    bad = api.post("/api/v1/jobs/", {"application": "diagnostics", "entrypoint": "selftest", "notify": "sometimes"},
                   format="json")
    assert bad.status_code == 400
