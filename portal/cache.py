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
        self._clients: dict[int, object] = {}

    def get_client(self, key=None, *, write=False):
        index = self._get_connection_pool_index(write)  # the primary, or a random replica for reads
        client = self._clients.get(index)
        if client is None:
            if index not in self._pools:
                self._pools[index] = self._pool_class.from_url(self._servers[index], **self._pool_options)
            client = self._clients[index] = self._client(connection_pool=self._pools[index])
        return client


class PooledRedisCache(RedisCache):
    def __init__(self, server, params):
        super().__init__(server, params)
        self._class = _PooledClient
