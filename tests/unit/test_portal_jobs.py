"""Job and dataset pages (Django test client): the registry-generated form and its field errors, clone and
re-run, the live JSON, queue positions, previews, dataset deletion refused while a job uses it."""

from __future__ import annotations

import io
import json

import pytest
from django.http import QueryDict
from django.test import Client

from jobs import services, states
from jobs.models import Dataset, Job
from portal.web import schema_form

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
    """What the browser sends for an untouched form validates for every entrypoint of the registry."""
    from jobs.registry import get_registry

    for entry in get_registry().entrypoints():
        fields = schema_form.build(entry.params_schema)
        post = QueryDict(mutable=True)
        for f in schema_form.leaves(fields):
            if f.kind == "boolean":
                if f.checked:
                    post[f.name] = "on"
            else:
                post[f.name] = f.value
        params, errors = schema_form.parse(entry.params_schema, post, fields)
        assert errors == {}, entry.key
        assert entry.resolve_params(params) == entry.resolve_params({}), entry.key
        page = browser.get(f"/jobs/new/?application={entry.application}&version={entry.version}"
                           f"&entrypoint={entry.name}")
        assert page.status_code == 200, entry.key


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
