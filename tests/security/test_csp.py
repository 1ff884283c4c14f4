"""Content-Security-Policy (portal/csp.py): every page allows scripts and styles from the portal's own origin
only, and the pages keep working under it because none of their markup is inline (tests/browser/test_csp.py
loads them in Chromium and listens for violations)."""

from __future__ import annotations

import io
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from django.contrib.staticfiles import finders
from django.test import Client

from jobs import services
from jobs.models import Dataset, Institution, Membership
from tests.unit.test_worker_api import call, claim, put_output

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]
HEADER = "Content-Security-Policy"
PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4"
       b"\x89\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N\x00\x00\x00\x00IEND\xaeB`\x82")


def policy(response) -> dict[str, list[str]]:
    assert HEADER in response, f"no {HEADER} on {response.request['PATH_INFO']}"
    return {name: sources for name, *sources in (part.split() for part in response[HEADER].split(";"))}


def assert_page_policy(response) -> None:
    directives = policy(response)
    assert directives["default-src"] == ["'self'"]
    assert directives["script-src"] == ["'self'"] and directives["style-src"] == ["'self'"]
    assert directives["object-src"] == ["'none'"] and directives["frame-ancestors"] == ["'none'"]
    assert directives["base-uri"] == ["'self'"] and directives["form-action"] == ["'self'"]
    assert not any("unsafe" in source or source in ("*", "https:", "http:")
                   for sources in directives.values() for source in sources)


class InlineFinder(HTMLParser):
    """Everything in a page that a policy without 'unsafe-inline' refuses."""

    def __init__(self):
        super().__init__()
        self.found: list[str] = []
        self._script = False

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name == "style" or name.startswith("on"):
                self.found.append(f"<{tag} {name}={value!r}>")
            if name in ("href", "src", "action") and (value or "").strip().lower().startswith("javascript:"):
                self.found.append(f"<{tag} {name}={value!r}>")
        if tag == "style":
            self.found.append("<style> block")
        self._script = tag == "script" and not dict(attrs).get("src")

    def handle_data(self, data):
        if self._script and data.strip():
            self.found.append(f"inline <script>: {data.strip()[:60]!r}")

    def handle_endtag(self, tag):
        self._script = False


def inline_markup(html: str) -> list[str]:
    finder = InlineFinder()
    finder.feed(html)
    return finder.found


@pytest.fixture
def site(user, other_user, staff, worker):
    """A portal with something on every page: a finished job with outputs, a running one, a dataset with an
    unfinished upload, an institution."""
    dataset = Dataset.objects.create(owner=user, name="beads")
    services.add_file(dataset, "frames.tif", io.BytesIO(b"frames"))
    lab = Institution.objects.create(slug="lab", name="Lab")
    Membership.objects.create(user=user, institution=lab, is_admin=True)
    Membership.objects.create(user=other_user, institution=lab)
    done, _ = services.submit(user, application="diagnostics", entrypoint="selftest", notify="never")
    body = claim(worker, done.pk).json()
    outputs = [put_output(body, worker, "report.json", b'{"ok": true}'), put_output(body, worker, "render.png", PNG)]
    assert call(worker, body, "complete", {"exit_code": 0, "failure_class": None,
                                           "outputs": outputs}).json()["job_status"] == "succeeded"
    running, _ = services.submit(user, application="diagnostics", entrypoint="selftest", notify="never")
    claim(worker, running.pk)
    client = Client()
    client.force_login(user)
    assert client.post(f"/api/v1/datasets/{dataset.pk}/uploads/", {"name": "movie.tif", "size": 100},
                       content_type="application/json").status_code == 201
    return {"user": client, "done": done, "running": running, "dataset": dataset,
            "file": done.outputs.get(name="render.png")}


def test_pages_allow_scripts_and_styles_from_the_portal_only(site):
    for path in ["/", "/accounts/login/", f"/jobs/{site['done'].pk}/"]:
        response = site["user"].get(path)
        assert response.status_code == 200, path
        assert_page_policy(response)
    assert_page_policy(Client().get("/accounts/login/"))
    assert_page_policy(Client().get("/no/such/page/"))  # error pages too


def test_api_answers_and_downloads_may_load_nothing(site, api):
    for response in [api.get("/api/v1/jobs/"), Client().get("/api/v1/jobs/"),
                     api.get(f"/api/v1/files/{site['file'].pk}/download/")]:
        directives = policy(response)
        assert directives["default-src"] == ["'none'"] and directives["frame-ancestors"] == ["'none'"]


def test_api_docs_load_redoc_from_the_portal_itself(db):
    response = Client().get("/api/docs/", HTTP_ACCEPT="text/html")
    assert response.status_code == 200
    html = response.content.decode()
    assert inline_markup(html) == []
    scripts = re.findall(r'<script src="([^"]+)"', html)
    assert scripts and all(src.startswith("/static/") for src in scripts)
    assert "cdn.jsdelivr" not in html and "googleapis" not in html
    assert finders.find(scripts[0].removeprefix("/static/"))  # vendored: drf-spectacular-sidecar
    directives = policy(response)
    assert directives["script-src"] == ["'self'"] and directives["object-src"] == ["'none'"]
    # Widened for Redoc only: its styles are inline, its search index runs in a blob: worker.
    assert directives["style-src"] == ["'self'", "'unsafe-inline'"]
    assert directives["worker-src"] == ["'self'", "blob:"]


def test_no_page_carries_inline_script_style_or_handler(site, staff):
    user = site["user"]
    done, running, dataset = site["done"], site["running"], site["dataset"]
    pages = {
        path: user.get(path) for path in [
            "/", "/?status=running", "/datasets/", f"/datasets/{dataset.pk}/", f"/jobs/{done.pk}/",
            f"/jobs/{running.pk}/", f"/files/{site['file'].pk}/", "/jobs/new/",
            "/jobs/new/?application=diagnostics&entrypoint=selftest", f"/jobs/new/?clone={done.pk}",
            "/account/", "/account/tokens/", "/institutions/", "/institutions/lab/", "/usage/",
            "/accounts/password_change/", "/no/such/page/"]}
    admin = Client()
    admin.force_login(staff)
    pages.update({f"staff {path}": admin.get(path) for path in [
        "/manage/accounts/", "/workers/", "/admin/", "/admin/jobs/job/", f"/admin/jobs/job/{done.pk}/change/"]})
    anonymous = Client()
    pages.update({f"anonymous {path}": anonymous.get(path) for path in [
        "/accounts/login/", "/accounts/signup/", "/accounts/password_reset/"]})
    # What the live pages insert later: the jobs list's rows and the job page's sections.
    pages["jobs-live rows"] = user.get("/jobs/live/").json()["rows_html"]
    pages.update({f"job section {name}": html
                  for name, html in user.get(f"/jobs/{done.pk}/live/").json()["sections"].items()})
    found = {}
    for name, response in pages.items():
        if isinstance(response, str):
            html = response
        else:
            assert response.status_code in (200, 404), (name, response.status_code)
            html = response.content.decode()
        if inline_markup(html):
            found[name] = inline_markup(html)
    assert found == {}


def test_templates_and_scripts_write_no_inline_style_or_handler():
    """The same rule on the sources, for markup no test renders: templates, and HTML built by the scripts."""
    offenders = []
    sources = [*(ROOT / "portal").rglob("*.html"), *(ROOT / "jobs" / "templates").rglob("*.html"),
               *(ROOT / "portal" / "static").rglob("*.js")]
    for path in sources:
        if "email" in path.parts:  # mail clients, not the browser, read these
            continue
        text = path.read_text()
        for pattern in [r"\sstyle\s*=", r"<style", r"\son[a-z]+\s*=\s*[\"']", r"<script(?![^>]*\ssrc=)[^>]*>",
                        r"javascript:", r"setAttribute\(\s*[\"']style"]:
            offenders += [f"{path.relative_to(ROOT)}: {m.group(0)!r}" for m in re.finditer(pattern, text)]
    assert offenders == []
