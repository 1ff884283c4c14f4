"""Mend rows that workers wrote before the worker API checked what they send (jobs.api.worker_contract).

Capabilities go into the contract's shape (numbers as finite numbers, GPUs as objects); CPU and GPU seconds
outside [0, 1e9] or not finite become 0 (never a plausible figure, and unbounded ones made the usage pages
fail); a failure class outside the three known ones becomes `algorithm`; a progress document over the
contract's size is dropped. Nothing is deleted.
"""

import json
import math

from django.db import migrations

from jobs.capabilities import normalise

MAX_SECONDS = 1e9
MAX_PROGRESS_BYTES = 64 * 1024
FAILURE_CLASSES = ("", "input", "algorithm", "infrastructure")


def _bad_seconds(value) -> bool:
    return value is None or not math.isfinite(value) or not 0 <= value <= MAX_SECONDS


def mend(apps, schema_editor):
    Worker = apps.get_model("jobs", "Worker")
    Attempt = apps.get_model("jobs", "Attempt")
    Job = apps.get_model("jobs", "Job")
    for worker in Worker.objects.only("id", "capabilities").iterator():
        caps = normalise(worker.capabilities)
        if caps != worker.capabilities:
            Worker.objects.filter(pk=worker.pk).update(capabilities=caps)
    for attempt in Attempt.objects.only("id", "cpu_seconds", "gpu_seconds", "failure_class").iterator():
        fields = {name: 0.0 for name in ("cpu_seconds", "gpu_seconds") if _bad_seconds(getattr(attempt, name))}
        if attempt.failure_class not in FAILURE_CLASSES:
            fields["failure_class"] = "algorithm"
        if fields:
            Attempt.objects.filter(pk=attempt.pk).update(**fields)
    for job in Job.objects.exclude(progress_detail={}).only("id", "progress_detail").iterator():
        if len(json.dumps(job.progress_detail, ensure_ascii=False).encode()) > MAX_PROGRESS_BYTES:
            Job.objects.filter(pk=job.pk).update(progress_detail={})


class Migration(migrations.Migration):

    dependencies = [
        ("jobs", "0006_upload_s3_parts"),
    ]

    operations = [
        migrations.RunPython(mend, migrations.RunPython.noop),
    ]
