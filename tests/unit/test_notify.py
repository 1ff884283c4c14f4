"""The job-finished email (text and HTML), and submission's broker message riding on the transaction."""

from __future__ import annotations

import base64
import json

import pytest
import redis
from django.core import mail
from django.db import transaction

from jobs import services
from jobs.models import Job
from tests.unit.test_worker_api import call, claim, put_output

pytestmark = pytest.mark.django_db

# Worker-reported text reaches the email: quotes and angle brackets are what real error lines hold.
REASON = "ValueError: 'roi.x0' must be < 512 & >= 0 <img src=x onerror=alert(1)>"


def finish(api, worker, capture, *, exit_code: int, reason: str = "", outputs=()) -> str:
    job_id = api.post("/api/v1/jobs/", {"application": "diagnostics", "entrypoint": "selftest", "notify": "always"},
                      format="json").json()["id"]
    body = claim(worker, job_id).json()
    outs = [put_output(body, worker, name, data) for name, data in outputs]
    with capture(execute=True):
        call(worker, body, "complete", {"exit_code": exit_code, "failure_class": "algorithm" if exit_code else None,
                                        "reason": reason, "outputs": outs})
    return job_id


def test_job_finished_email_has_a_text_body_and_an_html_alternative(api, worker, user, settings,
                                                                    django_capture_on_commit_callbacks):
    settings.PUBLIC_URL = "https://locus.example.org"
    job_id = finish(api, worker, django_capture_on_commit_callbacks, exit_code=0,
                    outputs=[("report.json", b'{"ok": true}')])
    (message,) = mail.outbox
    assert message.to == [user.email] and "succeeded" in message.subject
    url = f"https://locus.example.org/jobs/{job_id}/"
    assert url in message.body and "report.json" in message.body and "<p>" not in message.body
    ((html, mimetype),) = message.alternatives
    assert mimetype == "text/html"
    assert f'<a href="{url}">' in html and "<strong>succeeded</strong>" in html and "<li>report.json" in html
    # On the wire: one multipart/alternative with the plain part first (clients show the last they can).
    mime = message.message()
    assert mime.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in mime.get_payload()] == ["text/plain", "text/html"]


def test_failure_reason_is_escaped_in_html_and_verbatim_in_text_and_subject(api, worker,
                                                                          django_capture_on_commit_callbacks):
    finish(api, worker, django_capture_on_commit_callbacks, exit_code=1, reason=REASON)
    job = Job.objects.get()
    assert job.status == "failed" and REASON in job.reason
    (message,) = mail.outbox
    ((html, _),) = message.alternatives
    assert "<img" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert REASON in message.body  # plain text is not HTML: no &lt; or &#x27; for the user to decode
    assert "&#x27;" not in message.subject and "&lt;" not in message.subject


def test_failure_email_is_sent_when_the_reason_is_a_multi_line_traceback(api, worker, user,
                                                                         django_capture_on_commit_callbacks):
    reason = "Traceback (most recent call last):\n  File x\r\nBcc: someone@example.org"
    finish(api, worker, django_capture_on_commit_callbacks, exit_code=1, reason=reason)
    (message,) = mail.outbox  # a newline in the subject header used to make every send (and retry) fail
    assert message.subject.startswith("[Locus] diagnostics selftest failed: Traceback (most recent call last):")
    assert "\n" not in message.subject and "\r" not in message.subject
    assert message.recipients() == [user.email]  # the "Bcc:" line stayed text, not a header
    assert reason.replace("\r\n", "\n") in message.body.replace("\r\n", "\n")


def _broker_job_ids(settings, queue: str) -> list[str]:
    """Job ids in the Celery messages waiting on `queue` in the test Redis (kombu's JSON envelope)."""
    ids = []
    for raw in redis.Redis.from_url(settings.CELERY_BROKER_URL).lrange(queue, 0, -1):
        envelope = json.loads(raw)
        body = envelope["body"]
        if envelope["properties"].get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        ids += [str(a) for a in args]
    return ids


def test_submission_in_a_rolled_back_transaction_leaves_no_job_and_sends_no_message(
        worker, user, settings, django_capture_on_commit_callbacks):
    from portal.celery import app

    app.set_current()  # dispatch sends through Celery's current app; an agent test may have replaced it
    # Pinned to a worker: its own queue (worker.<id>) is read by nobody else, so the broker check is exact.
    pinned = worker.worker
    with (django_capture_on_commit_callbacks(execute=True) as callbacks, pytest.raises(RuntimeError),
          transaction.atomic()):
        job, _ = services.submit(user, application="diagnostics", entrypoint="selftest", pinned_worker=pinned)
        raise RuntimeError("the caller's later step fails")
    assert callbacks == []
    assert not Job.objects.filter(pk=job.pk).exists()
    assert str(job.pk) not in _broker_job_ids(settings, pinned.queue)

    # The same call committed: exactly one message, sent after commit (the control for the check above).
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        with transaction.atomic():
            kept, _ = services.submit(user, application="diagnostics", entrypoint="selftest",
                                      pinned_worker=pinned)
        assert _broker_job_ids(settings, pinned.queue).count(str(kept.pk)) == 0  # not before commit
    assert len(callbacks) == 1
    assert _broker_job_ids(settings, pinned.queue).count(str(kept.pk)) == 1
    assert Job.objects.get(pk=kept.pk).dispatched_at is not None
