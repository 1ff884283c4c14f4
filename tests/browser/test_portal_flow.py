"""The acceptance flow in a real browser: sign up → approve → log in → upload a dataset → submit
`diagnostics selftest` through the generated form → watch it live → open the output preview → download."""

from __future__ import annotations

import hashlib
import json
import os

import pytest
from playwright.sync_api import expect

from jobs import services
from jobs.models import Dataset, File, Job
from tests.browser.conftest import choose_files, log_in, shoot
from tests.integration.conftest import wait_until

PASSWORD = "Spectral-Lattice-42"

# Records every value the job page shows in its status pill and progress bar, and every navigation:
# "live without reload" means the values change while the document stays the same.
WATCH = """() => {
  window.__seen = {status: [], progress: [], log: 0};
  const note = () => {
    const s = document.getElementById('job-status').textContent.trim();
    if (window.__seen.status[window.__seen.status.length - 1] !== s) window.__seen.status.push(s);
    const p = document.getElementById('job-bar').getAttribute('aria-valuenow');
    if (window.__seen.progress[window.__seen.progress.length - 1] !== p) window.__seen.progress.push(p);
    window.__seen.log = Math.max(window.__seen.log, document.getElementById('job-log').textContent.length);
  };
  new MutationObserver(note).observe(document.getElementById('job'), {subtree: true, childList: true,
    characterData: true, attributes: true});
  note();
}"""


def mails_to(messages, address: str) -> list:
    return [m for m in messages if address in (m.get("To") or "")]


@pytest.fixture
def approver(staff):
    staff.email = "root@example.org"
    staff.save(update_fields=["email"])
    return staff


def test_sign_up_approve_upload_submit_watch_preview_download(new_page, portal, start_agent, portal_celery,
                                                             smtp_server, approver, tmp_path):
    _, mails = smtp_server
    start_agent()
    page = new_page()

    # --- sign up: the account waits for approval ---------------------------------------------------------
    page.goto("/accounts/signup/")
    page.fill("#id_username", "maria")
    page.fill("#id_email", "maria@lab.example.org")
    page.fill("#id_first_name", "Maria")
    page.fill("#id_last_name", "Goeppert")
    page.fill("#id_note", "Nup96 3D imaging, two colours")
    page.fill("#id_password1", PASSWORD)
    page.fill("#id_password2", PASSWORD)
    shoot(page, "01-sign-up")
    page.click("button[type=submit]")
    expect(page.locator("#signup-done")).to_contain_text("waiting for approval")
    log_in(page, "maria", PASSWORD)
    expect(page.locator(".note.error")).to_contain_text("waiting for approval")
    shoot(page, "00-log-in-pending")
    wait_until(lambda: mails_to(mails, "root@example.org"), 60, what="the approval request email")

    # --- staff approves; Maria gets an email ----------------------------------------------------------------
    admin = new_page()
    log_in(admin, "root", "pw-root")
    admin.goto("/manage/accounts/")
    expect(admin.locator("#pending tr[data-user=maria]")).to_contain_text("maria@lab.example.org")
    shoot(admin, "02-approvals")
    admin.click("button[data-approve=maria]")
    expect(admin.locator(".messages")).to_contain_text("maria approved")
    approved = wait_until(lambda: mails_to(mails, "maria@lab.example.org"), 60, what="the approval email")
    assert "approved" in approved[0].get_payload()

    # --- log in, create a dataset, upload with progress and checksum ------------------------------------------
    log_in(page, "maria", PASSWORD)
    expect(page.locator("h1")).to_have_text("Your jobs")
    page.click("nav >> text=Datasets")
    page.fill("#id_name", "Nup96 beads")
    page.fill("#id_description", "bead stack and a short movie")
    page.click("text=Create dataset")
    expect(page.locator("h1")).to_have_text("Nup96 beads")
    data = os.urandom(3 * 1024 * 1024 + 17)
    movie = tmp_path / "movie.tif"
    movie.write_bytes(data)
    choose_files(page, "#upload-input", str(movie))
    item = page.locator("#upload-list li[data-name='movie.tif']")
    expect(item.locator(".state")).to_have_text("stored, checksum verified", timeout=60_000)
    expect(item.locator(".pct")).to_have_text("100 %")
    expect(item.locator(".bar")).to_have_attribute("aria-valuenow", "100")
    digest = hashlib.sha256(data).hexdigest()
    expect(item.locator(".sha")).to_have_text(f"sha256 {digest}")
    expect(page.locator("#files-table tr[data-file='movie.tif']")).to_contain_text(digest)
    stored = File.objects.get(owner__username="maria", name="movie.tif")
    assert (stored.size, stored.sha256) == (len(data), digest)
    page.reload()
    shoot(page, "04-dataset")
    page.click("nav >> text=Datasets")
    shoot(page, "03-datasets")

    # --- the generated form: errors at the field, then a valid submission --------------------------------------
    page.click("nav >> text=New job")
    page.click("#applications [data-app=diagnostics]")
    page.click("#entrypoints [data-entrypoint=selftest]")
    form = page.locator("#job-form")
    expect(form.locator("[data-param=matrix_size] .help")).to_contain_text("Side of the square matrices")
    expect(form.locator("#param-duration_s + .unit")).to_have_text("s")
    expect(form.locator("#param-matrix_size")).to_have_value("512")  # the schema's default
    page.fill("#param-repeats", "2.5")
    page.click("#submit-job")
    expect(page.locator("#param-repeats-error")).to_have_text("must be a whole number")
    page.fill("#param-repeats", "3")
    page.fill("#param-matrix_size", "8")
    page.click("#submit-job")
    expect(page.locator("#param-matrix_size-error")).to_contain_text("less than the minimum of 16")
    expect(page.locator("[data-param=matrix_size]")).to_have_class("field has-error")
    shoot(page, "05-new-job")
    assert not Job.objects.filter(owner__username="maria").exists()
    page.fill("#param-matrix_size", "64")
    page.fill("#param-duration_s", "5")
    page.click("#submit-job")

    # --- the job page updates itself until the job succeeds ------------------------------------------------------
    expect(page.locator("h1")).to_contain_text("diagnostics / selftest")
    navigations = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))
    page.evaluate(WATCH)
    expect(page.locator("#job-status")).to_have_text("running", timeout=60_000)
    expect(page.locator("#job-log")).to_contain_text(" · busy")  # its JSON progress lines, as text
    shoot(page, "06-job-running")
    expect(page.locator("#job-status")).to_have_text("succeeded", timeout=90_000)
    expect(page.locator("#job-log")).to_contain_text("GFLOP/s")
    expect(page.locator("#log-state")).to_have_text("complete")
    seen = page.evaluate("window.__seen")
    assert navigations == [], "the page reloaded itself"
    assert seen["status"][-2:] == ["running", "succeeded"], seen
    assert seen["progress"][-1] == "100" and len(seen["progress"]) >= 2, seen
    assert seen["log"] > 0
    expect(page.locator("#timeline")).to_contain_text("claimed")
    expect(page.locator("#attempts-table")).to_contain_text("agent-1")
    expect(page.locator("#cancel-form")).to_be_hidden()
    shoot(page, "07-job-succeeded")

    # --- preview and download the output; the provenance bundle ------------------------------------------------
    job = Job.objects.get(owner__username="maria")
    report = job.outputs.get(name="report.json")
    page.click("#outputs-table >> text=report.json")
    expect(page.locator("#preview-text")).to_contain_text('"matmul"')
    expect(page.locator("#file-sha")).to_have_text(report.sha256)
    shoot(page, "08-output-preview")
    with page.expect_download() as download_info:
        page.click("#download")
    body = download_info.value.path().read_bytes()
    assert hashlib.sha256(body).hexdigest() == report.sha256
    assert json.loads(body)["matmul"]["matrix_size"] == 64
    page.go_back()
    with page.expect_download() as bundle_info:
        page.click("#bundle-link")
    assert bundle_info.value.suggested_filename == f"locus-job-{job.pk}.zip"

    page.click("nav >> text=Jobs")
    expect(page.locator(f"#jobs-table tr[data-job='{job.pk}'] [data-field=status]")).to_have_text("succeeded")
    # A job that no online worker can take appears in the list, with its queue position and the reason it
    # waits (the sweeper's verdict), without a reload.
    navigations.clear()
    # Device = cuda: with it automatic, the embedded default would send the job to its CPU route instead.
    waiting, _ = services.submit(job.owner, application="decode-plex", entrypoint="train", params={"device": "cuda"})
    row = page.locator(f"#jobs-table tr[data-job='{waiting.pk}']")
    expect(row).to_contain_text("no online worker with ≥ 16 GB GPU memory", timeout=30_000)
    expect(row.locator("[data-field=status]")).to_have_text("queued")
    expect(row.locator("[data-field=queue]")).to_contain_text("#1 on gpu.16")
    assert navigations == []
    shoot(page, "09-jobs")
    assert Dataset.objects.filter(owner__username="maria").count() == 1


def test_another_users_job_page_is_404_and_a_running_job_is_cancelled_from_its_page(
        new_page, portal, start_agent, user, other_user):
    start_agent()
    foreign, _ = services.submit(other_user, application="diagnostics", entrypoint="selftest")
    page = new_page()
    log_in(page, "alice", "pw-alice")
    response = page.goto(f"/jobs/{foreign.pk}/")
    assert response.status == 404
    expect(page.locator("h1")).to_have_text("Not found")
    assert page.goto(f"/jobs/{foreign.pk}/live/").status == 404

    page.goto("/jobs/new/?application=diagnostics&entrypoint=selftest")
    page.fill("#param-duration_s", "600")
    page.click("#submit-job")
    expect(page.locator("#job-status")).to_have_text("running", timeout=60_000)
    job = Job.objects.get(owner=user)
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#cancel-job")
    expect(page.locator("#job-status")).to_have_text("cancelled")
    expect(page.locator(".messages")).to_contain_text("Job cancelled")
    job.refresh_from_db()
    assert job.status == Job.Status.CANCELLED
    assert job.attempts.get().status == "cancelled"
    expect(page.locator("#timeline")).to_contain_text("cancelled")
    # The agent hears it at its next heartbeat and stops the 600 s process: only then can its single slot
    # run the next job.
    page.goto("/jobs/new/?application=diagnostics&entrypoint=selftest")
    page.fill("#param-matrix_size", "32")
    page.click("#submit-job")
    expect(page.locator("#job-status")).to_have_text("succeeded", timeout=90_000)
