"""Settings for the test suite: real PostgreSQL and Redis (design §8), fast hashing, locmem email."""

import os
import tempfile

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/locus")
os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/15")
os.environ.setdefault("LOCUS_VAR_DIR", tempfile.mkdtemp(prefix="locus-test-var-"))

from portal.settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
# The live server's thread must not keep a connection open past a test (teardown drops the database).
DATABASES["default"]["CONN_MAX_AGE"] = 0  # noqa: F405
# Throttling is tested on purpose (tests/security) with its own low rates; elsewhere it must never bite.
LOCUS_THROTTLE_RATES = {scope: "1000000/min" for scope in LOCUS_THROTTLE_RATES}  # noqa: F405
# Tests keep the counters in memory (isolated per test); the broker's Redis database is flushed by fixtures.
# tests/unit/test_throttling.py and test_cache_fail_open.py use Redis on purpose.
if "CACHE_URL" not in os.environ:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
# The bundled models are registered by `migrate` elsewhere; tests that need them call register_bundled().
LOCUS_REGISTER_BUNDLED_MODELS = False
