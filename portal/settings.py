"""Settings for every deployment, read from the environment (django-environ).

With no environment at all, Locus runs *embedded*: SQLite, a file-system Celery broker, media and email
files under `var/`, and a secret key generated once into `var/`. Setting `LOCUS_MODE=production` makes the
missing production values fatal at start-up instead of silently embedded (design §7).
"""

from __future__ import annotations

import secrets
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured
from kombu import Queue

from algorithms import registry
from algorithms.registry import GPU_TIERS_GB
from portal.rates import parse_rate

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env()

PRODUCTION = env.str("LOCUS_MODE", default="embedded") == "production"
VAR_DIR = Path(env.str("LOCUS_VAR_DIR", default=str(BASE_DIR / "var")))


def _secret(name: str, *, generate: bool = False) -> str | None:
    """A secret from `NAME`, or the file named by `NAME_FILE`; embedded mode may generate it into var/."""
    if value := env.str(name, default=""):
        return value
    if path := env.str(f"{name}_FILE", default=""):
        return Path(path).read_text().strip()
    if PRODUCTION or not generate:
        return None
    stored = VAR_DIR / name.lower()
    if not stored.exists():
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        stored.write_text(secrets.token_urlsafe(50))
        stored.chmod(0o600)
    return stored.read_text().strip()


def _required(name: str) -> str:
    value = env.str(name, default="") or _secret(name)
    if not value:
        raise ImproperlyConfigured(f"{name} must be set when LOCUS_MODE=production")
    return value


SECRET_KEY = _required("SECRET_KEY") if PRODUCTION else _secret("SECRET_KEY", generate=True)
DEBUG = env.bool("DEBUG", default=not PRODUCTION)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=[] if PRODUCTION else ["localhost", "127.0.0.1", "[::1]"])
if PRODUCTION and not ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS must be set when LOCUS_MODE=production")
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
# The URL users reach the portal at; used in emails and in the worker's download links.
PUBLIC_URL = env.str("LOCUS_PUBLIC_URL", default="http://127.0.0.1:8000").rstrip("/")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Redoc served from the portal itself (the API docs' policy allows no CDN)
    "portal.accounts",
    "jobs",
    "portal",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "portal.csp.ContentSecurityPolicyMiddleware",
    # Query strings with NUL, oversized JSON bodies: refused before a view (or the database) sees them.
    "portal.request_checks.RequestChecks",
    # Static files straight from the web process (gunicorn has no file server), right after the security
    # headers; with DEBUG, runserver's own static view still answers first.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

# Usernames are compared in one normal form (NFKC + case folding): portal/accounts/usernames.py.
AUTHENTICATION_BACKENDS = ["portal.accounts.usernames.CanonicalUsernameBackend"]
ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "portal" / "templates"],  # before the apps: our registration/ pages over the admin's
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "portal.web.context.nav",
            ],
        },
    },
]

# --- database ---------------------------------------------------------------------------------------
if PRODUCTION:
    DATABASES = {"default": env.db_url_config(_required("DATABASE_URL"))}
else:
    DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'locus.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Several processes share the file in the embedded mode: wait for locks instead of failing at once.
    DATABASES["default"].setdefault("OPTIONS", {}).update({"timeout": 20, "transaction_mode": "IMMEDIATE"})
else:
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("DB_CONN_MAX_AGE", default=60)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- storage ----------------------------------------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", default=str(VAR_DIR / "media")))
MEDIA_URL = "media/"
AWS_STORAGE_BUCKET_NAME = env.str("AWS_STORAGE_BUCKET_NAME", default="")
S3_STORAGE = bool(AWS_STORAGE_BUCKET_NAME)
if S3_STORAGE:
    AWS_S3_ENDPOINT_URL = env.str("S3_ENDPOINT_URL", default="") or None
    AWS_S3_REGION_NAME = env.str("AWS_S3_REGION_NAME", default="us-east-1")
    AWS_ACCESS_KEY_ID = _required("AWS_ACCESS_KEY_ID") if PRODUCTION else env.str("AWS_ACCESS_KEY_ID", default="")
    AWS_SECRET_ACCESS_KEY = (
        _required("AWS_SECRET_ACCESS_KEY") if PRODUCTION else env.str("AWS_SECRET_ACCESS_KEY", default="")
    )
    AWS_S3_SIGNATURE_VERSION = "s3v4"
    AWS_DEFAULT_ACL = None
    AWS_QUERYSTRING_EXPIRE = 600
    AWS_S3_FILE_OVERWRITE = False
    DEFAULT_STORAGE = {"BACKEND": "storages.backends.s3.S3Storage"}
else:
    DEFAULT_STORAGE = {"BACKEND": "django.core.files.storage.FileSystemStorage"}
STORAGES = {
    "default": DEFAULT_STORAGE,
    # Production: `collectstatic` writes gzip/brotli copies next to each file for WhiteNoise to serve. No
    # manifest storage: with one, a release that skipped collectstatic would answer every page with a 500.
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage" if PRODUCTION
                    else "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# WhiteNoise also finds files in the apps' static/ folders, so an image without a collectstatic step (or a
# STATIC_ROOT on an empty volume) still serves them; collected files win when present.
WHITENOISE_USE_FINDERS = True
# Upload limits enforced before bytes are accepted (design §2.1).
LOCUS_MAX_FILE_BYTES = env.int("LOCUS_MAX_FILE_BYTES", default=50 * 1024**3)
LOCUS_USER_QUOTA_BYTES = env.int("LOCUS_USER_QUOTA_BYTES", default=500 * 1024**3)
# Resumable uploads (jobs/uploads.py). Local storage: part files live here until complete, and every portal
# process must see the same folder. S3 storage: chunks go straight into S3 multipart uploads (this folder is
# unused), so chunks must be at least S3's smallest part.
LOCUS_UPLOAD_DIR = Path(env.str("LOCUS_UPLOAD_DIR", default=str(VAR_DIR / "uploads")))
LOCUS_UPLOAD_CHUNK_BYTES = env.int("LOCUS_UPLOAD_CHUNK_BYTES", default=8 * 1024**2)
if S3_STORAGE and not 5 * 1024**2 <= LOCUS_UPLOAD_CHUNK_BYTES <= 5 * 1024**3:
    raise ImproperlyConfigured("LOCUS_UPLOAD_CHUNK_BYTES must be between 5 MiB (5242880) and 5 GiB with S3 storage "
                               "(each chunk is one S3 part)")
LOCUS_UPLOAD_EXPIRE_HOURS = env.int("LOCUS_UPLOAD_EXPIRE_HOURS", default=72)
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024**2
FILE_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024**2
# Stored uploads and job outputs (local storage) are readable by the portal's user only, whatever its umask.
FILE_UPLOAD_PERMISSIONS = 0o600
FILE_UPLOAD_DIRECTORY_PERMISSIONS = 0o700

# --- email ------------------------------------------------------------------------------------------
if email_url := env.str("EMAIL_URL", default=""):
    vars().update(environ.Env.email_url_config(email_url))
elif PRODUCTION:
    raise ImproperlyConfigured("EMAIL_URL must be set when LOCUS_MODE=production")
else:
    EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
    EMAIL_FILE_PATH = VAR_DIR / "mail"
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="Locus <locus@localhost>")
# The default job notification (jobs/notifications.py) emails failures and jobs that took at least this many
# minutes from submission to their end; 0 emails every job's end.
LOCUS_NOTIFY_LONG_JOB_MINUTES = env.float("LOCUS_NOTIFY_LONG_JOB_MINUTES", default=5.0)

# --- jobs -------------------------------------------------------------------------------------------
LOCUS_REGISTRY_PATH = env.str("LOCUS_REGISTRY_PATH", default="") or None
LOCUS_LEASE_SECONDS = env.int("LOCUS_LEASE_SECONDS", default=30)
LOCUS_SWEEP_SECONDS = env.float("LOCUS_SWEEP_SECONDS", default=15.0)
# A queued job whose broker message is older than this is sent again (the broker may have lost it).
LOCUS_REDISPATCH_SECONDS = env.float("LOCUS_REDISPATCH_SECONDS", default=60.0)
LOCUS_URL_TTL_SECONDS = env.int("LOCUS_URL_TTL_SECONDS", default=900)
LOCUS_MAX_LOG_BYTES = env.int("LOCUS_MAX_LOG_BYTES", default=20 * 1024**2)
LOCUS_CODE_VERSION = env.str("LOCUS_CODE_VERSION", default="")
# An institution pool's job not claimed within this wait goes to the shared tiers (Institution may override).
LOCUS_POOL_SPILLOVER_SECONDS = env.int("LOCUS_POOL_SPILLOVER_SECONDS", default=300)
# CPU route (registry `cpu_route`): when no enabled worker able to take a GPU job has been seen for this many
# seconds, jobs of entrypoints that can also run on a CPU and whose Device is automatic (null) go to the `cpu`
# queue at submit, and such queued GPU jobs are moved there by the sweep. 0 turns it off: the embedded default
# (no GPU, one CPU worker) has it on; production has it off unless set.
LOCUS_CPU_ROUTE_AFTER_SECONDS = env.int("LOCUS_CPU_ROUTE_AFTER_SECONDS", default=0 if PRODUCTION else 60) or None
# Enrolling a worker submits a `diagnostics selftest` job pinned to it (its result shows on the workers page).
LOCUS_SELFTEST_ON_ENROLL = env.bool("LOCUS_SELFTEST_ON_ENROLL", default=True)
# A worker shutting down hands its job back without using one of the job's attempts; past this many
# hand-backs of one job, a further one counts as an infrastructure failure, so no worker can claim and hand
# back a job forever.
LOCUS_MAX_HANDBACKS = env.int("LOCUS_MAX_HANDBACKS", default=10)
# `migrate` puts the models shipped with Locus (algorithms/decode_plex/models) into the model registry.
LOCUS_REGISTER_BUNDLED_MODELS = env.bool("LOCUS_REGISTER_BUNDLED_MODELS", default=True)

# --- Celery (portal side: sends job ids, runs notify + maintenance; design §4) -------------------------
BROKER_DIR = VAR_DIR / "broker"
LOCUS_JOB_QUEUES = ["cpu", *(f"gpu.{tier}" for tier in GPU_TIERS_GB)]
CELERY_BROKER_URL = (
    _required("CELERY_BROKER_URL") if PRODUCTION else env.str("CELERY_BROKER_URL", default="filesystem://")
)
# Above the longest registry timeout, so Redis never redelivers a job that is still running.
CELERY_BROKER_TRANSPORT_OPTIONS: dict = {
    "visibility_timeout": registry.load(LOCUS_REGISTRY_PATH).longest_timeout_s + 3600,
}
if CELERY_BROKER_URL.startswith("filesystem"):
    # Sender and consumers share one folder; a message leaves it when fetched (design §7).
    CELERY_BROKER_TRANSPORT_OPTIONS.update(
        data_folder_in=str(BROKER_DIR), data_folder_out=str(BROKER_DIR),
        processed_folder=str(BROKER_DIR / "processed"), control_folder=str(BROKER_DIR / "control"),
        store_processed=False,
    )
    (BROKER_DIR / "processed").mkdir(parents=True, exist_ok=True)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Keep LOGGING's handlers (they mask tokens and transfer URLs); Celery would replace the root logger's own.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_TASK_CREATE_MISSING_QUEUES = False
CELERY_TASK_QUEUES = [Queue(name, routing_key=name) for name in [*LOCUS_JOB_QUEUES, "notify", "maintenance"]]
CELERY_TASK_DEFAULT_QUEUE = "maintenance"
CELERY_TASK_ROUTES = {
    "jobs.tasks.send_job_email": {"queue": "notify"},
    "jobs.tasks.*": {"queue": "maintenance"},
    "portal.accounts.tasks.*": {"queue": "notify"},
}
CELERY_BEAT_SCHEDULE = {
    "sweep-leases": {"task": "jobs.tasks.sweep_leases", "schedule": LOCUS_SWEEP_SECONDS,
                     "options": {"expires": LOCUS_SWEEP_SECONDS * 2}},
}
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
CELERY_TIMEZONE = "UTC"

# --- REST framework ---------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "portal.accounts.auth.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "jobs.api.errors.exception_handler",
    "DEFAULT_PARSER_CLASSES": [
        "jobs.api.parsers.BoundedJSONParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    # Behind N reverse proxies the client's address is the N-th last X-Forwarded-For entry; 0 (the default)
    # trusts only REMOTE_ADDR, so that a client cannot pick its own address to dodge throttling.
    "NUM_PROXIES": env.int("LOCUS_NUM_PROXIES", default=0),
    # Per principal, rates in LOCUS_THROTTLE_RATES below (portal/throttling.py reads them per request).
    "DEFAULT_THROTTLE_CLASSES": ["portal.throttling.PrincipalThrottle"],
}
# Generous defaults: they stop a runaway script or a credential-stuffing loop, not a busy lab.
LOCUS_THROTTLE_RATES = {
    "anon": env.str("LOCUS_THROTTLE_ANON", default="300/min"),
    "user": env.str("LOCUS_THROTTLE_USER", default="6000/min"),
    "token": env.str("LOCUS_THROTTLE_TOKEN", default="3000/min"),
    "worker": env.str("LOCUS_THROTTLE_WORKER", default="6000/min"),
}
for _scope, _rate in LOCUS_THROTTLE_RATES.items():  # refused now, not with a 500 on every API request
    try:
        parse_rate(_rate)
    except ValueError as exc:
        raise ImproperlyConfigured(f"LOCUS_THROTTLE_{_scope.upper()}: {exc}") from None
SPECTACULAR_SETTINGS = {
    "TITLE": "Locus API",
    "DESCRIPTION": "SMLM analysis jobs on borrowed GPUs: user API and worker API.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema and its docs are public: no authentication, so a stale token in a browser or a client
    # cannot turn the docs page into an error (it used to be a 500 while rendering the HTML page).
    "SERVE_AUTHENTICATION": [],
    "COMPONENT_SPLIT_REQUEST": True,
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "JobStatusEnum": "jobs.models.Job.Status",
        "AttemptStatusEnum": "jobs.models.Attempt.Status",
        "FileStatusEnum": "jobs.models.File.Status",
    },
}

# --- cache: API throttling and log-in failure counters (shared by every process when on Redis) --------
# Without CACHE_URL the counters live on the broker's Redis when there is one, so that every gunicorn process
# and pod shares one budget (per-process memory would multiply every limit by their number); the embedded
# default (file-system broker, one process) keeps them in memory.
_default_cache = CELERY_BROKER_URL if CELERY_BROKER_URL.startswith(("redis://", "rediss://")) else "locmemcache://"
CACHES = {"default": env.cache_url("CACHE_URL", default=_default_cache)}
if CACHES["default"]["BACKEND"] == "django.core.cache.backends.redis.RedisCache":
    CACHES["default"]["BACKEND"] = "portal.cache.PooledRedisCache"  # one Redis client per pool, not per call
    CACHES["default"]["KEY_PREFIX"] = CACHES["default"].get("KEY_PREFIX") or "locus-cache"
    # A Redis that does not answer costs a request at most this long (the counters then fail open).
    CACHES["default"].setdefault("OPTIONS", {}).update({"socket_connect_timeout": 1.0, "socket_timeout": 1.0})

# --- web security (issue 10 §5) ---------------------------------------------------------------------
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_HTTPONLY = True  # templates use {% csrf_token %}; no script needs to read the cookie
CSRF_COOKIE_SAMESITE = "Lax"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Log-in throttling (portal/accounts/views.py): failures per username and per client address.
LOCUS_LOGIN_MAX_FAILURES = env.int("LOCUS_LOGIN_MAX_FAILURES", default=10)
LOCUS_LOGIN_MAX_FAILURES_PER_IP = env.int("LOCUS_LOGIN_MAX_FAILURES_PER_IP", default=50)
LOCUS_LOGIN_LOCKOUT_SECONDS = env.int("LOCUS_LOGIN_LOCKOUT_SECONDS", default=15 * 60)
# Sign-ups per client address and hour (each one emails the approvers).
LOCUS_SIGNUP_MAX_PER_HOUR = env.int("LOCUS_SIGNUP_MAX_PER_HOUR", default=20)
# Queued + running jobs one user may have at once; submit answers 429 beyond it.
LOCUS_MAX_ACTIVE_JOBS = env.int("LOCUS_MAX_ACTIVE_JOBS", default=200)

LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

if PRODUCTION:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    # Tokens and signed transfer URLs never reach a log line (portal/log_filters.py).
    "filters": {"redact": {"()": "portal.log_filters.RedactSecrets"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["redact"]}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    # Django's own defaults log around the filter: `django.server` (the dev server's access lines, which the
    # embedded default and `manage.py demo` run) has no handler of ours and went to Python's last-resort
    # handler, and with DEBUG a handler on `django` printed every django.* record a second time. Both now go
    # through the redacting console only.
    "loggers": {
        "django": {"level": "INFO", "handlers": [], "propagate": True},
        "django.server": {"level": "WARNING", "handlers": ["console"], "filters": ["redact"], "propagate": False},
        "django.request": {"filters": ["redact"]},
    },
}
