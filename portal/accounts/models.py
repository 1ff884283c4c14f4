"""A user's profile and personal API tokens."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from jobs.models import Institution, Job, hash_token, new_token


class Profile(models.Model):
    """Per-user preferences and the sign-up record. `notify` is the default notification choice for new jobs.

    A self-registered account starts inactive (`user.is_active` False, `approved_at` empty) until staff or
    an admin of `requested_institution` approves it (`portal.accounts.services.approve`).
    """

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="profile")
    notify = models.CharField(max_length=10, choices=Job.Notify.choices, default=Job.Notify.LONG)
    requested_institution = models.ForeignKey(Institution, null=True, blank=True, on_delete=models.SET_NULL,
                                              related_name="+")
    signup_note = models.CharField(max_length=500, blank=True)
    quota_bytes = models.BigIntegerField(null=True, blank=True,
                                         help_text="Storage quota in bytes; empty: the site default (LOCUS_USER_QUOTA_BYTES)")
    approved_at = models.DateTimeField(null=True, blank=True)
    approved_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="+")

    @property
    def is_pending(self) -> bool:
        return not self.user.is_active and self.approved_at is None


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
