"""Log-in with a failure counter: too many wrong passwords for one username, or from one address, lock
further attempts out for a while (answered 429), whatever the password.

Counters live in the default cache (Redis in production, see CACHE_URL), keyed by a hash of the username so
that no user name is stored in clear in the cache. A successful log-in clears the username's counter.
"""

from __future__ import annotations

import hashlib
import logging

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.core.cache import cache

from portal.accounts.usernames import canonical
from portal.cache import UNAVAILABLE, counters_unavailable

log = logging.getLogger(__name__)


def client_address(request) -> str:
    """The client's address as DRF's throttles see it (REST_FRAMEWORK NUM_PROXIES, env LOCUS_NUM_PROXIES):
    behind a proxy, REMOTE_ADDR is the proxy's, and every user would share one failure budget."""
    remote = request.META.get("REMOTE_ADDR", "")
    proxies = settings.REST_FRAMEWORK.get("NUM_PROXIES") or 0
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR")
    if not proxies or not forwarded:
        return remote
    addrs = [a.strip() for a in forwarded.split(",")]
    return addrs[-min(proxies, len(addrs))]


def _keys(request, username: str) -> list[str]:
    name = hashlib.sha256(canonical(username.strip()).encode()).hexdigest()[:32]
    ip = client_address(request)
    return [f"locus:login-fail:user:{name}", f"locus:login-fail:ip:{ip}"]


def _limits() -> list[int]:
    return [settings.LOCUS_LOGIN_MAX_FAILURES, settings.LOCUS_LOGIN_MAX_FAILURES_PER_IP]


class ThrottledLoginView(auth_views.LoginView):
    """django's LoginView, refusing (429) while a username or an address is over its failure budget."""

    def post(self, request, *args, **kwargs):
        username = request.POST.get("username", "")
        keys = _keys(request, username)
        try:
            counts = cache.get_many(keys)
        except UNAVAILABLE as exc:  # fail open: the password check still stands
            counters_unavailable(exc, "log-in failures")
            counts = {}
        if any(counts.get(key, 0) >= limit for key, limit in zip(keys, _limits(), strict=True)):
            log.warning("log-in refused: too many failures for this account or address")
            form = self.get_form()
            response = self.render_to_response(self.get_context_data(form=form, throttled=True))
            response.status_code = 429
            response["Retry-After"] = str(settings.LOCUS_LOGIN_LOCKOUT_SECONDS)
            return response
        return super().post(request, *args, **kwargs)

    def form_invalid(self, form):
        try:
            for key in _keys(self.request, self.request.POST.get("username", "")):
                # add() starts the window on the first failure; incr() keeps its expiry.
                if not cache.add(key, 1, timeout=settings.LOCUS_LOGIN_LOCKOUT_SECONDS):
                    try:
                        cache.incr(key)
                    except ValueError:  # expired between add() and incr()
                        cache.add(key, 1, timeout=settings.LOCUS_LOGIN_LOCKOUT_SECONDS)
        except UNAVAILABLE as exc:
            counters_unavailable(exc, "log-in failures")
        return super().form_invalid(form)

    def form_valid(self, form):
        try:
            cache.delete(_keys(self.request, self.request.POST.get("username", ""))[0])
        except UNAVAILABLE as exc:
            counters_unavailable(exc, "log-in failures")
        return super().form_valid(form)
