"""Django's Redis cache, keeping one Redis client per connection pool instead of building one per call.

Django's `RedisCacheClient.get_client` constructs a new `redis.Redis` for every cache operation, and each
construction fills a table of ~170 response callbacks: about 0.1 ms of CPU per call, several per API request
(throttle counters, log-in counters). A `redis.Redis` over a shared pool is thread-safe, so one will do.
Selected in settings when `CACHE_URL` is a redis:// URL.
"""

from __future__ import annotations

from django.core.cache.backends.redis import RedisCache, RedisCacheClient


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
