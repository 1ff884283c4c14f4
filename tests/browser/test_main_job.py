"""The main job as a scientist does it, in a real browser with a real worker agent (issue 15): upload a movie,
run the `localize` pipeline with the bundled model picked from the model registry, and read the rendered
image, the drift plot and the QC report on the pipeline's page — no download, no re-upload; re-run from a
step; a failing step fails the pipeline naming it; cancel mid-pipeline stops the rest; the same train again
is answered from the model registry and says so."""

from __future__ import annotations

import io

import numpy as np
import tifffile
from playwright.sync_api import expect

from jobs import pipelines, services
from jobs.models import Dataset, File, Job
from jobs.trained_models import register_bundled
from tests.browser.conftest import choose_files, log_in, shoot
from tests.integration.conftest import wait_until

# The fit step asks for a GPU; this agent says it has one and torch, finding none, runs on the CPU (one thread:
# several spin against each other on a busy 2-core machine).
FIT_ON_CPU = {"LOCUS_FAKE_GPUS": '[{"name": "CPU runs it", "memory_gb": 24}]', "OMP_NUM_THREADS": "1"}


def ended(job_id, timeout: float = 300) -> Job:
    wait_until(lambda: Job.objects.get(pk=job_id).is_terminal, timeout, interval=0.5, what=f"job {job_id} to end")
    return Job.objects.get(pk=job_id)


def steps(pipeline: Job) -> dict[str, Job]:
    """Each step's job, its own or one reused from the pipeline it was re-run from."""
    return pipelines.step_jobs(pipeline)


def movie_file(tmp_path, frames: int = 600):
    from algorithms.decode_plex.bundled import demo_movie

    movie, _ = demo_movie(n_frames=frames)
    path = tmp_path / "cell-07.tif"
    path.write_bytes(movie)
    return path


def test_a_movie_becomes_a_drift_corrected_image_on_one_page(new_page, portal, start_agent, portal_celery, user,
                                                             tmp_path):
    [bundled] = register_bundled()
    start_agent(extra_env=FIT_ON_CPU)
    page = new_page()
    log_in(page, "alice", "pw-alice")

    # --- upload the movie into a dataset ---------------------------------------------------------------------
    page.click("nav >> text=Datasets")
    page.fill("#id_name", "cell 07")
    page.click("text=Create dataset")
    choose_files(page, "#upload-input", str(movie_file(tmp_path)))
    item = page.locator("#upload-list li[data-name='cell-07.tif']")
    expect(item.locator(".state")).to_have_text("stored, checksum verified", timeout=60_000)
    movie = File.objects.get(owner=user, name="cell-07.tif")

    # --- the localize form: the bundled model comes from the registry, ticked (the only one); pick the movie ---
    page.click("nav >> text=New job")
    page.click("#applications [data-app=pipeline]")
    page.click("#entrypoints [data-entrypoint=localize]")
    form = page.locator("#job-form")
    model_slot = form.locator("[data-slot=model]")
    expect(model_slot.locator("[data-group=models] summary")).to_contain_text("Models")
    expect(model_slot.locator(f"input[value='{bundled.file_id}']")).to_be_checked()
    expect(model_slot.locator(".pick-summary")).to_have_text(bundled.name)
    frames = form.locator("[data-slot=frames]")
    frames.locator("label[data-name='cell-07.tif']").click()
    expect(frames.locator(".pick-summary")).to_have_text("cell-07.tif")
    page.check("input[name=notify][value=never]")
    page.click("#submit-job")

    # --- the pipeline page: steps in order, then the image, the drift plot and the QC report ---------------
    expect(page.locator("h1")).to_contain_text("localize")
    pipeline = Job.objects.get(owner=user, application="pipeline")
    assert [i["name"] for i in pipeline.spec["inputs"]] == ["cell-07.tif", bundled.file.name]
    assert {f.pk for f in pipeline.inputs.all()} == {movie.pk, bundled.file_id}
    pipeline = ended(pipeline.pk)
    chain = steps(pipeline)
    assert pipeline.status == "succeeded", (pipeline.reason, {s: j.reason for s, j in chain.items()})
    assert set(chain) == {"fit", "drift", "render", "qc"} and {j.status for j in chain.values()} == {"succeeded"}
    assert chain["fit"].finished_at <= chain["drift"].started_at <= chain["render"].started_at
    expect(page.locator("#job-status")).to_have_text("succeeded", timeout=30_000)
    for step in chain:
        expect(page.locator(f"#steps-table #step-{step}")).to_contain_text("succeeded")
    previews = page.locator("#output-previews")
    for name in ("render.png", "drift.png"):
        image = previews.locator(f"figure[data-preview='{name}'] img")
        image.scroll_into_view_if_needed()
        expect(image).to_be_visible()
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
    expect(page.locator("#section-qc #qc")).to_be_visible()
    expect(page.locator("#section-qc")).to_contain_text("localizations")
    shoot(page, "21-main-job")

    # --- re-run from the render step: fit and drift are reused, only render runs again -----------------------
    page.click("#rerun-from-render")
    expect(page.locator(".messages")).to_contain_text("Running again from step render")
    again = Job.objects.filter(owner=user, application="pipeline").exclude(pk=pipeline.pk).get()
    again = ended(again.pk)
    assert again.status == "succeeded", again.reason
    chain_again = steps(again)
    assert {s for s, j in chain_again.items() if j.pk == chain[s].pk} == {"fit", "drift", "qc"}
    assert chain_again["render"].pk != chain["render"].pk and chain_again["render"].status == "succeeded"
    expect(page.locator("#job-status")).to_have_text("succeeded", timeout=30_000)
    expect(page.locator("#steps-table #step-fit")).to_contain_text("reused")
    expect(page.locator("#steps-table #step-render")).not_to_contain_text("reused")


def test_a_failing_step_fails_the_pipeline_by_name_and_cancel_stops_the_rest(new_page, portal, start_agent,
                                                                            portal_celery, user, tmp_path):
    [bundled] = register_bundled()
    dataset = Dataset.objects.create(owner=user, name="movies")
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.full((20, 32, 32), 100, np.uint16))  # a blank movie: fit finds no emitter
    blank = services.add_file(dataset, "blank.tif", io.BytesIO(buf.getvalue()))
    movie = services.add_file(dataset, "cell-07.tif", io.BytesIO(movie_file(tmp_path, frames=3000).read_bytes()))

    def localize(file: File) -> Job:
        job, _ = services.submit(user, application="pipeline", entrypoint="localize", notify="never",
                                 inputs={"frames": [str(file.pk)], "model": [str(bundled.file_id)]})
        return job

    start_agent(extra_env=FIT_ON_CPU)
    page = new_page()
    log_in(page, "alice", "pw-alice")

    # --- drift correction has nothing to correct: the pipeline fails, naming the step and the reason ---------
    failed = ended(localize(blank).pk)
    chain = steps(failed)
    assert failed.status == "failed", failed.reason
    assert {s: j.status for s, j in chain.items()} == {"fit": "succeeded", "drift": "failed"}  # no render, no qc
    page.goto(f"/jobs/{failed.pk}/")
    expect(page.locator("#job-status")).to_have_text("failed")
    expect(page.locator("#job-reason")).to_contain_text("drift")
    expect(page.locator("#job-reason")).to_contain_text("the localization table is empty")
    expect(page.locator("#steps-table #step-drift")).to_contain_text("failed")
    expect(page.locator("#steps-table #step-fit")).to_contain_text("succeeded")

    # --- cancel while fit runs: the step is cancelled on its worker and no later step is made ----------------
    running = localize(movie)
    wait_until(lambda: steps(running).get("fit") and steps(running)["fit"].status == "running", 120,
               what="the fit step to run")
    page.goto(f"/jobs/{running.pk}/")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#cancel-job")
    expect(page.locator("#job-status")).to_have_text("cancelled")
    fit = ended(steps(running)["fit"].pk, timeout=60)
    assert fit.status == "cancelled"
    assert set(steps(running)) == {"fit"}
    expect(page.locator("#steps-table #step-fit")).to_contain_text("cancelled")


def test_the_same_train_again_is_answered_from_the_model_registry_and_says_so(new_page, portal, start_agent,
                                                                               portal_celery, user):
    start_agent(extra_env=FIT_ON_CPU)
    page = new_page()
    log_in(page, "alice", "pw-alice")

    def submit_train() -> None:
        page.goto("/jobs/new/?application=decode-plex&entrypoint=train")
        for name, value in TINY_TRAIN.items():
            page.fill(f"#param-{name}", value)
        page.check("input[name=notify][value=never]")
        page.click("#submit-job")
        expect(page.locator("h1")).to_contain_text("decode-plex / train")

    submit_train()
    first = ended(Job.objects.get(owner=user, application="decode-plex").pk, timeout=300)
    assert first.status == "succeeded", first.reason
    expect(page.locator("#job-status")).to_have_text("succeeded", timeout=30_000)

    submit_train()
    second = Job.objects.filter(owner=user, application="decode-plex").exclude(pk=first.pk).get()
    assert second.status == "succeeded" and second.attempts.count() == 0  # not trained again
    expect(page.locator("#job-status")).to_have_text("succeeded")
    expect(page.locator("#section-events")).to_contain_text("not trained again")
    expect(page.locator("#outputs-table")).to_contain_text("model.pt")
    assert second.outputs.get(name="model.pt").sha256 == first.outputs.get(name="model.pt").sha256


# A train that takes seconds on a CPU: what the form asks for is all the reuse key needs.
TINY_TRAIN = {"features": "8", "epochs": "1", "steps_per_epoch": "10", "batch_size": "4",
              "val_samples": "4"}
