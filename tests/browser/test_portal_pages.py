"""Browser checks beyond the main flow: an upload resumed after a dropped connection and a page reload,
metric plots drawn from the progress stream, and the account pages (tokens, profile, institution)."""

from __future__ import annotations

import hashlib
import json
import os

from playwright.sync_api import expect

from jobs import services, states
from jobs.models import Dataset, File, Institution, Membership, Upload
from portal.accounts.models import ApiToken
from tests.browser.conftest import choose_files, log_in, shoot

CHUNK = 64 * 1024


def test_an_upload_resumes_from_the_servers_offset_after_a_drop_and_a_reload(new_page, portal, settings, user,
                                                                            tmp_path):
    settings.LOCUS_UPLOAD_CHUNK_BYTES = CHUNK
    dataset = Dataset.objects.create(owner=user, name="long movie")
    data = os.urandom(16 * CHUNK + 1234)
    movie = tmp_path / "long.tif"
    movie.write_bytes(data)
    page = new_page()
    log_in(page, "alice", "pw-alice")
    page.goto(f"/datasets/{dataset.pk}/")

    # The network goes away after three chunks: every later chunk request fails before reaching the server.
    passed = []

    def flaky(route):
        if len(passed) < 3:
            passed.append(route.request.url)
            route.continue_()
        else:
            route.abort("internetdisconnected")

    page.route("**/api/v1/uploads/*/chunk/*", flaky)
    choose_files(page, "#upload-input", str(movie))
    item = page.locator("#upload-list li[data-name='long.tif']")
    expect(item.locator(".state")).to_contain_text("retrying")
    upload = Upload.objects.get(dataset=dataset)
    assert upload.received == 3 * CHUNK and upload.file is None

    # A reload loses the page's state; the server still knows how far the upload got.
    page.unroute("**/api/v1/uploads/*/chunk/*")
    page.reload()
    expect(page.locator("#pending-uploads")).to_contain_text("long.tif")
    offsets = []
    page.on("request", lambda r: "/chunk/" in r.url and offsets.append(int(r.url.rsplit("offset=", 1)[1])))
    choose_files(page, "#upload-input", str(movie))
    item = page.locator("#upload-list li[data-name='long.tif']")
    expect(item.locator(".state")).to_have_text("stored, checksum verified", timeout=60_000)
    expect(item.locator(".pct")).to_have_text("100 %")
    assert offsets[0] == 3 * CHUNK, offsets  # continued where the server was, not from 0
    stored = File.objects.get(dataset=dataset)
    assert (stored.size, stored.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    upload.refresh_from_db()
    assert upload.file == stored


def test_an_upload_carries_on_by_itself_when_the_connection_comes_back(new_page, portal, settings, user, tmp_path):
    settings.LOCUS_UPLOAD_CHUNK_BYTES = CHUNK
    dataset = Dataset.objects.create(owner=user, name="flaky network")
    data = os.urandom(6 * CHUNK + 7)
    path = tmp_path / "frames.tif"
    path.write_bytes(data)
    page = new_page()
    log_in(page, "alice", "pw-alice")
    page.goto(f"/datasets/{dataset.pk}/")
    seen = []

    def drop_two(route):  # the 2nd and 3rd chunk requests are lost on the way
        seen.append(route.request.url)
        if len(seen) in (2, 3):
            route.abort("connectionreset")
        else:
            route.continue_()

    page.route("**/api/v1/uploads/*/chunk/*", drop_two)
    choose_files(page, "#upload-input", str(path))
    item = page.locator("#upload-list li[data-name='frames.tif']")
    expect(item.locator(".state")).to_have_text("stored, checksum verified", timeout=60_000)
    offsets = [int(url.rsplit("offset=", 1)[1]) for url in seen]
    assert offsets[:4] == [0, CHUNK, CHUNK, CHUNK]  # the lost chunk is sent again, from the server's offset
    assert File.objects.get(dataset=dataset).sha256 == hashlib.sha256(data).hexdigest()


def test_training_metrics_are_plotted_per_epoch_from_the_progress_stream(new_page, portal, user, worker):
    job, _ = services.submit(user, application="diagnostics", entrypoint="selftest")
    attempt = states.claim(job.pk, worker.worker)
    lines = [json.dumps({"progress": e / 5, "stage": "train", "epoch": e,
                         "metrics": {"loss": round(2.0 / e, 3), "val_loss": round(2.2 / e, 3),
                                     "val_jaccard": round(0.5 + e / 20, 3), "val_rmse_lat": round(60 - 5 * e, 1),
                                     "lr": 0.001}})
             for e in range(1, 4)]
    services.append_log(attempt, "simulating on the fly\n" + "\n".join(lines) + "\n")
    states.heartbeat(attempt.pk, attempt.fencing_token, json.loads(lines[-1]))
    page = new_page()
    log_in(page, "alice", "pw-alice")
    page.goto(f"/jobs/{job.pk}/")
    expect(page.locator("#job-stage")).to_have_text("stage train · epoch 3")
    plots = page.locator("#plots")
    expect(plots.locator("[data-plot='Loss'] polyline")).to_have_count(2)
    expect(plots.locator("[data-plot='Jaccard index'] polyline[data-metric=val_jaccard]")).to_have_count(1)
    expect(plots.locator("[data-plot='RMSE (nm)'] circle")).to_have_count(3)
    expect(plots.locator("[data-metric=lr]")).to_have_count(0)  # the learning rate is not a quality metric
    # A new epoch arriving while the page is open extends the curves without a reload.
    services.append_log(attempt, json.dumps({"progress": 0.8, "stage": "train", "epoch": 4,
                                             "metrics": {"loss": 0.4, "val_loss": 0.5, "val_jaccard": 0.71,
                                                         "val_rmse_lat": 38.0}}) + "\n")
    expect(plots.locator("[data-plot='RMSE (nm)'] circle")).to_have_count(4)
    shoot(page, "10-job-metrics")


def test_tokens_profile_and_institution_pages(new_page, portal, user, other_user):
    lab = Institution.objects.create(slug="hell-lab", name="Hell Lab")
    Membership.objects.create(user=user, institution=lab, is_admin=True)
    Membership.objects.create(user=other_user, institution=lab)
    page = new_page()
    log_in(page, "alice", "pw-alice")

    page.goto("/account/tokens/")
    page.click("text=Create token")
    expect(page.locator(".field.has-error .error")).to_contain_text("Give the token a name")
    page.fill("#token-name", "analysis laptop")
    page.click("text=Create token")
    secret = page.locator("#token-secret").inner_text().strip()
    token = ApiToken.objects.get(user=user, name="analysis laptop")
    assert secret.startswith(token.prefix) and len(secret) > 30
    shoot(page, "11-api-tokens")
    page.goto("/account/tokens/")
    expect(page.locator("#token-secret")).to_have_count(0)  # shown once only
    page.click("tr[data-token='analysis laptop'] >> text=Revoke")
    expect(page.locator("tr[data-token='analysis laptop']")).to_contain_text("revoked")
    token.refresh_from_db()
    assert token.revoked_at is not None

    page.goto("/account/")
    page.check("input[name=notify][value=failure]")
    page.click("text=Save")
    expect(page.locator(".messages")).to_contain_text("Profile saved")
    assert user.profile.__class__.objects.get(user=user).notify == "failure"
    shoot(page, "12-profile")
    page.goto("/jobs/new/?application=diagnostics&entrypoint=selftest")
    expect(page.locator("input[name=notify][value=failure]")).to_be_checked()

    page.click("nav >> text=Institutions")
    page.click("text=Hell Lab")
    row = page.locator("#members tr", has_text="bob")
    row.locator("text=Make admin").click()
    expect(page.locator(".messages")).to_contain_text("bob is now an admin")
    assert Membership.objects.get(user=other_user, institution=lab).is_admin
    shoot(page, "13-institution")


def test_workers_page_lists_the_fleet_issues_a_token_once_and_revokes(new_page, portal, staff, worker):
    from jobs.models import EnrollmentToken, Worker

    page = new_page()
    log_in(page, "root", "pw-root")
    page.click("nav >> text=Workers")
    row = page.locator(f"#worker-{worker.worker.pk}")
    expect(row).to_contain_text("worker-1")
    expect(row).to_contain_text("CPU only")
    shoot(page, "14-workers")

    page.fill("#id_note", "lab PC, room 2")
    page.click("text=Create enrollment token")
    raw = page.locator("pre.token").inner_text().strip()
    expect(page.locator("pre.commands").first).to_contain_text(f"python -m workers enroll --portal {portal}")
    expect(page.locator("pre.commands").first).to_contain_text(raw)
    assert EnrollmentToken.objects.filter(note="lab PC, room 2", used_at__isnull=True).count() == 1
    shoot(page, "15-enrollment-token")

    page.goto("/workers/")
    page.locator(f"#worker-{worker.worker.pk} >> text=Revoke").click()
    expect(page.locator(".messages")).to_contain_text("worker-1 revoked")
    assert not Worker.objects.get(pk=worker.worker.pk).enabled
    expect(page.locator(f"#worker-{worker.worker.pk}")).to_contain_text("revoked")

    page.click("nav >> text=Usage")
    expect(page.locator("h1")).to_contain_text("Usage")
    shoot(page, "16-usage")
