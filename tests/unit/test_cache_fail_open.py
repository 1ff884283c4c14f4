"""The abuse counters' cache (portal/cache.py): on the broker's Redis it clears only its own keys, and when
Redis cannot be reached the portal keeps answering (the counters fail open) instead of failing every call."""

from __future__ import annotations

import logging
import socket
import uuid

import pytest
import redis
from django.core.cache import caches
from django.test import Client

import portal.cache

pytestmark = pytest.mark.django_db
REDIS_URL = "redis://127.0.0.1:6379/9"
PASSWORD = "Spectral-Lattice-42"


def redis_cache(location: str, prefix: str = "locus-cache") -> dict:
    return {"default": {"BACKEND": "portal.cache.PooledRedisCache", "LOCATION": location, "KEY_PREFIX": prefix,
                        "OPTIONS": {"socket_connect_timeout": 1.0, "socket_timeout": 1.0}}}


def test_clear_removes_the_caches_keys_and_leaves_the_brokers(settings):
    server = redis.Redis.from_url(REDIS_URL)
    server.flushdb()
    server.rpush("gpu.8", b"job message")  # what Celery keeps in the same database
    server.set("_kombu.binding.cpu", b"binding")
    settings.CACHES = redis_cache(REDIS_URL)
    caches["default"].set("throttle:user:1:42", 7)
    assert caches["default"].get("throttle:user:1:42") == 7
    caches["default"].clear()
    assert caches["default"].get("throttle:user:1:42") is None
    assert server.llen("gpu.8") == 1 and server.get("_kombu.binding.cpu") == b"binding"
    server.flushdb()


@pytest.fixture
def dead_redis(settings, monkeypatch):
    """The cache points at a port where nothing listens (Redis down); warnings are not rate-limited."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings.CACHES = redis_cache(f"redis://127.0.0.1:{port}/0", prefix=uuid.uuid4().hex)
    monkeypatch.setattr(portal.cache, "_last_warning", -1e9)


def test_without_redis_the_api_login_and_signup_still_answer(dead_redis, api, user, caplog):
    caplog.set_level(logging.WARNING, logger="portal.cache")
    assert api.get("/api/v1/jobs/").status_code == 200
    assert "cache unreachable" in caplog.text and "API requests not counted" in caplog.text

    browser = Client()
    wrong = browser.post("/accounts/login/", {"username": user.username, "password": "not it"})
    assert wrong.status_code == 200 and b"correct username and password" in wrong.content
    right = browser.post("/accounts/login/", {"username": user.username, "password": "pw-alice"})
    assert right.status_code == 302
    signup = Client().post("/accounts/signup/", {"username": "maria", "email": "maria@lab.example.org",
                                                 "password1": PASSWORD, "password2": PASSWORD, "institution": ""})
    assert signup.status_code in (200, 302) and signup.status_code != 500
