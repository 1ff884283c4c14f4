"""CSRF on every form (issue 10 §5), found from the URL configuration and the templates, not from a list.

Every HTML view of the portal (everything outside /api/ and /admin/) that accepts a POST must refuse one
without a CSRF token, for a logged-in user: a new POST view that is csrf-exempt, or that skips the check in
any other way, fails `test_every_html_post_view_refuses_a_post_without_csrf_token`. Which views accept POST
is asked of the views themselves: the same POST with a valid token is answered anything but 405. Every
`<form method="post">` in the templates carries `{% csrf_token %}`. The API is CSRF-exempt for token clients
by design (no cookie, no ambient authority), but a browser session reaching the API is not.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from django.conf import settings
from django.core.cache import cache
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils.crypto import get_random_string
from rest_framework.test import APIClient

from jobs import services
from jobs.models import Institution, Job, Membership
from portal.accounts.models import ApiToken

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_DIRS = [ROOT / "portal" / "templates", ROOT / "jobs" / "templates"]
# Forms every user meets; if the walk below stops finding them, it is the walk that broke.
KNOWN_POST_VIEWS = {"login", "logout", "signup", "job-new", "job-page-cancel", "job-page-rerun", "datasets",
                    "dataset-delete", "profile", "tokens", "token-revoke", "password_change", "password_reset"}


@pytest.fixture(autouse=True)
def _fresh_counters():
    cache.clear()  # log-in and sign-up counters must not refuse a request for reasons other than CSRF
    yield
    cache.clear()


def html_views() -> list[tuple[str, str, object]]:
    """(name, route, callback) of every URL pattern outside /api/ and /admin/, walking nested resolvers."""
    out = []

    def walk(resolver, prefix: str):
        for p in resolver.url_patterns:
            route = prefix + str(p.pattern)
            if route.startswith(("api/", "admin/")):
                continue
            if isinstance(p, URLResolver):
                walk(p, route)
            elif isinstance(p, URLPattern):
                out.append((str(p.name), route, p.callback))

    walk(get_resolver(), "")
    return out


@pytest.fixture
def paths(user, other_user, dataset) -> dict[str, str]:
    """name → request path of every HTML view, its parameters filled with `user`'s own objects."""
    file = services.add_file(dataset, "movie.tif", io.BytesIO(b"II*\x00frames"))
    job, _ = services.submit(user, application="diagnostics", entrypoint="selftest")
    token, _ = ApiToken.issue(user, "script")
    lab = Institution.objects.create(slug="lab", name="Lab")
    Membership.objects.create(user=user, institution=lab, is_admin=True)
    Membership.objects.create(user=other_user, institution=lab)
    from jobs.models import TrainedModel

    model = TrainedModel.objects.create(name="model", owner=user, file=file, reuse_key="0" * 64)
    values = {"job_id": job.pk, "dataset_id": dataset.pk, "file_id": file.pk, "slug": lab.slug,
              "user_id": user.pk, "uidb64": "MQ", "token": "set-password", "model_id": model.pk}
    own = {"token-revoke": {"pk": token.pk}, "worker-revoke-page": {"pk": "00000000-0000-0000-0000-000000000000"},
           "institution-member": {"user_id": other_user.pk}}
    out = {}
    for name, route, _ in html_views():
        params = re.findall(r"<(?:\w+:)?(\w+)>", route)
        out[name] = reverse(name, kwargs={p: own.get(name, {}).get(p, values.get(p)) for p in params})
    return out


def logged_in(user) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


def is_csrf_refusal(response) -> bool:
    return response.status_code == 403 and b"CSRF verification failed" in response.content


def post_with_token(client: Client, path: str):
    """A POST carrying a valid token: the cookie's secret, echoed in the form (what {% csrf_token %} does)."""
    secret = get_random_string(32)
    client.cookies[settings.CSRF_COOKIE_NAME] = secret
    return client.post(path, {"csrfmiddlewaretoken": secret})


def test_no_html_view_is_csrf_exempt():
    exempt = sorted(name for name, _, callback in html_views() if getattr(callback, "csrf_exempt", False))
    assert not exempt, f"csrf_exempt views outside the API: {exempt}"


def test_every_html_post_view_refuses_a_post_without_csrf_token(user, paths):
    accepting, failures = set(), []
    for name, path in sorted(paths.items()):
        client = logged_in(user)
        without = client.post(path, {"name": "x", "username": "alice", "password": "pw-alice"})
        assert "_auth_user_id" in client.session, f"{name}: a POST without a token logged the user out"
        with_token = post_with_token(logged_in(user), path)  # after: it may act (log out, delete, cancel)
        assert not is_csrf_refusal(with_token), f"{name} {path}: refused a POST with a valid token"
        if with_token.status_code == 405:  # the view takes no POST at all
            continue
        accepting.add(name)
        if not is_csrf_refusal(without):
            failures.append(f"{name} {path} → {without.status_code} without a CSRF token")
    assert not failures, "POST views that do not require CSRF:\n" + "\n".join(failures)
    assert not KNOWN_POST_VIEWS - accepting, f"the walk missed POST views: {sorted(KNOWN_POST_VIEWS - accepting)}"


def test_a_refused_post_changes_nothing(user, paths):
    job = Job.objects.get(owner=user)
    token = ApiToken.objects.get(user=user)
    client = logged_in(user)
    assert is_csrf_refusal(client.post(paths["job-page-cancel"]))
    assert is_csrf_refusal(client.post(paths["token-revoke"]))
    assert is_csrf_refusal(client.post(paths["tokens"], {"name": "stolen"}))
    assert Job.objects.get(pk=job.pk).status == Job.Status.QUEUED
    assert ApiToken.objects.filter(user=user, revoked_at__isnull=True).get() == token


@pytest.mark.parametrize(("path", "body", "made"), [
    ("/api/v1/jobs/", {"application": "diagnostics", "entrypoint": "selftest"}, lambda u: Job.objects.filter(owner=u)),
    ("/api/v1/tokens/", {"name": "minted"}, lambda u: ApiToken.objects.filter(user=u)),
])
def test_session_authenticated_api_posts_need_the_csrf_header(user, path, body, made):
    browser = APIClient(enforce_csrf_checks=True)
    browser.force_login(user)
    refused = browser.post(path, body, format="json")
    assert refused.status_code == 403 and "CSRF" in refused.json()["error"]["message"]
    assert not made(user).exists()
    secret = get_random_string(32)  # what upload.js / locus.js send: the page's token in X-CSRFToken
    browser.cookies[settings.CSRF_COOKIE_NAME] = secret
    assert browser.post(path, body, format="json", HTTP_X_CSRFTOKEN=secret).status_code == 201
    assert made(user).count() == 1


# --- templates ------------------------------------------------------------------------------------------------

FORM_RE = re.compile(r"<form\b[^>]*>.*?</form\s*>", re.I | re.S)
POST_RE = re.compile(r"""^<form\b[^>]*\bmethod\s*=\s*["']?post\b""", re.I)
CSRF_TAG_RE = re.compile(r"{%\s*csrf_token\s*%}")


def post_forms() -> list[tuple[str, str]]:
    found = []
    for folder in TEMPLATE_DIRS:
        for template in sorted(folder.rglob("*.html")):
            text = template.read_text()
            for form in FORM_RE.findall(text):
                if POST_RE.match(form):
                    found.append((str(template.relative_to(ROOT)), form))
    return found


def test_every_post_form_in_the_templates_carries_a_csrf_token():
    forms = post_forms()
    assert len(forms) >= 15, "the template scan found too few POST forms: is the pattern still right?"
    missing = [f"{where}: {form[:120]}" for where, form in forms if not CSRF_TAG_RE.search(form)]
    assert not missing, "POST forms without {% csrf_token %}:\n" + "\n".join(missing)


def test_the_template_scan_finds_upper_case_and_unquoted_post_methods():
    form = '<FORM class="x" method=POST action="/y">{% include "a.html" %}<button>go</button></FORM>'
    assert FORM_RE.findall(form) == [form] and POST_RE.match(form) and not CSRF_TAG_RE.search(form)
    assert not POST_RE.match('<form method="get" data-post="1"></form>')
