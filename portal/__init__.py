"""The Django project: settings, root URLs, the portal-side Celery app, accounts and the browser UI."""

from portal.celery import app as celery_app

__all__ = ["celery_app"]
