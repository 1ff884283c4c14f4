"""API throttling (portal/throttling.py) on both cache paths — local memory and a real Redis — and the cache
backend that keeps one Redis client per pool (portal/cache.py)."""

from __future__ import annotations

import uuid

import pytest
from django.core.cache import caches
from rest_framework.test import APIClient

from portal.accounts.models import ApiToken
from portal.rates import parse_rate
from portal.throttling import Budget, PrincipalThrottle, count_hits

REDIS_URL = "redis://127.0.0.1:6379/10"


@pytest.fixture(params=["locmem", "redis"])
def cache_kind(request, settings):
    """The default cache as development (local memory) or production (Redis, a key prefix of its own)."""
    if request.param == "redis":
        settings.CACHES = {"default": {"BACKEND": "portal.cache.PooledRedisCache", "LOCATION": REDIS_URL,
                                       "KEY_PREFIX": f"test-{uuid.uuid4().hex}"}}
    else:
        settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                                       "LOCATION": uuid.uuid4().hex}}
    yield request.param
    caches["default"].clear() if request.param == "locmem" else None


def test_parse_rate_reads_drf_style_rates_and_names_a_bad_one():
    assert parse_rate("3000/min") == (3000, 60)
    assert parse_rate("7/second") == (7, 1)
    assert parse_rate("100/hour") == (100, 3600)
    assert parse_rate("5/d") == (5, 86400)
    with pytest.raises(ValueError, match="'often/min'"):
        parse_rate("often/min")
    with pytest.raises(ValueError, match="'5/fortnight'"):
        parse_rate("5/fortnight")


def test_counts_are_shared_per_budget_and_windowed(cache_kind):
    a, b = Budget("token", "a", 10, 60), Budget("token", "b", 10, 60)
    t = 6000.0  # the start of a window
    assert count_hits([a, b], t) == [(1, 0), (1, 0)]
    assert count_hits([a], t + 30) == [(2, 0)]
    assert count_hits([a, b], t + 61) == [(1, 2), (1, 1)]  # next window: the previous one's counts come along


@pytest.mark.django_db
def test_a_token_gets_exactly_its_budget_then_429_with_retry_after(cache_kind, user, settings):
    settings.LOCUS_THROTTLE_RATES = {"anon": "1000/min", "user": "1000/min", "token": "3/min", "worker": "1000/min"}
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {ApiToken.issue(user, 'a')[1]}")
    assert [client.get("/api/v1/jobs/").status_code for _ in range(3)] == [200] * 3
    refused = client.get("/api/v1/jobs/")
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "throttled"
    assert 1 <= int(refused["Retry-After"]) <= 120


class _Request:
    def __init__(self, user, auth):
        self.user, self.auth, self.META = user, auth, {"REMOTE_ADDR": "10.1.2.3"}


@pytest.mark.django_db
def test_the_sliding_window_forgets_gradually_and_retry_after_is_honest(cache_kind, user, settings, monkeypatch):
    """10/min: a full window, then the next: the previous window's 10 weigh 10·(1 − elapsed)."""
    settings.LOCUS_THROTTLE_RATES = {"user": "10/min"}
    clock = {"now": 60_000.0 + 50}  # 50 s into a window
    monkeypatch.setattr("portal.throttling.time.time", lambda: clock["now"])
    request = _Request(user, None)

    def ask() -> tuple[bool, float | None]:
        throttle = PrincipalThrottle()
        return throttle.allow_request(request, None), throttle.wait()

    assert [ask()[0] for _ in range(10)] == [True] * 10
    allowed, wait = ask()
    assert not allowed and wait is not None
    clock["now"] = 60_060.0 + 12  # 1/5 into the next window: 0 + 11 × 0.8 = 8.8, room for one
    assert ask()[0] is True  # 1 + 8.8 = 9.8
    allowed, wait = ask()  # 2 + 8.8 = 10.8 > 10
    assert not allowed
    clock["now"] += wait  # the throttle's own Retry-After: the next request must fit
    assert ask()[0] is True


def test_the_redis_cache_keeps_one_client_per_pool_and_still_works(settings):
    settings.CACHES = {"default": {"BACKEND": "portal.cache.PooledRedisCache", "LOCATION": REDIS_URL,
                                   "KEY_PREFIX": f"test-{uuid.uuid4().hex}"}}
    cache = caches["default"]
    client = cache._cache.get_client(write=True)
    assert cache._cache.get_client() is client and cache._cache.get_client(write=True) is client
    cache.set("n", 1, 30)
    assert cache.incr("n") == 2
    cache.set("obj", {"a": [1, 2]}, 30)
    assert cache.get("obj") == {"a": [1, 2]}
    assert cache.get_many(["n", "obj", "missing"]) == {"n": 2, "obj": {"a": [1, 2]}}
    cache.delete_many(["n", "obj"])
    assert cache.get("n") is None
