"""API throttling per principal: anonymous callers by IP, users by account, and each API or worker token.

Rates come from `settings.LOCUS_THROTTLE_RATES` (env `LOCUS_THROTTLE_<SCOPE>`, e.g. `3000/min`), read at
request time so tests and deployments can change them without re-importing DRF. The counters live in the
default cache: production should point `CACHE_URL` at Redis so that every gunicorn process shares them.
"""

from __future__ import annotations

from django.conf import settings
from rest_framework.throttling import SimpleRateThrottle


class _ScopedThrottle(SimpleRateThrottle):
    """A SimpleRateThrottle whose rate is looked up in LOCUS_THROTTLE_RATES on every request."""

    def get_rate(self) -> str | None:
        return settings.LOCUS_THROTTLE_RATES.get(self.scope)

    def allow_request(self, request, view) -> bool:
        # The parent reads the rate once in __init__; re-read it so overridden settings take effect.
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        return super().allow_request(request, view)


class AnonThrottle(_ScopedThrottle):
    """Unauthenticated callers (enrollment, the schema), counted per client IP."""

    scope = "anon"

    def get_cache_key(self, request, view) -> str | None:
        if request.user and request.user.is_authenticated:
            return None
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class UserThrottle(_ScopedThrottle):
    """A person, over all their tokens and their browser session together."""

    scope = "user"

    def get_cache_key(self, request, view) -> str | None:
        from jobs.models import Worker

        user = request.user
        if not (user and user.is_authenticated) or isinstance(user, Worker):
            return None
        return self.cache_format % {"scope": self.scope, "ident": user.pk}


class TokenThrottle(_ScopedThrottle):
    """One personal API token: a runaway script is slowed before it exhausts its owner's whole budget."""

    scope = "token"

    def get_cache_key(self, request, view) -> str | None:
        from portal.accounts.models import ApiToken

        if not isinstance(request.auth, ApiToken):
            return None
        return self.cache_format % {"scope": self.scope, "ident": request.auth.pk}


class WorkerThrottle(_ScopedThrottle):
    """One worker token: agents poll, heartbeat and stream logs, so their budget is separate and larger."""

    scope = "worker"

    def get_cache_key(self, request, view) -> str | None:
        from jobs.models import WorkerToken

        if not isinstance(request.auth, WorkerToken):
            return None
        return self.cache_format % {"scope": self.scope, "ident": request.auth.pk}
