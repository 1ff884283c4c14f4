"""The portal-side Celery app: sends job ids to hardware queues, runs the notify and maintenance queues.

Job queues are consumed by the Django-free worker agent (`workers/`), which registers the task
`locus.run_job`; the portal only ever sends it by name, carrying the job id alone (design §4).
Configuration lives in `portal.settings` under the `CELERY_` prefix.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

app = Celery("locus")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["jobs", "portal.accounts"])
