"""Pages a scientist reads (issue 15, point 8), server side: the jobs list tells jobs apart by their inputs,
dataset, producing job or pipeline step; JSON outputs preview as tables; the raw log downloads as text; the
portal has a favicon at /favicon.ico and in every page's head."""

from __future__ import annotations

import io
import json

import pytest
from django.test import Client

from jobs import services
from jobs.models import Dataset
from tests.unit.test_worker_api import call, claim, put_output

pytestmark = pytest.mark.django_db


@pytest.fixture
def browser(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def row_of(html: str, job) -> str:
    return html.split(f'<tr data-job="{job.pk}">')[1].split("</tr>")[0]


def test_the_jobs_list_tells_three_runs_of_one_entrypoint_apart(browser, user, worker,
                                                               django_capture_on_commit_callbacks):
    beads = Dataset.objects.create(owner=user, name="Nup96 beads")
    cells = Dataset.objects.create(owner=user, name="COS-7 cells")
    a = services.add_file(beads, "beads_locs.csv", io.BytesIO(b"x,y\n"))
    b = services.add_file(cells, "cell1_locs.csv", io.BytesIO(b"x,y\n"))
    c = services.add_file(cells, "cell2_locs.h5", io.BytesIO(b"\x89HDF"))
    first, _ = services.submit(user, application="comet", entrypoint="run", inputs={"locs": [str(a.pk)]})
    second, _ = services.submit(user, application="comet", entrypoint="run", inputs={"locs": [str(b.pk)]})
    # The output of an earlier job as the input of the next one: "outputs of <app> / <entrypoint> <id>".
    producer, _ = services.submit(user, application="diagnostics", entrypoint="selftest", notify="never")
    body = claim(worker, producer.pk).json()
    call(worker, body, "complete", {"exit_code": 0, "failure_class": None,
                                    "outputs": [put_output(body, worker, "drifted_locs.csv", b"x,y\n")]})
    output = producer.outputs.get()
    third, _ = services.submit(user, application="comet", entrypoint="run", inputs={"locs": [str(output.pk)]})
    # A pipeline's step: its name and its pipeline's.
    with django_capture_on_commit_callbacks(execute=True):
        pipeline, _ = services.submit(user, application="pipeline", entrypoint="drift-render",
                                      inputs={"locs": [str(c.pk)]})
    drift = pipeline.steps.get(step="drift")
    simulate, _ = services.submit(user, application="simulation", entrypoint="simulate", params={"n_frames": 500})

    page = browser.get("/").content.decode()
    assert "beads_locs.csv" in row_of(page, first) and "dataset Nup96 beads" in row_of(page, first)
    assert "cell1_locs.csv" in row_of(page, second) and "dataset COS-7 cells" in row_of(page, second)
    assert "drifted_locs.csv" in row_of(page, third)
    assert f"outputs of diagnostics / selftest {str(producer.pk)[:8]}" in row_of(page, third)
    assert "cell2_locs.h5" in row_of(page, pipeline) and "dataset COS-7 cells" in row_of(page, pipeline)
    assert "step drift of drift-render" in row_of(page, drift) and "cell2_locs.h5" in row_of(page, drift)
    assert "n_frames 500" in row_of(page, simulate)  # no inputs: what it changed from the defaults
    assert "no input files · default parameters" in row_of(page, producer)
    live = {r["id"]: r for r in browser.get("/jobs/live/").json()["jobs"]}
    assert live[str(first.pk)]["inputs"] == "beads_locs.csv" and live[str(drift.pk)]["step"] == "drift"
    assert f'<tr data-job="{second.pk}">' in browser.get("/jobs/live/").json()["rows_html"]


def test_a_list_of_many_inputs_shows_the_first_two_and_a_count(browser, user, test_registry):
    dataset = Dataset.objects.create(owner=user, name="movies")
    movies = [services.add_file(dataset, f"movie_{i}.tif", io.BytesIO(b"II*\x00")) for i in range(2)]
    cal = services.add_file(dataset, "cal.mat", io.BytesIO(b"MAT"))
    job, _ = services.submit(user, application="fit", entrypoint="run",
                             inputs={"frames": [str(m.pk) for m in movies], "calibration": [str(cal.pk)]})
    row = row_of(browser.get("/").content.decode(), job)
    assert "movie_0.tif, movie_1.tif +1 more" in row and "dataset movies" in row


def test_json_outputs_preview_as_tables_with_the_json_one_click_away(browser, user):
    dataset = Dataset.objects.create(owner=user, name="results")
    metrics = services.add_file(dataset, "metrics.json", io.BytesIO(json.dumps({
        "jaccard": 0.91234567, "rmse_lat": 23.456, "n_pairs": 812, "method": "hungarian", "rmse_ax": None,
        "frc": {"resolution_nm": 41.2}}).encode()))
    page = browser.get(f"/files/{metrics.pk}/").content.decode()
    table = page.split('id="preview-table"')[1].split("</table>")[0]
    assert '<th scope="row">jaccard</th><td class="num">0.9123</td>' in table
    assert '<th scope="row">rmse lat</th><td class="num">23.46</td>' in table
    assert '<th scope="row">n pairs</th><td class="num">812</td>' in table
    assert '<th scope="row">frc · resolution nm</th><td class="num">41.2</td>' in table
    assert '<th scope="row">rmse ax</th><td class="num">—</td>' in table
    assert "&quot;jaccard&quot;: 0.91234567" in page  # the file itself, below the table
    history = services.add_file(dataset, "train_history.json", io.BytesIO(json.dumps([
        {"epoch": 1, "train": {"total": 2.5}, "val": {"jaccard": 0.5}},
        {"epoch": 2, "train": {"total": 1.25}, "val": {"jaccard": 0.75}}]).encode()))
    page = browser.get(f"/files/{history.pk}/").content.decode()
    table = page.split('id="preview-table"')[1].split("</table>")[0]
    assert "<th>epoch</th><th>train · total</th><th>val · jaccard</th>" in table
    assert '<td class="num">2</td><td class="num">1.25</td><td class="num">0.75</td>' in table
    plain = services.add_file(dataset, "notes.json", io.BytesIO(b'"just a string"'))
    assert 'id="preview-table"' not in browser.get(f"/files/{plain.pk}/").content.decode()


def test_the_raw_log_downloads_whole_as_text_and_only_to_its_owner(browser, user, other_user, worker):
    job, _ = services.submit(user, application="diagnostics", entrypoint="selftest", notify="never")
    body = claim(worker, job.pk).json()
    line = json.dumps({"progress": 0.62, "stage": "train", "epoch": 12, "metrics": {"loss": 0.123}})
    call(worker, body, "log", {"text": "starting\n" + line + "\n"})
    call(worker, body, "log", {"text": "é done\n"})
    response = browser.get(f"/jobs/{job.pk}/log.txt")
    assert response.status_code == 200 and response["Content-Type"] == "text/plain; charset=utf-8"
    assert response["Content-Disposition"] == f'attachment; filename="locus-job-{job.pk}.log"'
    assert b"".join(response.streaming_content).decode() == f"starting\n{line}\né done\n"
    page = browser.get(f"/jobs/{job.pk}/").content.decode()
    assert f'href="/jobs/{job.pk}/log.txt" id="log-download"' in page
    assert '<th scope="row">matrix size</th><td class="num">512</td>' in page  # parameters as a table too
    other = Client()
    other.force_login(other_user)
    assert other.get(f"/jobs/{job.pk}/log.txt").status_code == 404


def test_the_favicon_is_served_and_linked_so_no_page_logs_a_404(client, browser):
    response = client.get("/favicon.ico")  # browsers ask for it without logging in
    assert response.status_code == 200 and response["Content-Type"] == "image/x-icon"
    assert b"".join(response.streaming_content)[:4] == b"\x00\x00\x01\x00"  # an ICO file
    assert "max-age" in response["Cache-Control"]
    for page in (client.get("/accounts/login/"), browser.get("/")):
        html = page.content.decode()
        assert '<link rel="icon" href="/static/portal/favicon.ico"' in html
        assert '<link rel="icon" href="/static/portal/favicon.svg" type="image/svg+xml">' in html
    assert client.get("/static/portal/favicon.svg").status_code == 200
