"""API throttling per principal: anonymous callers by IP, users by account, and each API or worker token.

Rates come from `settings.LOCUS_THROTTLE_RATES` (env `LOCUS_THROTTLE_<SCOPE>`, e.g. `3000/min`), read at
request time so tests and deployments can change them without re-importing DRF. The counters live in the
default cache: production should point `CACHE_URL` at Redis so that every gunicorn process shares them.

Every budget that applies to a request is counted and checked together, in one round trip to Redis: a
sliding-window estimate over two fixed windows (the current window's count plus the previous window's,
weighted by how much of it still overlaps the last `period`). DRF's stock throttle keeps a pickled list of
every request time per key and makes two round trips per budget, which cost a busy portal a millisecond of
CPU per request. Requests refused while over budget still count, so a client that keeps hammering stays
throttled until it pauses.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from rest_framework.throttling import BaseThrottle

from portal.cache import UNAVAILABLE, counters_unavailable
from portal.rates import parse_rate


@dataclass
class Budget:
    scope: str
    ident: str
    limit: int
    period: int

    def keys(self, now: float) -> tuple[str, str]:
        window = int(now // self.period)
        base = f"throttle:{self.scope}:{self.ident}"
        return f"{base}:{window}", f"{base}:{window - 1}"


def count_hits(budgets: list[Budget], now: float) -> list[tuple[int, int]]:
    """Add this request to each budget's current window; (current, previous) window counts per budget."""
    cache = caches["default"]
    if isinstance(cache, RedisCache):
        pipe = cache._cache.get_client(write=True).pipeline(transaction=False)
        for b in budgets:
            current, previous = (cache.make_and_validate_key(k) for k in b.keys(now))
            pipe.incr(current)
            pipe.expire(current, 2 * b.period)
            pipe.get(previous)
        replies = pipe.execute()
        return [(int(replies[3 * i]), int(replies[3 * i + 2] or 0)) for i in range(len(budgets))]
    counts = []
    for b in budgets:  # any other cache (local memory in development and tests): the same, a call at a time
        current, previous = b.keys(now)
        cache.add(current, 0, 2 * b.period)
        counts.append((cache.incr(current), int(cache.get(previous) or 0)))
    return counts


class PrincipalThrottle(BaseThrottle):
    """The budgets of whoever calls: `anon` (per address) when not signed in; `user` (all of a person's
    tokens and their browser session together) and `token` (one personal API token) for people; `worker`
    (one worker token) for agents."""

    def budgets(self, request) -> list[Budget]:
        from jobs.models import Worker, WorkerToken
        from portal.accounts.models import ApiToken

        user, auth = request.user, request.auth
        wanted: list[tuple[str, object]] = []
        if not (user and user.is_authenticated):
            wanted.append(("anon", self.get_ident(request)))
        elif not isinstance(user, Worker):
            wanted.append(("user", user.pk))
        if isinstance(auth, ApiToken):
            wanted.append(("token", auth.pk))
        elif isinstance(auth, WorkerToken):
            wanted.append(("worker", auth.pk))
        out = []
        for scope, ident in wanted:
            rate = settings.LOCUS_THROTTLE_RATES.get(scope)
            if rate:
                out.append(Budget(scope, str(ident), *parse_rate(rate)))
        return out

    def allow_request(self, request, view) -> bool:
        self._wait: float | None = None
        budgets = self.budgets(request)
        if not budgets:
            return True
        now = time.time()
        try:
            counts = count_hits(budgets, now)
        except UNAVAILABLE as exc:  # fail open: throttling is not worth an outage
            counters_unavailable(exc, "API requests")
            return True
        waits = []
        for b, (current, previous) in zip(budgets, counts, strict=True):
            elapsed = (now % b.period) / b.period  # fraction of the current window gone by
            if current + previous * (1 - elapsed) > b.limit:
                waits.append(self._wait_for(b, current, previous, elapsed))
        if waits:
            self._wait = max(waits)
            return False
        return True

    @staticmethod
    def _wait_for(b: Budget, current: int, previous: int, elapsed: float) -> float:
        """Seconds until one more request fits the budget, if the caller stops meanwhile."""
        left_in_window = (1 - elapsed) * b.period
        if current >= b.limit:  # into the next window, until this one's weight has fallen far enough
            t = left_in_window + b.period * max(0.0, 1 - (b.limit - 1) / current)
        else:  # previous · (1 − elapsed − t/period) + current + 1 ≤ limit, solved for t
            t = left_in_window - (b.limit - current - 1) / previous * b.period
        return max(1.0, math.ceil(t))

    def wait(self) -> float | None:
        return self._wait
