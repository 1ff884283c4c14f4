"""The CPU route end to end (issue 15 point 4): a real CPU-only agent, as `manage.py demo` starts one, takes a
DECODE-Plex train that the sweep moved off a GPU tier nobody serves any more, and a fit submitted with
Device = cpu; both run to success on this CPU."""

import dataclasses
import io
from datetime import timedelta

import numpy as np
import tifffile
from django.utils import timezone

from jobs import services
from jobs.models import Job, Worker
from tests.integration.conftest import submit, wait_for_status

TINY_TRAIN = {"frame_size": [32, 32], "features": 8, "epochs": 1, "steps_per_epoch": 10, "batch_size": 4,
              "val_samples": 4, "warmup_steps": 2}


def test_a_cpu_agent_runs_decode_plex_on_the_cpu_route(user_session, start_agent, settings, tmp_path):
    from algorithms.decode_plex.samples import SampleConfig
    from algorithms.simulation.render import simulate

    settings.LOCUS_CPU_ROUTE_AFTER_SECONDS = 60
    # A GPU worker was there a moment ago: an automatic-device train goes to its GPU tier at first.
    gpu = Worker.objects.create(name="gone-gpu", last_seen=timezone.now(),
                                capabilities={"cpu_count": 8, "memory_gb": 64,
                                              "gpus": [{"name": "A4000", "memory_gb": 16}]})
    train_id = submit(user_session, "train", TINY_TRAIN, {}, application="decode-plex")
    assert Job.objects.get(pk=train_id).queue == "gpu.16"
    start_agent(extra_env={"OMP_NUM_THREADS": "1"})  # CPU only, like the demo's worker
    Worker.objects.filter(pk=gpu.pk).update(last_seen=timezone.now() - timedelta(seconds=61))
    assert services.sweep()["cpu_routed"] == 1
    trained = wait_for_status(user_session, train_id, {"succeeded", "failed"}, timeout=240)
    assert trained["status"] == "succeeded", trained["reason"]
    job = Job.objects.get(pk=train_id)
    assert (job.queue, job.spec["hardware"]["gpu"]) == ("cpu", 0)
    assert [e.kind for e in job.events.order_by("created_at")][:3] == ["submitted", "cpu_route", "claimed"]
    model = next(o["id"] for o in trained["outputs"] if o["name"] == "model.pt")

    sim = SampleConfig(frame_size=(32, 32), density_per_um2=0.2, photons=(2000.0, 6000.0), bg=(20.0, 50.0))
    res = simulate(dataclasses.replace(sim.simulation_config(5), n_frames=8))
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.rint(res.adu[:, 0]).astype(np.uint16), photometric="minisblack")
    dataset = user_session.post(f"{user_session.base}/datasets/", json={"name": "movie"}, timeout=10).json()
    movie = user_session.post(f"{user_session.base}/datasets/{dataset['id']}/files/",
                              files={"file": ("movie.tif", io.BytesIO(buffer.getvalue()))}, timeout=30).json()["id"]
    fit_id = submit(user_session, "fit", {"device": "cpu", "chunk": 8}, {"model": [model], "frames": [movie]},
                    application="decode-plex")
    assert Job.objects.get(pk=fit_id).queue == "cpu"
    fitted = wait_for_status(user_session, fit_id, {"succeeded", "failed"}, timeout=240)
    assert fitted["status"] == "succeeded", fitted["reason"]
