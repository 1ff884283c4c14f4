"""A user's profile and personal API tokens."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from jobs.models import Job, hash_token, new_token


class Profile(models.Model):
    """Per-user preferences; `notify` is the default notification choice for new jobs."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="profile")
    notify = models.CharField(max_length=10, choices=Job.Notify.choices, default=Job.Notify.ALWAYS)


class ApiToken(models.Model):
    """A personal token for the API and the Python client. Only its hash is stored; shown once at creation."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=12)
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    @classmethod
    def issue(cls, user, name: str) -> tuple[ApiToken, str]:
        raw = new_token("lus")
        return cls.objects.create(user=user, name=name, prefix=raw[:10], key_hash=hash_token(raw)), raw
