"""Outputs are files like any other, in a real browser with a real agent: a Picasso table that one job wrote
goes to COMET through "Use as input…" (its .yaml travels with it, so COMET knows the pixel size), and the
drift-corrected table goes on to a render through "New job with these files" — no download, no re-upload."""

from __future__ import annotations

import io

import numpy as np
from playwright.sync_api import expect

from jobs import services
from jobs.models import Dataset, Job
from tests.browser.conftest import log_in, shoot
from tests.integration.conftest import wait_until


def locus_table() -> bytes:
    """A small blinking-emitter table (nm, 0-based frames) in the Locus .h5 format, with a slow x drift."""
    import tempfile
    from pathlib import Path

    from algorithms.io.formats import write_table
    from algorithms.io.table import LocTable

    rng = np.random.default_rng(15)
    owner = np.repeat(np.arange(200), rng.poisson(6, 200))
    n = len(owner)
    fx, fy, frame = rng.uniform(0, 3000, 200), rng.uniform(0, 3000, 200), np.sort(rng.integers(0, 400, n))
    table = LocTable.from_arrays({"px_size_nm": 100.0}, frame=frame, x=fx[owner] + rng.normal(0, 8, n) + 0.05 * frame,
                                 y=fy[owner] + rng.normal(0, 8, n), photons=rng.gamma(4, 250, n),
                                 bg=rng.uniform(5, 15, n), sigma_x=np.full(n, 8.0), sigma_y=np.full(n, 8.0))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "locs.h5"
        write_table(table, path, fmt="locus")
        return path.read_bytes()


def finished(job: Job, timeout: float = 120) -> Job:
    wait_until(lambda: Job.objects.get(pk=job.pk).is_terminal, timeout, what=f"{job} to end")
    job.refresh_from_db()
    assert job.status == "succeeded", f"{job}: {job.status}: {job.reason}"
    return job


def test_an_output_table_goes_on_to_the_next_job_with_its_sibling_and_no_reupload(new_page, portal, start_agent,
                                                                                   user):
    start_agent()
    dataset = Dataset.objects.create(owner=user, name="tables")
    source = services.add_file(dataset, "locs.h5", io.BytesIO(locus_table()))
    convert, _ = services.submit(user, application="io", entrypoint="convert", notify="never",
                                 params={"to": "picasso", "px_size_nm": 100.0}, inputs={"table": [str(source.pk)]})
    convert = finished(convert)
    table = convert.outputs.get(name="locs.hdf5")
    yaml = convert.outputs.get(name="locs.yaml")

    # --- the job page: "Use as input…" on the Picasso table offers the entrypoints that take it --------------
    page = new_page()
    log_in(page, "alice", "pw-alice")
    page.goto(f"/jobs/{convert.pk}/")
    expect(page.locator("#outputs-table tr[data-output='locs.yaml']")).to_contain_text("goes with locs.hdf5")
    menu = page.locator("[data-use-as='locs.hdf5']")
    menu.locator("summary").click()
    expect(menu.locator("[data-next='comet · run']")).to_be_visible()
    shoot(page, "17-use-as-input")
    menu.locator("[data-next='comet · run']").click()

    # --- the new-job form: the output is picked in COMET's `locs` slot, labelled by its job --------------------
    form = page.locator("#job-form")
    expect(form.locator("h2")).to_contain_text("comet 1.0 / run")
    slot = form.locator("[data-slot=locs]")
    expect(slot.locator(f"input[value='{table.pk}']")).to_be_checked()
    expect(slot.locator(".pick-summary")).to_have_text("locs.hdf5")
    group = slot.locator(f"[data-group='job-{convert.pk}']")
    expect(group.locator("summary")).to_contain_text(f"io · convert · {str(convert.pk)[:8]} · ")
    expect(group.locator("label[data-name='locs.hdf5']")).to_contain_text("+ locs.yaml")
    expect(slot.locator("label[data-name='locs.yaml']")).to_have_count(0)
    shoot(page, "18-new-job-with-an-output")
    page.check("input[name=notify][value=never]")
    page.click("#submit-job")

    # --- COMET runs on the agent with the .yaml beside the table, and succeeds ----------------------------------
    expect(page.locator("h1")).to_contain_text("comet / run")
    comet = finished(Job.objects.get(owner=user, application="comet"))
    assert [(i["name"], i.get("sibling_of")) for i in comet.spec["inputs"]] == [
        ("locs.hdf5", None), ("locs.yaml", str(table.pk))]
    assert {f.pk for f in comet.inputs.all()} == {table.pk, yaml.pk}
    expect(page.locator("#job-status")).to_have_text("succeeded")
    expect(page.locator("#outputs-table")).to_contain_text("locs_undrifted.hdf5")
    assert source.pk not in {f.pk for f in comet.inputs.all()}  # the output was used, not the upload

    # --- "New job with these files": the corrected table goes into the render's `table` slot --------------------
    page.click("#new-job-with-outputs")
    expect(page.locator("#offered-files")).to_contain_text("locs_undrifted.hdf5")
    expect(page.locator("#applications [data-app=render]")).to_contain_text("takes your files")
    page.click("#applications [data-app=render]")
    page.click("#entrypoints [data-entrypoint=render]")
    undrifted = comet.outputs.get(name="locs_undrifted.hdf5")
    slot = page.locator("#job-form [data-slot=table]")
    expect(slot.locator(f"input[value='{undrifted.pk}']")).to_be_checked()
    drift_csv = comet.outputs.get(name="drift.csv")  # a .csv, so the slot takes it too: the user unticks it
    slot.locator(f"input[value='{drift_csv.pk}']").uncheck()
    expect(slot.locator(".pick-summary")).to_have_text("locs_undrifted.hdf5")
    page.check("input[name=notify][value=never]")
    page.click("#submit-job")
    expect(page.locator("h1")).to_contain_text("render / render")
    render = finished(Job.objects.get(owner=user, application="render"))
    assert [i["name"] for i in render.spec["inputs"]] == ["locs_undrifted.hdf5", "locs_undrifted.yaml"]
    expect(page.locator("#output-previews figure").first).to_be_visible()


def test_a_picker_with_many_outputs_folds_them_by_job_and_filters_as_one_types(new_page, portal, user, worker):
    from tests.unit.test_outputs_as_inputs import finished_job

    header = b"frame,x [nm],y [nm]\n0,1,2\n"
    older = finished_job(user, worker, {f"ch{i}/run{i:02d}.csv": header for i in range(8)}, age_minutes=30)
    newer = finished_job(user, worker, {f"tile{i:02d}.csv": header for i in range(8)})
    page = new_page()
    log_in(page, "alice", "pw-alice")
    page.goto("/jobs/new/?application=comet&entrypoint=run")
    slot = page.locator("#job-form [data-slot=locs]")
    groups = slot.locator(".pick-group")
    expect(groups).to_have_count(2)  # one per job, newest first (their seed.txt uploads fit no table slot)
    assert groups.nth(0).get_attribute("data-group") == f"job-{newer.pk}"
    assert groups.nth(1).get_attribute("data-group") == f"job-{older.pk}"
    expect(slot.locator(f"[data-group='job-{older.pk}']")).not_to_have_attribute("open", "")  # folded
    slot.locator(".pick-filter").fill("run07")
    expect(slot.locator("label[data-name]:visible")).to_have_count(1)
    expect(slot.locator(f"[data-group='job-{newer.pk}']")).to_be_hidden()
    slot.locator("label[data-name='run07.csv']").click()
    slot.locator(".pick-filter").fill(older.entrypoint + " " + str(older.pk)[:8])  # a job's label matches too
    expect(slot.locator("label[data-name]:visible")).to_have_count(8)
    expect(slot.locator(".pick-summary")).to_have_text("run07.csv")
    page.check("input[name=notify][value=never]")
    page.click("#submit-job")
    expect(page.locator("h1")).to_contain_text("comet / run")
    job = Job.objects.get(owner=user, application="comet")
    assert [i["name"] for i in job.spec["inputs"]] == ["run07.csv"]
