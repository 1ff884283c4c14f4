"""Every page of the portal works under its Content-Security-Policy (portal/csp.py: scripts and styles from
its own origin only) and Chromium reports no violation on any of them: the browser's own verdict on what the
policy refused, page by page, including the admin and the API docs (Redoc, served by the portal itself)."""

from __future__ import annotations

import io
import json
import re

from playwright.sync_api import expect

from jobs import services, states
from jobs.models import Dataset, Institution, Membership
from tests.browser.conftest import log_in
from tests.security.test_csp import PNG
from tests.unit.test_worker_api import call, claim, put_output

# Redoc's sidebar shows "API docs by Redocly" with a logo from Redocly's CDN; the policy refuses it, as it
# should (no third-party requests), and Redoc drops the image when it fails to load.
REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"


def _visit(page, path: str, csp_violations: list[str], expected: str | None = None) -> None:
    response = page.goto(path)
    assert response.ok or response.status == 404, (path, response.status)
    assert "script-src 'self'" in response.headers["content-security-policy"], path
    page.wait_for_load_state("load")
    page.wait_for_timeout(300)  # reports travel asynchronously
    if expected:
        csp_violations[:] = [v for v in csp_violations if expected not in v]
    assert csp_violations == [], f"{path}: {csp_violations}"


def test_the_main_pages_report_no_csp_violation_and_still_work(new_page, portal, csp_violations, user,
                                                              other_user, staff, worker):
    dataset = Dataset.objects.create(owner=user, name="beads")
    services.add_file(dataset, "frames.tif", io.BytesIO(b"frames"))
    lab = Institution.objects.create(slug="lab", name="Lab")
    Membership.objects.create(user=user, institution=lab, is_admin=True)
    Membership.objects.create(user=other_user, institution=lab)
    done, _ = services.submit(user, application="diagnostics", entrypoint="selftest", notify="never")
    body = claim(worker, done.pk).json()
    outputs = [put_output(body, worker, "report.json", b'{"ok": true}'), put_output(body, worker, "render.png", PNG)]
    call(worker, body, "complete", {"exit_code": 0, "failure_class": None, "outputs": outputs})
    running, _ = services.submit(user, application="diagnostics", entrypoint="selftest", notify="never")
    attempt = states.claim(running.pk, worker.worker)
    line = {"progress": 0.4, "stage": "train", "epoch": 2, "metrics": {"loss": 0.5}}
    services.append_log(attempt, json.dumps({**line, "epoch": 1, "metrics": {"loss": 0.9}}) + "\n" + json.dumps(line) + "\n")
    states.heartbeat(attempt.pk, attempt.fencing_token, line)

    page = new_page()
    for path in ["/accounts/login/", "/accounts/signup/", "/accounts/password_reset/"]:
        _visit(page, path, csp_violations)
    log_in(page, "alice", "pw-alice")
    expect(page.locator("h1")).to_have_text("Your jobs")

    # Progress bars take their width from data-pct (no style attribute): the running job's is 40 % wide.
    _visit(page, "/", csp_violations)
    bar = page.locator(f"#jobs-table tr[data-job='{running.pk}'] [data-field=bar]")
    expect(bar).to_have_css("width", re.compile(r"[1-9][0-9.]*px"))
    assert bar.evaluate("e => e.style.width") == "40%"
    # A select that submits its form when changed (was an onchange attribute).
    page.select_option("#job-filters select[name=application]", "diagnostics")
    expect(page).to_have_url(re.compile(r"application=diagnostics"))

    _visit(page, f"/jobs/{running.pk}/", csp_violations)
    assert page.locator("#job-bar span").evaluate("e => e.style.width") == "40%"
    expect(page.locator("#plots [data-plot='Loss'] .legend i")).to_have_css("background-color", "rgb(47, 111, 168)")
    # Cancel asks first (was an onsubmit attribute): dismissed, the job keeps running.
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.click("#cancel-job")
    page.wait_for_timeout(500)
    running.refresh_from_db()
    assert running.status == "running"

    _visit(page, f"/jobs/{done.pk}/", csp_violations)
    expect(page.locator("#output-previews img")).to_have_js_property("naturalWidth", 1)  # the preview loaded
    for path in ["/jobs/new/", "/jobs/new/?application=diagnostics&entrypoint=selftest", f"/jobs/new/?clone={done.pk}",
                 "/datasets/", f"/datasets/{dataset.pk}/", f"/files/{done.outputs.get(name='report.json').pk}/",
                 f"/files/{done.outputs.get(name='render.png').pk}/", "/account/", "/account/tokens/",
                 "/institutions/", "/institutions/lab/", "/usage/", "/no/such/page/"]:
        _visit(page, path, csp_violations)
    # The dataset's delete asks first too: dismissed, nothing is deleted.
    _visit(page, f"/datasets/{dataset.pk}/", csp_violations)
    expect(page.locator("#quota .bar > span")).to_have_css("width", re.compile(r"\d"))
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.click("#delete-dataset")
    page.wait_for_timeout(500)
    assert Dataset.objects.filter(pk=dataset.pk).exists()

    admin = new_page()
    log_in(admin, "root", "pw-root")
    for path in ["/manage/accounts/", "/workers/", "/admin/", "/admin/jobs/job/", f"/admin/jobs/job/{done.pk}/change/",
                 "/admin/auth/user/", f"/admin/auth/user/{user.pk}/change/"]:
        _visit(admin, path, csp_violations)
    expect(admin.locator("#site-name")).to_be_visible()  # the admin's own stylesheet and scripts load

    # The API docs: Redoc from the portal's static files renders the schema, search worker included.
    _visit(admin, "/api/docs/", csp_violations, expected=REDOC_LOGO)
    expect(admin.get_by_role("heading", name=re.compile("Locus API"))).to_be_visible(timeout=30_000)
    expect(admin.locator("img[alt='redocly logo']")).to_have_count(0)  # refused, and Redoc let it go
    admin.get_by_placeholder("Search...").fill("jobs")
    expect(admin.locator("[role=search] li, [data-role='search:result']").first).to_be_visible()
    admin.wait_for_timeout(300)
    csp_violations[:] = [v for v in csp_violations if REDOC_LOGO not in v]
    assert csp_violations == []
