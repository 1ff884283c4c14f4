"""The cache that holds the abuse counters (API throttling, log-in failures, sign-ups), and how they fail.

`PooledRedisCache` is Django's Redis cache keeping one Redis client per connection pool instead of building
one per call: Django's `RedisCacheClient.get_client` constructs a new `redis.Redis` for every operation, and
each construction fills a table of ~170 response callbacks (about 0.1 ms of CPU per call, several per API
request). A `redis.Redis` over a shared pool is thread-safe, so one will do. Selected in settings when the
cache is on Redis — `CACHE_URL`, or by default the broker's Redis, which it may share: so `clear()` removes
only the cache's own keys, never the database.

The counters fail open: when the cache server cannot be reached, requests are let through (and a warning
logged, at most once a minute) — an outage of Redis must not take the portal and the worker API down with it.
"""

from __future__ import annotations

import logging
import time

import redis
from django.core.cache.backends.redis import RedisCache, RedisCacheClient

log = logging.getLogger("portal.cache")
UNAVAILABLE = (redis.exceptions.RedisError, OSError)  # what a cache call raises when the server is away
_last_warning = 0.0


def counters_unavailable(exc: BaseException, what: str) -> None:
    """Log (once a minute at most) that abuse counters are skipped because the cache is unreachable."""
    global _last_warning
    now = time.monotonic()
    if now - _last_warning >= 60:
        _last_warning = now
        log.warning("cache unreachable (%s): %s not counted until it is back", type(exc).__name__, what)


class _PooledClient(RedisCacheClient):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._clients: dict[int, object] = {}  # by id() of the pool; pools live as long as this object

    def get_client(self, key=None, *, write=False):
        pool = self._get_connection_pool(write)  # Django's choice: the primary, or a random replica for reads
        client = self._clients.get(id(pool))
        if client is None:
            client = self._clients[id(pool)] = self._client(connection_pool=pool)
        return client


class PooledRedisCache(RedisCache):
    def __init__(self, server, params):
        super().__init__(server, params)
        self._class = _PooledClient

    def clear(self) -> bool:
        """Delete this cache's keys only (the Redis database may be the broker's: no FLUSHDB)."""
        client = self._cache.get_client(write=True)
        # Django's keys are "<KEY_PREFIX>:<version>:<key>"; Celery's never start with the prefix and a colon.
        for batch in _batched(client.scan_iter(match=f"{self.key_prefix}:*", count=1000), 1000):
            client.delete(*batch)
        return True


def _batched(items, n: int):
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch
