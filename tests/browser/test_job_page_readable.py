"""The job page a scientist reads (issue 15, point 8), in a real browser: the algorithms' JSON progress lines
show as text ("62 % · train · epoch 3 · loss 0.667 · val JI 0.65"), other lines as printed, the raw JSON a
click (and a download) away; the metrics are a table of their latest values; the progress bar follows the
log when the worker's heartbeat lags behind it (it said 0 % while the log said 0.62)."""

from __future__ import annotations

import json

from playwright.sync_api import expect

from jobs import services, states
from tests.browser.conftest import log_in
from tests.unit.test_worker_api import call


def line(epoch: int, progress: float) -> str:
    return json.dumps({"progress": progress, "stage": "train", "epoch": epoch,
                       "metrics": {"loss": round(2.0 / epoch, 3), "val_loss": round(2.2 / epoch, 3),
                                   "val_jaccard": round(0.5 + epoch / 20, 3),
                                   "val_rmse_lat": round(60 - 5 * epoch, 1), "lr": 0.001}})


def test_progress_lines_read_as_text_metrics_as_a_table_and_the_bar_follows_the_log(new_page, portal, user,
                                                                                   worker):
    job, _ = services.submit(user, application="diagnostics", entrypoint="selftest", notify="never")
    attempt = states.claim(job.pk, worker.worker)
    # The worker's last heartbeat said 0 %; the log already holds three epochs, the last at 62 %.
    states.heartbeat(attempt.pk, attempt.fencing_token, {"progress": 0.0, "stage": "train"})
    services.append_log(attempt, "simulating on the fly; validation set drawn once\n" +
                        "".join(line(e, p) + "\n" for e, p in [(1, 0.2), (2, 0.4), (3, 0.62)]))
    page = new_page()
    log_in(page, "alice", "pw-alice")
    page.goto(f"/jobs/{job.pk}/")

    log = page.locator("#job-log")
    expect(log).to_contain_text("62 % · train · epoch 3 · loss 0.667 · val loss 0.733 · val JI 0.65 · "
                                "val RMSE lat 45 nm · LR 0.001")
    expect(log).to_contain_text("simulating on the fly; validation set drawn once")  # other lines as printed
    expect(log).not_to_contain_text('"progress"')
    expect(log.locator(".progress-line")).to_have_count(3)
    assert json.loads(log.locator(".progress-line").nth(2).get_attribute("title"))["epoch"] == 3  # raw on hover

    # The bar and the stage follow the log, not the lagging heartbeat.
    expect(page.locator("#job-bar")).to_have_attribute("aria-valuenow", "62")
    expect(page.locator("#job-pct")).to_have_text("62 %")
    expect(page.locator("#job-stage")).to_have_text("stage train · epoch 3")

    # The metrics: one row per metric with its latest value, its epoch and the best so far.
    table = page.locator("#metrics-table")
    expect(page.locator("#metrics-card")).to_be_visible()
    expect(table.locator("tbody tr")).to_have_count(5)
    expect(table.locator("tr[data-metric=val_jaccard] td")).to_have_text(["val JI", "0.65", "3", "0.65 (epoch 3)"])
    expect(table.locator("tr[data-metric=val_rmse_lat] td")).to_have_text(["val RMSE lat", "45 nm", "3",
                                                                          "45 nm (epoch 3)"])
    expect(table.locator("tr[data-metric=lr] td").nth(3)).to_have_text("")  # a learning rate has no "best"
    assert "{" not in table.inner_text()

    # A new epoch arrives while the page is open: text, table and bar move without a reload.
    services.append_log(attempt, "epoch 4 took 2.1 s\n" + line(4, 0.8) + "\n")
    expect(page.locator("#job-bar")).to_have_attribute("aria-valuenow", "80")
    expect(log).to_contain_text("80 % · train · epoch 4 · loss 0.5")
    expect(log).to_contain_text("epoch 4 took 2.1 s")
    expect(table.locator("tr[data-metric=loss] td")).to_have_text(["loss", "0.5", "4", "0.5 (epoch 4)"])
    expect(page.locator("#plots [data-plot='Loss'] polyline")).to_have_count(2)

    # The program's own lines, one click away, and the whole raw log as a download.
    page.check("#log-raw")
    expect(log).to_contain_text('{"progress": 0.8, "stage": "train", "epoch": 4')
    expect(log.locator(".progress-line")).to_have_count(0)
    page.uncheck("#log-raw")
    expect(log.locator(".progress-line")).to_have_count(4)
    with page.expect_download() as download:
        page.click("#log-download")
    raw = download.value.path().read_text()
    assert raw.startswith("simulating on the fly") and line(4, 0.8) in raw

    # A heartbeat ahead of the log wins; the end of the job is 100 %.
    states.heartbeat(attempt.pk, attempt.fencing_token, {"progress": 0.9, "stage": "save"})
    expect(page.locator("#job-bar")).to_have_attribute("aria-valuenow", "90")
    expect(page.locator("#job-stage")).to_have_text("stage save")
    call(worker, {"attempt_id": str(attempt.pk), "fencing_token": attempt.fencing_token}, "complete",
         {"exit_code": 0, "failure_class": None, "outputs": []})
    expect(page.locator("#job-status")).to_have_text("succeeded")
    expect(page.locator("#job-bar")).to_have_attribute("aria-valuenow", "100")
    expect(page.locator("#log-state")).to_have_text("complete")


def test_the_train_form_has_range_inputs_and_a_camera_select_that_opens_its_settings(new_page, portal, user):
    from jobs.models import Job

    page = new_page()
    log_in(page, "alice", "pw-alice")
    page.goto("/jobs/new/?application=decode-plex&entrypoint=train")
    background = page.locator("[data-param=background]")
    expect(background.locator(".part")).to_have_text(["min", "max"])
    expect(background.locator("label .unit")).to_have_text("(photons/px)")
    expect(page.locator("#param-background-0")).to_have_value("10")
    expect(page.locator("#param-background-1")).to_have_value("100")
    expect(background.locator(".help")).to_contain_text("default 10 – 100")
    expect(page.locator("[data-param=frame_size] .part")).to_have_text(["H", "W"])

    custom = page.locator("[data-when-for=param-camera][data-when='form:1']")
    expect(custom).to_be_hidden()
    expect(custom.locator("#param-camera-1-em_gain")).to_be_disabled()  # neither sent nor validated
    page.select_option("#param-camera", label="custom settings…")
    expect(custom).to_be_visible()
    page.select_option("#param-camera-1-preset", "\"smlm-challenge-emccd\"")
    page.fill("#param-camera-1-em_gain", "250")
    page.select_option("#param-shifts_px", label="per channel…")
    expect(page.locator("[data-param='shifts_px.1'] .part")).to_have_text(["x", "y"])
    page.fill("#param-background-0", "20")
    page.fill("#param-background-1", "")
    page.fill("#param-epochs", "2")
    page.click("#submit-job")
    expect(page.locator("#param-background-error")).to_have_text("give max too, or leave all empty for the default")
    expect(page.locator("#param-camera-1-em_gain")).to_have_value("250")  # the form keeps what was typed
    expect(custom).to_be_visible()
    page.fill("#param-background-1", "80")
    page.select_option("#param-shifts_px", label="none")
    page.select_option("#param-device", "\"cuda\"")  # stays queued: nothing here has a GPU
    page.click("#submit-job")
    expect(page.locator("h1")).to_contain_text("decode-plex / train")
    job = Job.objects.get(owner=user)
    assert job.params["background"] == [20, 80] and job.params["epochs"] == 2 and job.params["shifts_px"] == []
    assert job.params["camera"] == {"preset": "smlm-challenge-emccd", "em_gain": 250}
