"""Job and dataset pages (Django test client): the registry-generated form and its field errors, clone and
re-run, the live JSON, queue positions, previews, the QC report on the job page, dataset deletion refused
while a job uses it."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from django.http import QueryDict
from django.test import Client

from jobs import services, states
from jobs.models import Dataset, Job
from portal.web import schema_form
from tests.unit.test_worker_api import call, claim, put_output

pytestmark = pytest.mark.django_db


@pytest.fixture
def browser(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


# --- the form from the JSON Schema ----------------------------------------------------------------------

SCHEMA = {"type": "object", "properties": {
    "px_size_nm": {"type": "number", "default": 100.0, "minimum": 1, "title": "Pixel size (nm)",
                   "description": "Camera pixel in the sample plane"},
    "frame_size": {"type": "array", "items": {"type": "integer"}, "default": [32, 32], "title": "Frame size (px, H W)"},
    "three_d": {"type": "boolean", "default": False},
    "mode": {"type": "string", "enum": ["single", "biplane"], "default": "single"},
    "device": {"type": ["string", "null"], "enum": ["cpu", "cuda", None], "default": None},
    "background": {"type": "object", "default": {"low": 10}, "title": "Background",
                   "properties": {"low": {"type": "number", "default": 10}}},
    "structure": {"type": ["string", "object"], "default": "uniform"},
}}


def test_fields_carry_defaults_units_help_and_kinds():
    fields = {f.path: f for f in schema_form.leaves(schema_form.build(SCHEMA))}
    px = fields["px_size_nm"]
    assert (px.kind, px.label, px.unit, px.value, px.help, px.bounds) == (
        "number", "Pixel size", "nm", "100", "Camera pixel in the sample plane", "≥ 1")
    assert fields["frame_size"].kind == "list" and fields["frame_size"].value == "32, 32"
    assert fields["frame_size"].unit == "" and fields["frame_size"].label == "Frame size (px, H W)"
    assert fields["mode"].kind == "select" and fields["device"].value == "null"
    assert fields["background.low"].kind == "number" and fields["structure"].kind == "json"


def test_form_values_become_params_and_blank_fields_take_the_defaults():
    fields = schema_form.build(SCHEMA)
    post = QueryDict(mutable=True)
    post.update({"p.px_size_nm": "", "p.frame_size": "64, 48", "p.three_d": "on", "p.mode": '"biplane"',
                 "p.device": "null", "p.background.low": "2.5", "p.structure": '{"kind": "filaments"}'})
    params, errors = schema_form.parse(SCHEMA, post, fields)
    assert errors == {}
    assert params == {"frame_size": [64, 48], "three_d": True, "mode": "biplane", "device": None,
                      "background": {"low": 2.5}, "structure": {"kind": "filaments"}}


def test_text_that_is_not_the_right_kind_of_value_is_an_error_at_its_field():
    fields = schema_form.build(SCHEMA)
    post = QueryDict(mutable=True)
    post.update({"p.px_size_nm": "wide", "p.frame_size": "64, x"})
    _, errors = schema_form.parse(SCHEMA, post, fields)
    assert errors == {"px_size_nm": "must be a number", "frame_size": "a list of integers separated by commas"}
    left = schema_form.attach_errors(fields, {"frame_size.1": "too big", "roi": "unknown parameter"})
    assert left == {"roi": "unknown parameter"}
    assert {f.path: f.error for f in schema_form.leaves(fields)}["frame_size"] == "too big"


def test_the_new_job_page_submits_through_the_registry_and_shows_its_error_at_the_field(browser, user):
    url = "/jobs/new/?application=diagnostics&entrypoint=selftest"
    page = browser.get(url)
    assert page.status_code == 200 and b'name="p.matrix_size"' in page.content and b"default 512" in page.content
    bad = browser.post(url, {"p.matrix_size": "8", "notify": "never"})
    assert bad.status_code == 400
    assert b'id="param-matrix_size-error">8 is less than the minimum of 16' in bad.content
    assert not Job.objects.exists()
    ok = browser.post(url, {"p.matrix_size": "32", "p.repeats": "", "notify": "never"})
    job = Job.objects.get(owner=user)
    assert ok.status_code == 302 and ok["Location"] == f"/jobs/{job.pk}/"
    assert job.params["matrix_size"] == 32 and job.params["repeats"] == 5 and job.notify == "never"


def test_input_pickers_offer_only_files_with_the_slots_suffixes(browser, user, test_registry):
    dataset = Dataset.objects.create(owner=user, name="run 1")
    movie = services.add_file(dataset, "movie.tif", io.BytesIO(b"II*\x00"))
    services.add_file(dataset, "notes.txt", io.BytesIO(b"hello"))
    cal = services.add_file(dataset, "beads_3dcal.mat", io.BytesIO(b"MATLAB"))
    page = browser.get("/jobs/new/?application=fit&entrypoint=run").content.decode()
    frames = page.split('data-slot="frames"')[1].split('data-slot="calibration"')[0]
    assert "movie.tif" in frames and "notes.txt" not in frames and "beads_3dcal.mat" not in frames
    wrong = browser.post("/jobs/new/?application=fit&entrypoint=run",
                         {"input.frames": [str(movie.pk)], "input.calibration": [str(movie.pk)]})
    assert wrong.status_code == 400 and b'id="slot-calibration-error"' in wrong.content
    right = browser.post("/jobs/new/?application=fit&entrypoint=run",
                         {"input.frames": [str(movie.pk)], "input.calibration": [str(cal.pk)]})
    assert right.status_code == 302


def test_clone_and_edit_prefills_the_earlier_jobs_values_and_rerun_submits_a_copy(browser, user):
    job, _ = services.submit(user, application="diagnostics", entrypoint="selftest",
                             params={"matrix_size": 48}, notify="failure")
    page = browser.get(f"/jobs/new/?clone={job.pk}").content.decode()
    assert 'name="p.matrix_size" value="48"' in page
    assert 'value="failure" checked' in page
    rerun = browser.post(f"/jobs/{job.pk}/rerun/")
    copy = Job.objects.exclude(pk=job.pk).get()
    assert rerun["Location"] == f"/jobs/{copy.pk}/" and copy.params == job.params and copy.notify == "failure"


def test_live_json_and_list_show_queue_position_and_why_a_job_waits(browser, user, other_user):
    first, _ = services.submit(other_user, application="diagnostics", entrypoint="selftest")
    second, _ = services.submit(user, application="diagnostics", entrypoint="selftest")
    states.flag_waiting(second, "no online worker with ≥ 1 CPU cores and ≥ 1 GB RAM")
    live = browser.get(f"/jobs/{second.pk}/live/").json()
    assert live["status"] == "queued" and live["queue_position"] == 2
    assert live["waiting_reason"].startswith("no online worker")
    assert "submitted" in live["sections"]["events"]
    rows = browser.get("/jobs/live/?status=active").json()["jobs"]
    assert [r["id"] for r in rows] == [str(second.pk)]  # never another user's job
    assert browser.get("/jobs/live/?status=succeeded").json()["jobs"] == []
    assert browser.get(f"/jobs/{first.pk}/").status_code == 404
    assert b"#2 in the cpu queue" in browser.get(f"/jobs/{second.pk}/").content


def test_cancel_from_the_page_and_a_second_cancel_is_explained(browser, user):
    job, _ = services.submit(user, application="diagnostics", entrypoint="selftest")
    browser.post(f"/jobs/{job.pk}/cancel/")
    job.refresh_from_db()
    assert job.status == "cancelled"
    again = browser.post(f"/jobs/{job.pk}/cancel/", follow=True)
    assert b"Not cancelled: job is already cancelled" in again.content


def test_dataset_delete_is_refused_while_a_queued_job_uses_it(browser, user, test_registry):
    dataset = Dataset.objects.create(owner=user, name="busy")
    frames = services.add_file(dataset, "movie.tif", io.BytesIO(b"II*\x00"))
    cal = services.add_file(dataset, "cal.mat", io.BytesIO(b"MAT"))
    job, _ = services.submit(user, application="fit", entrypoint="run",
                             inputs={"frames": [str(frames.pk)], "calibration": [str(cal.pk)]})
    page = browser.get(f"/datasets/{dataset.pk}/").content.decode()
    assert frames.sha256 in page and f"/jobs/{job.pk}/" in page
    refused = browser.post(f"/datasets/{dataset.pk}/delete/", follow=True)
    assert b"Not deleted: a queued or running job uses this dataset" in refused.content
    states.cancel(job)
    browser.post(f"/datasets/{dataset.pk}/delete/")
    assert not Dataset.objects.filter(pk=dataset.pk).exists()


def test_datasets_page_shows_the_quota(browser, user, settings):
    settings.LOCUS_USER_QUOTA_BYTES = 1000
    dataset = Dataset.objects.create(owner=user, name="small")
    services.add_file(dataset, "a.csv", io.BytesIO(b"x" * 250))
    page = browser.get("/datasets/").content.decode()
    assert "25.0 %" in page and "250\xa0bytes of 1000\xa0bytes used" in page


def test_a_json_output_is_previewed_pretty_and_an_image_inline(browser, user, worker):
    job, _ = services.submit(user, application="diagnostics", entrypoint="selftest")
    dataset = Dataset.objects.create(owner=user, name="d")
    report = services.add_file(dataset, "report.json", io.BytesIO(json.dumps({"matmul": {"gflops": 3}}).encode()))
    page = browser.get(f"/files/{report.pk}/").content.decode()
    assert "&quot;matmul&quot;: {" in page and report.sha256 in page
    image = services.add_file(dataset, "render.png", io.BytesIO(b"\x89PNG\r\n"))
    assert f'src="/api/v1/files/{image.pk}/download/"' in browser.get(f"/files/{image.pk}/").content.decode()
    other = Client()
    other.force_login(type(user).objects.create_user("mallory", "m@example.org", "pw"))
    assert other.get(f"/files/{report.pk}/").status_code == 404


def test_every_registry_form_posts_its_defaults_back_as_valid_params(browser):
    """What the browser sends for an untouched form, read from the rendered page (sub-forms and per-item
    inputs included), validates as the defaults for every entrypoint of the registry."""
    from jobs.registry import get_registry
    from tests.unit.test_schema_form import form_values

    for entry in get_registry().entrypoints():
        page = browser.get(f"/jobs/new/?application={entry.application}&version={entry.version}"
                           f"&entrypoint={entry.name}")
        assert page.status_code == 200, entry.key
        fields = schema_form.build(entry.params_schema)
        params, errors = schema_form.parse(entry.params_schema, form_values(page.content.decode()), fields)
        assert errors == {}, entry.key
        assert entry.resolve_params(params) == entry.resolve_params({}), entry.key


def test_staff_cancel_and_requeue_any_job_from_the_admin_with_an_audit_event(user, staff):
    job, _ = services.submit(user, application="diagnostics", entrypoint="selftest", params={"repeats": 2})
    admin = Client()
    admin.force_login(staff)
    admin.post("/admin/jobs/job/", {"action": "cancel_jobs", "_selected_action": [str(job.pk)]})
    job.refresh_from_db()
    assert job.status == "cancelled" and job.events.filter(kind="admin", message__contains="root").exists()
    admin.post("/admin/jobs/job/", {"action": "requeue_jobs", "_selected_action": [str(job.pk)]})
    again = Job.objects.exclude(pk=job.pk).get()
    assert again.owner == user and again.status == "queued" and again.params == job.params
    assert again.events.filter(kind="admin", message__contains=str(job.pk)).exists()
    assert admin.get("/admin/admin/logentry/").status_code == 200


# --- the render and the QC report on the job page ------------------------------------------------------

@pytest.fixture(scope="module")
def report_dir(tmp_path_factory) -> Path:
    """What the real code writes for a small simulated table (≈3 s): the QC report (qc.json, qc_*.png,
    qc.html), a render, and the table itself (locs.h5) as the job's input."""
    from algorithms.io.formats import write_table
    from algorithms.io.table import LocTable
    from algorithms.render import output
    from algorithms.render.cli import RENDER_DEFAULTS, render_tables
    from algorithms.render.qc import build_report

    rng = np.random.default_rng(4)  # blinking emitters: 300 fluorophores, Poisson(10) localizations each, σ 10 nm
    fx, fy = rng.uniform(0, 2000, 300), rng.uniform(0, 2000, 300)
    owner = np.repeat(np.arange(300), rng.poisson(10, 300))
    n = len(owner)
    frame = rng.integers(0, 1000, n)
    table = LocTable.from_arrays({"px_size_nm": 100.0}, frame=frame, x=fx[owner] + rng.normal(0, 10, n),
                                 y=fy[owner] + rng.normal(0, 10, n), photons=rng.gamma(4, 250, n),
                                 bg=rng.uniform(5, 15, n), sigma_x=np.full(n, 10.0), sigma_y=np.full(n, 10.0),
                                 drift_x=frame * 0.01, drift_y=frame * -0.02)
    out = tmp_path_factory.mktemp("report")
    build_report(table, out, title="QC: locs.h5")
    image, grid, _ = render_tables([table], {**RENDER_DEFAULTS, "pixel_nm": 20.0})
    output.save_png(image, out / "render.png", grid.pixel_nm, None)
    write_table(table, out / "locs.h5")
    return out


def _finished_job(user, worker, inputs: dict[str, Path], outputs: dict[str, bytes]) -> Job:
    """A render/qc job that a worker ran: claimed, its outputs uploaded and verified, completed."""
    dataset = Dataset.objects.create(owner=user, name="tables")
    ids = {slot: [str(services.add_file(dataset, path.name, io.BytesIO(path.read_bytes())).pk)]
           for slot, path in inputs.items()}
    job, _ = services.submit(user, application="render", entrypoint="qc", inputs=ids, notify="never")
    body = claim(worker, job.pk).json()
    done = call(worker, body, "complete", {"exit_code": 0, "failure_class": None, "outputs": [
        put_output(body, worker, name, data) for name, data in outputs.items()]})
    assert done.json()["job_status"] == "succeeded", done.content
    return job


def _qc_outputs(report_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(report_dir.iterdir()) if p.name.startswith("qc")}


def test_job_page_shows_the_render_first_and_the_qc_report_with_its_figures_and_captioned_plots(
        browser, user, worker, report_dir):
    outputs = {**_qc_outputs(report_dir), "render.png": (report_dir / "render.png").read_bytes(),
               "frc.png": (report_dir / "qc_frc.png").read_bytes()}
    job = _finished_job(user, worker, {"table": report_dir / "locs.h5"}, outputs)
    files = {f.name: f for f in job.outputs.all()}
    summary = json.loads(outputs["qc.json"])
    page = browser.get(f"/jobs/{job.pk}/").content.decode()

    previews = page.split('id="output-previews"')[1].split("</div>")[0]
    shown = re.findall(r'data-preview="([^"]+)"', previews)
    assert shown == ["render.png", "frc.png"]  # the render first; QC plots are not repeated here
    assert f'<img src="/api/v1/files/{files["render.png"].pk}/download/"' in previews

    qc = page.split('id="qc"')[1]
    plots = {name for name in files if name.startswith("qc_")}
    assert plots == {"qc_subpixel.png", "qc_photons.png", "qc_bg.png", "qc_sigma.png", "qc_per_frame.png",
                     "qc_frc.png", "qc_drift.png"}
    for name in plots:
        assert f'<img src="/api/v1/files/{files[name].pk}/download/"' in qc, name
    assert re.findall(r'data-qc-plot="([^"]+)"', qc) == [  # in the report's order
        "qc_subpixel.png", "qc_photons.png", "qc_bg.png", "qc_sigma.png", "qc_per_frame.png", "qc_frc.png",
        "qc_drift.png"]
    resolution = summary["frc"]["resolution_nm"]
    assert 15 < resolution < 60
    figures = qc.split('id="qc-figures"')[1].split("</dl>")[0]
    assert f"<dt>Localizations</dt><dd><strong>{summary['localizations']:,}</strong>" in figures
    assert f"<dt>Frames</dt><dd><strong>{summary['frames']:,}</strong>" in figures
    assert f"<dt>FRC resolution</dt><dd><strong>{resolution:.3g} nm</strong>" in figures
    assert f"{summary['median_photons']:.3g} photons" in figures
    assert "x 10 nm · y 10 nm" in figures  # median precision
    assert f"<strong>Fourier ring correlation</strong>: resolution {resolution:.3g} nm" in qc
    assert f"<strong>Photons per localization</strong>: median {summary['median_photons']:.3g} photons" in qc
    assert "<strong>Sub-pixel positions</strong>: χ²/dof against flat: x " in qc
    # qc.html is the job's content: downloadable as an attachment, never shown as a page of the portal
    assert "<iframe" not in page and "<h1>QC: locs.h5" not in page
    download = browser.get(f"/api/v1/files/{files['qc.html'].pk}/download/")
    assert download.status_code == 200 and download["Content-Disposition"].startswith("attachment")
    # the live JSON carries the same section, so a job that finishes while the page is open shows it
    assert browser.get(f"/jobs/{job.pk}/live/").json()["sections"]["qc"].startswith('<div class="card qc" id="qc">')


def test_another_user_cannot_see_the_job_page_the_qc_plots_or_their_bytes(user, other_user, worker, report_dir):
    job = _finished_job(user, worker, {"table": report_dir / "locs.h5"}, _qc_outputs(report_dir))
    plot = job.outputs.get(name="qc_frc.png")
    other = Client()
    other.force_login(other_user)
    for url in (f"/jobs/{job.pk}/", f"/jobs/{job.pk}/live/", f"/files/{plot.pk}/",
                f"/api/v1/files/{plot.pk}/download/"):
        assert other.get(url).status_code == 404, url


def test_qc_numbers_are_escaped_and_whatever_is_not_a_number_is_left_out(browser, user, worker, tmp_path):
    """qc.json is a job's output: markup in it stays text, and only finite numbers become figures."""
    table = tmp_path / "locs.csv"
    table.write_text("frame,x,y\n0,1,2\n")
    png = b"\x89PNG\r\n\x1a\n"
    report = {"localizations": 12, "frames": 4, "frc": {"resolution_nm": None, "pixel_nm": 2.0},
              "median_photons": "<script>alert(1)</script>", "<b>odd</b>": 3.5, "nan_value": float("nan")}
    job = _finished_job(user, worker, {"table": table},
                        {"qc.json": json.dumps(report).encode(), "qc_custom_check.png": png, "qc_frc.png": png})
    qc = browser.get(f"/jobs/{job.pk}/").content.decode().split('id="qc"')[1]
    assert "<script>alert" not in qc and "Median photons" not in qc and "nan value" not in qc
    assert "<dt>&lt;b&gt;odd&lt;/b&gt;</dt><dd><strong>3.5</strong>" in qc
    assert "<dt>FRC resolution</dt><dd><strong>no 1/7 crossing below Nyquist</strong>" in qc
    assert "3 localizations per frame" in qc
    assert "<strong>Custom check</strong>" in qc  # a plot the portal does not know keeps a caption from its name


def test_a_fits_qc_plots_without_qc_json_get_a_qc_section_and_its_rendered_preview_leads(browser, user, worker,
                                                                                       tmp_path):
    """DECODE-Plex fits write qc_*.png and a rendered qc_preview.png, but no qc.json; here beside an FRC curve."""
    table = tmp_path / "locs.csv"
    table.write_text("frame,x,y\n0,1,2\n")
    png = b"\x89PNG\r\n\x1a\n"
    job = _finished_job(user, worker, {"table": table}, {
        "fit_report.json": b"{}", "qc_photon_ratio.png": png, "qc_preview.png": png, "qc_subpixel.png": png,
        "frc.png": png})
    page = browser.get(f"/jobs/{job.pk}/").content.decode()
    outputs, qc = page.split('id="qc"')
    assert re.findall(r'data-preview="([^"]+)"', outputs) == ["qc_preview.png", "frc.png"]
    assert re.findall(r'data-qc-plot="([^"]+)"', qc) == ["qc_subpixel.png", "qc_photon_ratio.png"]
    assert "<strong>Photon ratios and dye peaks</strong>" in qc and 'id="qc-figures"' not in qc

def test_a_job_without_qc_outputs_has_no_qc_section(browser, user):
    job, _ = services.submit(user, application="diagnostics", entrypoint="selftest")
    page = browser.get(f"/jobs/{job.pk}/")
    assert b"Quality control" not in page.content
    assert browser.get(f"/jobs/{job.pk}/live/").json()["sections"]["qc"].strip() == ""
