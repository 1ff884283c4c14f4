"""Web security (issue 10 §5): production cookies and headers, CSRF on the forms, password validators,
log-in and API throttling, quotas, secrets kept out of logs, `check --deploy` clean."""

from __future__ import annotations

import json
import logging
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth.password_validation import validate_password
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.test import Client
from rest_framework.test import APIClient

from jobs import services, storage
from jobs.models import Job
from portal.accounts.models import ApiToken
from portal.log_filters import RedactSecrets, redact
from tests.conftest import upload

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _fresh_counters():
    cache.clear()
    yield
    cache.clear()


def production_env(tmp_path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LOCUS_", "DATABASE_", "CELERY_", "DJANGO_", "EMAIL_", "SECRET_", "DEBUG"))}
    return {**env, "LOCUS_MODE": "production", "SECRET_KEY": secrets.token_urlsafe(60),
            "ALLOWED_HOSTS": "locus.example.org", "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/unused",
            "CELERY_BROKER_URL": "redis://127.0.0.1:6379/11", "EMAIL_URL": "consolemail://",
            "LOCUS_VAR_DIR": str(tmp_path / "var"), "DJANGO_SETTINGS_MODULE": "portal.settings"}


# --- production settings -----------------------------------------------------------------------------------

def test_production_cookies_are_secure_httponly_samesite_and_https_is_enforced(tmp_path):
    names = ["SESSION_COOKIE_SECURE", "SESSION_COOKIE_HTTPONLY", "SESSION_COOKIE_SAMESITE", "CSRF_COOKIE_SECURE",
             "CSRF_COOKIE_HTTPONLY", "CSRF_COOKIE_SAMESITE", "SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS",
             "SECURE_CONTENT_TYPE_NOSNIFF", "SECURE_REFERRER_POLICY", "X_FRAME_OPTIONS", "DEBUG", "CACHES"]
    code = f"from portal import settings as s; import json; print(json.dumps({{n: getattr(s, n) for n in {names}}}))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=production_env(tmp_path), check=True,
                         capture_output=True, text=True).stdout
    values = json.loads(out.strip().splitlines()[-1])
    assert values["SESSION_COOKIE_SECURE"] and values["CSRF_COOKIE_SECURE"]
    assert values["SESSION_COOKIE_HTTPONLY"] and values["CSRF_COOKIE_HTTPONLY"]
    assert values["SESSION_COOKIE_SAMESITE"] == values["CSRF_COOKIE_SAMESITE"] == "Lax"
    assert values["SECURE_SSL_REDIRECT"] and values["SECURE_HSTS_SECONDS"] >= 31536000
    assert values["SECURE_CONTENT_TYPE_NOSNIFF"] and values["SECURE_REFERRER_POLICY"] == "same-origin"
    assert values["X_FRAME_OPTIONS"] == "DENY" and values["DEBUG"] is False


def test_check_deploy_is_clean_on_production_settings(tmp_path):
    result = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"], cwd=ROOT,
                            env=production_env(tmp_path), capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_session_cookie_is_httponly_and_samesite_when_logging_in(user):
    response = Client().post("/accounts/login/", {"username": "alice", "password": "pw-alice"})
    assert response.status_code == 302
    cookie = response.cookies["sessionid"]
    assert cookie["httponly"] and cookie["samesite"] == "Lax"


def test_security_headers_on_pages_and_api(api):
    for response in (Client().get("/accounts/login/"), api.get("/api/v1/jobs/")):
        assert response["X-Content-Type-Options"] == "nosniff"
        assert response["Referrer-Policy"] == "same-origin"
        assert response["X-Frame-Options"] == "DENY"
        assert response["Cross-Origin-Opener-Policy"] == "same-origin"


# --- CSRF ----------------------------------------------------------------------------------------------------

def test_login_form_needs_its_csrf_token(user):
    client = Client(enforce_csrf_checks=True)
    assert client.post("/accounts/login/", {"username": "alice", "password": "pw-alice"}).status_code == 403
    page = client.get("/accounts/login/")
    token = page.context["csrf_token"]
    assert f'name="csrfmiddlewaretoken" value="{token}"' in page.content.decode()
    response = client.post("/accounts/login/", {"username": "alice", "password": "pw-alice",
                                                "csrfmiddlewaretoken": token})
    assert response.status_code == 302


def test_logout_is_a_post_with_csrf_token(user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    assert client.get("/accounts/logout/").status_code == 405
    assert client.post("/accounts/logout/").status_code == 403
    assert "_auth_user_id" in client.session
    home = client.get("/")
    token = home.context["csrf_token"]
    assert 'action="/accounts/logout/"' in home.content.decode()
    assert client.post("/accounts/logout/", {"csrfmiddlewaretoken": token}).status_code == 302
    assert "_auth_user_id" not in client.session


def test_session_authenticated_api_writes_need_csrf_but_token_writes_do_not(user, api):
    browser = APIClient(enforce_csrf_checks=True)
    browser.force_login(user)
    refused = browser.post("/api/v1/datasets/", {"name": "x"}, format="json")
    assert refused.status_code == 403 and "CSRF" in refused.json()["error"]["message"]
    assert browser.get("/api/v1/datasets/").status_code == 200
    assert api.post("/api/v1/datasets/", {"name": "x"}, format="json").status_code == 201


# --- passwords -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("password", ["short", "password123", "12345678901", "alice-example"])
def test_weak_passwords_are_refused(user, password):
    with pytest.raises(ValidationError):
        validate_password(password, user)


def test_a_strong_password_passes(user):
    validate_password("tangerine-Photon-lattice-42", user)


# --- log-in throttling ---------------------------------------------------------------------------------------

def test_login_is_locked_after_repeated_failures_even_with_the_right_password(user, other_user, settings):
    settings.LOCUS_LOGIN_MAX_FAILURES = 3
    client = Client()
    for _ in range(3):
        assert client.post("/accounts/login/", {"username": "alice", "password": "wrong"}).status_code == 200
    locked = client.post("/accounts/login/", {"username": "alice", "password": "pw-alice"})
    assert locked.status_code == 429 and "Too many failed log-ins" in locked.content.decode()
    assert int(locked["Retry-After"]) > 0
    assert "_auth_user_id" not in client.session
    # Another account from the same address is not locked out by alice's counter.
    assert Client().post("/accounts/login/", {"username": "bob", "password": "pw-bob"}).status_code == 302
    cache.clear()  # the lockout window passes
    assert client.post("/accounts/login/", {"username": "alice", "password": "pw-alice"}).status_code == 302


def test_failures_from_one_address_are_limited_across_usernames(db, settings):
    settings.LOCUS_LOGIN_MAX_FAILURES_PER_IP = 4
    client = Client()
    for i in range(4):
        client.post("/accounts/login/", {"username": f"guess{i}", "password": "x"})
    assert client.post("/accounts/login/", {"username": "guess9", "password": "x"}).status_code == 429


def test_successful_login_clears_the_username_counter(user, settings):
    settings.LOCUS_LOGIN_MAX_FAILURES = 3
    client = Client()
    for _ in range(2):
        client.post("/accounts/login/", {"username": "alice", "password": "wrong"})
    assert client.post("/accounts/login/", {"username": "alice", "password": "pw-alice"}).status_code == 302
    for _ in range(2):
        assert Client().post("/accounts/login/", {"username": "alice", "password": "wrong"}).status_code == 200


# --- API throttling ------------------------------------------------------------------------------------------

def _rates(settings, **rates):
    settings.LOCUS_THROTTLE_RATES = {"anon": "1000/min", "user": "1000/min", "token": "1000/min",
                                     "worker": "1000/min", **rates}


def _throttled(response) -> bool:
    if response.status_code != 429:
        return False
    assert response.json()["error"]["code"] == "throttled" and int(response["Retry-After"]) > 0
    return True


def test_each_api_token_has_its_own_budget(user, settings):
    _rates(settings, token="3/min")
    first, second = APIClient(), APIClient()
    first.credentials(HTTP_AUTHORIZATION=f"Token {ApiToken.issue(user, 'a')[1]}")
    second.credentials(HTTP_AUTHORIZATION=f"Token {ApiToken.issue(user, 'b')[1]}")
    assert [first.get("/api/v1/jobs/").status_code for _ in range(3)] == [200] * 3
    assert _throttled(first.get("/api/v1/jobs/"))
    assert second.get("/api/v1/jobs/").status_code == 200


def test_a_user_budget_covers_all_their_tokens(user, other_user, settings):
    _rates(settings, user="4/min")
    clients = []
    for u in (user, user, other_user):
        c = APIClient()
        c.credentials(HTTP_AUTHORIZATION=f"Token {ApiToken.issue(u, 't')[1]}")
        clients.append(c)
    statuses = [clients[i % 2].get("/api/v1/jobs/").status_code for i in range(4)]
    assert statuses == [200] * 4
    assert _throttled(clients[0].get("/api/v1/jobs/")) and _throttled(clients[1].get("/api/v1/jobs/"))
    assert clients[2].get("/api/v1/jobs/").status_code == 200  # bob has his own budget


def test_anonymous_callers_are_throttled_per_address(db, settings):
    _rates(settings, anon="2/min")
    client = APIClient()
    for _ in range(2):
        assert client.post("/api/v1/worker/enroll", {"enrollment_token": "nope"}, format="json").status_code == 403
    assert _throttled(client.post("/api/v1/worker/enroll", {"enrollment_token": "nope"}, format="json"))
    other = APIClient(REMOTE_ADDR="10.0.0.9")
    assert other.post("/api/v1/worker/enroll", {"enrollment_token": "nope"}, format="json").status_code == 403


def test_worker_tokens_are_throttled_separately_from_users(worker, api, settings):
    _rates(settings, worker="2/min")
    for _ in range(2):
        assert worker.post("/api/v1/worker/heartbeat", {}, format="json").status_code == 200
    assert _throttled(worker.post("/api/v1/worker/heartbeat", {}, format="json"))
    assert api.get("/api/v1/jobs/").status_code == 200


def test_default_rates_are_generous_and_set_from_the_environment(tmp_path):
    env = {**production_env(tmp_path), "LOCUS_THROTTLE_TOKEN": "7/second"}
    code = "from portal import settings as s; print(s.LOCUS_THROTTLE_RATES)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, capture_output=True,
                         text=True).stdout
    rates = eval(out.strip().splitlines()[-1])  # noqa: S307 - our own settings' repr
    assert rates["token"] == "7/second"
    assert int(rates["user"].split("/")[0]) >= 1000 and int(rates["worker"].split("/")[0]) >= 1000


def test_production_counters_are_shared_on_the_brokers_redis_unless_a_cache_is_named(tmp_path):
    code = "from portal import settings as s; c = s.CACHES['default']; print(c['BACKEND'], c['LOCATION'])"
    for extra, expected in (({}, "portal.cache.PooledRedisCache redis://127.0.0.1:6379/11"),
                            ({"CACHE_URL": "redis://127.0.0.1:6379/3"}, "portal.cache.PooledRedisCache "
                                                                        "redis://127.0.0.1:6379/3")):
        env = {k: v for k, v in production_env(tmp_path).items() if k != "CACHE_URL"}
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**env, **extra}, check=True,
                             capture_output=True, text=True).stdout
        assert out.strip().splitlines()[-1] == expected


def test_a_malformed_rate_stops_the_start_with_the_variable_named(tmp_path):
    env = {**production_env(tmp_path), "LOCUS_THROTTLE_USER": "lots/min"}
    done = subprocess.run([sys.executable, "-c", "import portal.settings"], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    assert done.returncode != 0
    assert "ImproperlyConfigured: LOCUS_THROTTLE_USER: throttle rate 'lots/min' is not" in done.stderr



def test_s3_storage_refuses_chunks_smaller_than_an_s3_part_at_start(tmp_path):
    env = {**production_env(tmp_path), "AWS_STORAGE_BUCKET_NAME": "locus", "AWS_ACCESS_KEY_ID": "k",
           "AWS_SECRET_ACCESS_KEY": "s", "LOCUS_UPLOAD_CHUNK_BYTES": str(1024 * 1024)}
    done = subprocess.run([sys.executable, "-c", "import portal.settings"], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    assert done.returncode != 0 and "ImproperlyConfigured: LOCUS_UPLOAD_CHUNK_BYTES must be between 5 MiB" in done.stderr
    env["LOCUS_UPLOAD_CHUNK_BYTES"] = str(8 * 1024 * 1024)
    assert subprocess.run([sys.executable, "-c", "import portal.settings"], cwd=ROOT, env=env,
                          capture_output=True).returncode == 0

# --- quotas --------------------------------------------------------------------------------------------------

def _submit(api, **extra):
    return api.post("/api/v1/jobs/", {"application": "diagnostics", "entrypoint": "selftest"}, format="json",
                    **extra)


def test_active_jobs_quota_answers_429_naming_the_limit(api, user, settings):
    settings.LOCUS_MAX_ACTIVE_JOBS = 2
    first = _submit(api, HTTP_IDEMPOTENCY_KEY="k1")
    assert first.status_code == 201 and _submit(api).status_code == 201
    refused = _submit(api)
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "quota_exceeded" and "limit is 2" in error["message"]
    assert Job.objects.filter(owner=user).count() == 2
    # Replaying a submission that already exists is not a new job: still answered.
    assert _submit(api, HTTP_IDEMPOTENCY_KEY="k1").status_code == 200
    # Finished jobs do not count.
    assert api.post(f"/api/v1/jobs/{first.json()['id']}/cancel/").status_code == 200
    assert _submit(api).status_code == 201


def test_active_jobs_quota_is_per_user(api, other_api, settings):
    settings.LOCUS_MAX_ACTIVE_JOBS = 1
    assert _submit(api).status_code == 201 and _submit(api).status_code == 429
    assert _submit(other_api).status_code == 201


def test_storage_quota_is_enforced_before_bytes_are_kept(api, dataset, settings):
    settings.LOCUS_USER_QUOTA_BYTES = 1000
    assert upload(api, dataset.pk, "a.tif", b"a" * 800).status_code == 201
    refused = upload(api, dataset.pk, "b.tif", b"b" * 800)
    assert refused.status_code == 413 and "quota" in refused.json()["error"]["message"]
    assert dataset.files.count() == 1


# --- secrets in logs -----------------------------------------------------------------------------------------

def test_redaction_masks_tokens_transfer_urls_and_auth_headers():
    api_token, worker_token = "lus_" + "A" * 43, "lwk_" + "b-_9" * 10
    text = redact(f"user token {api_token}, worker {worker_token}, GET /api/v1/worker/transfer/eyJhbGc:1x:sig?x=1 "
                  f"Authorization: Token {api_token[4:]} X-Fencing-Token: {'f' * 48}")
    assert api_token not in text and worker_token not in text and "eyJhbGc" not in text
    assert api_token[4:] not in text and "f" * 48 not in text
    assert "/worker/transfer/[redacted]" in text


def test_the_console_handler_and_django_request_logger_redact(settings):
    handler_filters = settings.LOGGING["handlers"]["console"]["filters"]
    assert "redact" in handler_filters and "redact" in settings.LOGGING["loggers"]["django.request"]["filters"]
    assert any(isinstance(f, RedactSecrets) for f in logging.getLogger("django.request").filters)


def test_a_refused_transfer_url_is_logged_without_its_signature(db, caplog):
    token = storage.sign({"op": "get", "key": "users/1/x", "job": "00000000-0000-0000-0000-000000000000",
                          "attempt": "00000000-0000-0000-0000-000000000000", "file": "x"})
    with caplog.at_level(logging.WARNING, logger="django.request"):
        response = APIClient().get(f"/api/v1/worker/transfer/{token}")
    assert response.status_code == 409
    assert "transfer/[redacted]" in caplog.text and token not in caplog.text


def test_a_token_in_an_error_message_never_reaches_the_log(caplog):
    raw = "lus_" + secrets.token_urlsafe(32)
    with caplog.at_level(logging.INFO, logger="django.request"):
        logging.getLogger("django.request").warning("refused %s", raw)
    assert raw not in caplog.text and "lus_[redacted]" in caplog.text


# --- regressions found by the matrix and the fuzzer -------------------------------------------------------------

def test_format_suffix_routes_are_gone_not_500(api, user):
    job, _ = services.submit(user, application="diagnostics", entrypoint="selftest")
    for path in (f"/api/v1/jobs/{job.pk}/cancel.json/", f"/api/v1/jobs/{job.pk}.json", "/api/v1/jobs.json"):
        response = api.post(path) if "cancel" in path else api.get(path)
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert Job.objects.get(pk=job.pk).status == "queued"


def test_api_docs_with_a_stale_token_render_instead_of_500(user):
    token, raw = ApiToken.issue(user, "old")
    ApiToken.objects.filter(pk=token.pk).update(revoked_at="2020-01-01T00:00:00Z")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {raw}")
    assert client.get("/api/docs/", HTTP_ACCEPT="application/json").status_code in (200, 406)
    assert client.get("/api/docs/", HTTP_ACCEPT="text/html").status_code == 200
    assert client.get("/api/schema/", HTTP_ACCEPT="application/json").status_code == 200


def test_unknown_api_urls_answer_the_json_error_shape(api):
    response = api.get("/api/v1/no-such-thing/")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert Client().get("/no-such-page/").status_code == 404


@pytest.mark.parametrize("body", [
    {"exit_code": 0, "outputs": [{"name": "a", "key": 5, "size": 1, "sha256": "x"}]},
    {"exit_code": 0, "outputs": 5},
    {"exit_code": 0, "outputs": "users/1/jobs/x"},
    {"exit_code": 1, "failure_class": "input", "cpu_seconds": "a while"},
    {"exit_code": 1, "gpu_seconds": [1]},
])
def test_malformed_completion_is_a_400_and_changes_nothing(user, worker, body):
    job, _ = services.submit(user, application="diagnostics", entrypoint="selftest")
    claim = worker.post(f"/api/v1/worker/jobs/{job.pk}/claim").json()
    response = worker.post(f"/api/v1/worker/attempts/{claim['attempt_id']}/complete", body, format="json",
                           HTTP_X_FENCING_TOKEN=claim["fencing_token"])
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid"
    assert Job.objects.get(pk=job.pk).status == "running"


@pytest.mark.parametrize("query", ["created_after=2020-13-45T00:00:00", "created_before=2021-02-30T25:61:00"])
def test_impossible_dates_in_job_filters_are_a_400(api, query):
    response = api.get(f"/api/v1/jobs/?{query}")
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid"


def test_huge_log_offsets_are_answered_not_500(api, user):
    job, _ = services.submit(user, application="diagnostics", entrypoint="selftest")
    response = api.get(f"/api/v1/jobs/{job.pk}/logs/?offset={'9' * 30}&limit={'9' * 30}")
    assert response.status_code == 200 and response.json()["text"] == ""


def test_behind_a_proxy_login_failures_are_counted_per_forwarded_client(db, settings):
    settings.LOCUS_LOGIN_MAX_FAILURES_PER_IP = 2
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    proxy = {"REMOTE_ADDR": "10.0.0.1"}
    for _ in range(2):
        Client(**proxy).post("/accounts/login/", {"username": "x", "password": "x"},
                             HTTP_X_FORWARDED_FOR="203.0.113.7")
    assert Client(**proxy).post("/accounts/login/", {"username": "y", "password": "x"},
                                HTTP_X_FORWARDED_FOR="203.0.113.7").status_code == 429
    # Another client behind the same proxy is not locked out; a spoofed first entry does not help.
    assert Client(**proxy).post("/accounts/login/", {"username": "y", "password": "x"},
                                HTTP_X_FORWARDED_FOR="203.0.113.8").status_code == 200
    assert Client(**proxy).post("/accounts/login/", {"username": "y", "password": "x"},
                                HTTP_X_FORWARDED_FOR="1.2.3.4, 203.0.113.7").status_code == 429


def test_without_trusted_proxies_forwarded_headers_are_ignored(db, settings):
    settings.LOCUS_LOGIN_MAX_FAILURES_PER_IP = 2
    for i in range(2):
        Client().post("/accounts/login/", {"username": "x", "password": "x"}, HTTP_X_FORWARDED_FOR=f"198.51.100.{i}")
    assert Client().post("/accounts/login/", {"username": "x", "password": "x"},
                         HTTP_X_FORWARDED_FOR="198.51.100.99").status_code == 429
