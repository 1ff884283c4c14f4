"""The CPU route (issue 15 point 4, design §9): a GPU entrypoint that can also run on a CPU says so in the
registry; Device = cpu, or the deployment's LOCUS_CPU_ROUTE_AFTER_SECONDS while no GPU worker is around, sends
it to the `cpu` queue with the route's hardware and time limit, so a CPU worker takes it; a job no online worker
can take says so and offers the route."""

from __future__ import annotations

import io
import textwrap
from datetime import timedelta

import pytest
import redis
from django.test import Client
from django.utils import timezone

from algorithms import registry
from jobs import services, tasks
from jobs.models import Job, JobEvent, Worker
from tests.conftest import GPU16_CAPS, _enrolled_worker
from tests.unit.test_settings import PRODUCTION, manage

pytestmark = pytest.mark.django_db

TRAIN = {"application": "decode-plex", "entrypoint": "train"}
ROUTE = registry.load().get("decode-plex", None, "train").cpu_route


def submit(user, **params) -> Job:
    job, _ = services.submit(user, **TRAIN, params=params)
    return job


def gpu_worker(last_seen_ago_s: float = 0.0) -> Worker:
    w = _enrolled_worker("gpu-pc", GPU16_CAPS).worker
    Worker.objects.filter(pk=w.pk).update(last_seen=timezone.now() - timedelta(seconds=last_seen_ago_s))
    return w


def queued_messages(settings, queue: str) -> list[bytes]:
    return redis.Redis.from_url(settings.CELERY_BROKER_URL).lrange(queue, 0, -1)


# --- the registry key -----------------------------------------------------------------------------------

ENTRY = """
fit:
  "1.0":
    run:
      summary: Fit
      command: [python, -m, algorithms.fit, run]
      inputs: {}
      params: {type: object, additionalProperties: false,
               properties: {device: {type: [string, "null"], enum: [cpu, cuda, null], default: null}}}
      outputs: [locs]
      hardware: {gpu: 1, gpu_memory_gb: 12, cpu: 2, memory_gb: 8}
      timeout_s: 3600
      cpu_route: {cpu: 2, memory_gb: 8, timeout_s: 36000, slowdown: 25}
      max_attempts: 2
"""


def load(tmp_path, text: str) -> registry.Registry:
    path = tmp_path / "registry.yaml"
    path.write_text(textwrap.dedent(text))
    return registry.load(path)


def test_the_loader_reads_a_cpu_route_with_its_own_hardware_and_time_limit(tmp_path):
    entry = load(tmp_path, ENTRY).get("fit", "1.0", "run")
    assert entry.cpu_route == registry.CpuRoute(
        hardware={"gpu": 0, "gpu_memory_gb": 0, "cpu": 2, "memory_gb": 8}, timeout_s=36000, slowdown=25.0)
    assert entry.cpu_route.describe() == "about 25× slower than on a GPU, time limit 10 h"
    assert entry.queue == "gpu.16" and registry.queue_for(entry.cpu_route.hardware) == "cpu"
    assert entry.runs_on_cpu({"device": "cpu"}) and not entry.runs_on_cpu({"device": None})
    assert entry.runs_on_cpu({"device": None}, auto_to_cpu=True)
    assert not entry.runs_on_cpu({"device": "cuda"}, auto_to_cpu=True)  # the user's explicit choice wins
    assert load(tmp_path, ENTRY.replace("timeout_s: 36000", "timeout_s: 90000")).longest_timeout_s == 90000


@pytest.mark.parametrize(("change", "where", "problem"), [
    (("slowdown: 25", "slowdwn: 25"), "cpu_route.slowdwn", "unknown key"),
    (("cpu: 2, memory_gb: 8, timeout_s: 36000", "cpu: 2, memory_gb: 8"), "cpu_route", "missing key 'timeout_s'"),
    (("timeout_s: 36000", "timeout_s: -5"), "cpu_route.timeout_s", "positive integer"),
    (("slowdown: 25", "slowdown: 0.5"), "cpu_route.slowdown", "≥ 1"),
    (("memory_gb: 8, timeout_s", "memory_gb: lots, timeout_s"), "cpu_route.memory_gb", "number ≥ 0"),
    (("cpu_route: {cpu: 2, memory_gb: 8, timeout_s: 36000, slowdown: 25}", "cpu_route: yes"), "cpu_route",
     "must be {cpu"),
    (("hardware: {gpu: 1,", "hardware: {gpu: 0,"), "cpu_route", "only an entrypoint that asks for a GPU"),
    (("enum: [cpu, cuda, null]", "enum: [cuda, null]"), "cpu_route", "params field 'device' that accepts"),
    (("properties: {device:", "properties: {devices:"), "cpu_route", "params field 'device' that accepts"),
])
def test_the_loader_refuses_a_bad_cpu_route_naming_the_key(tmp_path, change, where, problem):
    with pytest.raises(registry.RegistryError) as err:
        load(tmp_path, ENTRY.replace(*change))
    assert f"fit.1.0.run.{where}: " in str(err.value) and problem in str(err.value)


def test_the_packaged_registry_declares_the_cpu_routes():
    reg = registry.load()
    routed = {e.key for e in reg.entrypoints() if e.cpu_route}
    assert routed == {"decode-plex/1.0/train", "decode-plex/1.0/fit"}
    # The GPU twins of CPU entrypoints have no `device` field: the user picks `simulate` or `run` instead.
    assert reg.get("simulation", None, "simulate").queue == reg.get("comet", None, "run").queue == "cpu"


# --- Device = cpu at submit -----------------------------------------------------------------------------

def test_device_cpu_goes_to_the_cpu_queue_and_a_cpu_worker_claims_it(user, worker, settings):
    settings.LOCUS_CPU_ROUTE_AFTER_SECONDS = None
    job = submit(user, device="cpu", epochs=1)
    assert job.queue == "cpu"
    assert job.spec["hardware"] == ROUTE.hardware and job.spec["hardware"]["gpu"] == 0
    assert job.spec["timeout_s"] == ROUTE.timeout_s and job.spec["route"] == "cpu"
    assert job.params["device"] == "cpu" and job.spec["params"]["device"] == "cpu"
    assert job.waiting_reason == ""  # the user's own choice: nothing to explain
    assert "CPU route: Device = cpu" in job.events.get(kind="submitted").message
    claimed = worker.post(f"/api/v1/worker/jobs/{job.pk}/claim")
    assert claimed.status_code == 200, claimed.json()
    assert claimed.json()["spec"]["hardware"]["gpu"] == 0 and claimed.json()["spec"]["timeout_s"] == ROUTE.timeout_s


def test_device_cpu_fit_is_pulled_by_a_cpu_worker(user, worker, dataset, settings):
    settings.LOCUS_CPU_ROUTE_AFTER_SECONDS = None
    model = services.add_file(dataset, "model.pt", io.BytesIO(b"torch"))
    frames = services.add_file(dataset, "movie.tif", io.BytesIO(b"II*\x00"))
    job, _ = services.submit(user, application="decode-plex", entrypoint="fit", params={"device": "cpu"},
                             inputs={"model": [str(model.pk)], "frames": [str(frames.pk)]})
    assert job.queue == "cpu"
    pulled = worker.post("/api/v1/worker/claim-next", {"wait_s": 0}, format="json")
    assert pulled.status_code == 200 and pulled.json()["job_id"] == str(job.pk)


def test_device_cuda_or_automatic_stays_on_the_gpu_tier_when_the_setting_is_off(user, settings):
    settings.LOCUS_CPU_ROUTE_AFTER_SECONDS = None
    for device in ("cuda", None):
        job = submit(user, device=device)
        assert (job.queue, job.spec["route"], job.spec["hardware"]["gpu"]) == ("gpu.16", "gpu", 1)
        assert job.spec["cpu_route"]["timeout_s"] == ROUTE.timeout_s  # frozen, for a later move


# --- automatic device with the deployment setting -------------------------------------------------------

def test_automatic_device_takes_the_cpu_route_at_submit_when_no_gpu_worker_was_online(user, worker, settings):
    settings.LOCUS_CPU_ROUTE_AFTER_SECONDS = 60
    job = submit(user)
    assert (job.queue, job.spec["route"], job.spec["hardware"]["gpu"]) == ("cpu", "cpu", 0)
    assert job.params["device"] is None and job.spec["params"]["device"] == "cpu"  # what ran vs. what was asked
    assert "no worker with ≥ 16 GB GPU memory was online in the last 60 s" in job.spec["route_reason"]
    assert job.waiting_reason == job.spec["route_reason"]
    assert "CPU route: runs on a CPU" in job.events.get(kind="submitted").message
    services.flag_unschedulable()  # a CPU worker could take it: the reason stays, it says what happened
    job.refresh_from_db()
    assert job.waiting_reason.startswith("runs on a CPU")
    assert worker.post(f"/api/v1/worker/jobs/{job.pk}/claim").status_code == 200


def test_a_gpu_worker_seen_within_the_setting_keeps_automatic_jobs_on_the_gpu(user, settings):
    settings.LOCUS_CPU_ROUTE_AFTER_SECONDS = 600
    gpu_worker(last_seen_ago_s=300)  # offline now, but seen within the 600 s
    assert submit(user).queue == "gpu.16"
    Worker.objects.update(last_seen=timezone.now() - timedelta(seconds=601))
    assert submit(user).queue == "cpu"
    assert submit(user, device="cuda").queue == "gpu.16"  # never when the user asked for the GPU


def test_the_setting_is_on_in_the_embedded_default_and_off_in_production():
    def value(**env) -> str:
        shell = ["shell", "-c", "from django.conf import settings; print(settings.LOCUS_CPU_ROUTE_AFTER_SECONDS)"]
        result = manage(*shell, **env)
        return (result.stdout.strip().splitlines() or [result.stderr])[-1]

    assert value(**PRODUCTION) == "None"
    assert value(**PRODUCTION, LOCUS_CPU_ROUTE_AFTER_SECONDS="900") == "900"
    assert value(LOCUS_MODE="embedded", DATABASE_URL=PRODUCTION["DATABASE_URL"]) == "60"


# --- the sweep moves a stranded GPU job -----------------------------------------------------------------

def test_the_sweep_moves_a_stranded_automatic_gpu_job_to_the_cpu_route(
        user, worker, settings, django_capture_on_commit_callbacks):
    redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()
    settings.LOCUS_CPU_ROUTE_AFTER_SECONDS = 120
    gpu = gpu_worker()
    auto, cuda = submit(user), submit(user, device="cuda")
    assert auto.queue == cuda.queue == "gpu.16"
    assert tasks.sweep_leases()["cpu_routed"] == 0  # the GPU worker is there
    Worker.objects.filter(pk=gpu.pk).update(last_seen=timezone.now() - timedelta(seconds=121))
    with django_capture_on_commit_callbacks(execute=True):
        assert tasks.sweep_leases()["cpu_routed"] == 1  # the beat task itself
    auto.refresh_from_db()
    cuda.refresh_from_db()
    assert (auto.queue, auto.spec["route"], auto.spec["hardware"]) == ("cpu", "cpu", ROUTE.hardware)
    assert auto.spec["timeout_s"] == ROUTE.timeout_s and auto.spec["params"]["device"] == "cpu"
    event = JobEvent.objects.get(job=auto, kind="cpu_route")
    assert event.data["from_queue"] == "gpu.16" and event.data["to_queue"] == "cpu"
    assert "moved from gpu.16 to cpu" in event.message and "in the last 120 s" in event.message
    assert auto.waiting_reason.startswith("runs on a CPU")
    assert any(str(auto.pk).encode() in m for m in queued_messages(settings, "cpu"))  # a new doorbell
    assert cuda.queue == "gpu.16" and cuda.spec["route"] == "gpu"  # Device = cuda: the user's choice stays
    assert "or re-run it with Device = cpu" in cuda.waiting_reason
    assert worker.post(f"/api/v1/worker/jobs/{auto.pk}/claim").status_code == 200
    assert services.sweep()["cpu_routed"] == 0  # a second pass moves nothing more


def test_with_the_setting_off_the_sweep_moves_nothing(user, settings):
    settings.LOCUS_CPU_ROUTE_AFTER_SECONDS = None  # production's default
    job = submit(user)
    assert services.sweep()["cpu_routed"] == 0
    job.refresh_from_db()
    assert (job.queue, job.spec["hardware"]["gpu"]) == ("gpu.16", 1)
    assert not job.events.filter(kind="cpu_route").exists()


def test_a_claimed_job_is_not_moved(user, settings):
    settings.LOCUS_CPU_ROUTE_AFTER_SECONDS = 60
    gpu = _enrolled_worker("gpu-pc", GPU16_CAPS)
    job = submit(user)
    assert gpu.post(f"/api/v1/worker/jobs/{job.pk}/claim").status_code == 200
    Worker.objects.update(last_seen=timezone.now() - timedelta(seconds=3600))
    assert services.sweep()["cpu_routed"] == 0
    job.refresh_from_db()
    assert (job.status, job.queue) == ("running", "gpu.16")


# --- a job no online worker can take says so ------------------------------------------------------------

def test_the_waiting_reason_offers_the_cpu_route(user, settings):
    settings.LOCUS_CPU_ROUTE_AFTER_SECONDS = None
    job = submit(user)
    services.flag_unschedulable()
    job.refresh_from_db()
    assert job.waiting_reason == ("no online worker with ≥ 16 GB GPU memory — or re-run it with Device = cpu: "
                                  f"it also runs on a CPU ({ROUTE.describe()})")
    assert job.events.filter(kind="waiting", message=job.waiting_reason).exists()


def test_the_waiting_reason_says_when_an_automatic_job_will_move(user, settings):
    settings.LOCUS_CPU_ROUTE_AFTER_SECONDS = 600
    gpu_worker(last_seen_ago_s=200)  # offline, seen within the setting: not moved yet
    job = submit(user)
    services.sweep()
    job.refresh_from_db()
    assert job.queue == "gpu.16"
    assert job.waiting_reason == (f"no online worker with ≥ 16 GB GPU memory; it moves to the CPU queue "
                                  f"({ROUTE.describe()}) if none is online for 600 s")


def test_a_cpu_routed_job_with_no_cpu_worker_says_both(user, settings):
    settings.LOCUS_CPU_ROUTE_AFTER_SECONDS = 60
    job = submit(user)
    services.flag_unschedulable()
    job.refresh_from_db()
    assert job.waiting_reason.startswith("no online worker with ≥ 2 CPU cores and ≥ 8 GB RAM; it runs on a CPU")


# --- what users see -------------------------------------------------------------------------------------

def test_the_applications_api_shows_the_cpu_route_without_commands(api):
    apps = {a["name"]: a for a in api.get("/api/v1/applications/").json()}
    entries = {e["name"]: e for e in apps["decode-plex"]["versions"][0]["entrypoints"]}
    assert entries["train"]["cpu_route"] == {"queue": "cpu", "hardware": ROUTE.hardware,
                                             "timeout_s": ROUTE.timeout_s, "slowdown": ROUTE.slowdown}
    assert entries["train"]["queue"] == "gpu.16"
    selftest = apps["diagnostics"]["versions"][0]["entrypoints"][0]
    assert selftest["cpu_route"] is None
    assert "command" not in str(apps)


def test_the_new_job_form_tags_entrypoints_that_also_run_on_a_cpu(user, settings):
    settings.LOCUS_CPU_ROUTE_AFTER_SECONDS = 60
    browser = Client()
    browser.force_login(user)
    page = browser.get("/jobs/new/?application=decode-plex").content.decode()
    assert page.count("data-cpu-route") == 2  # train and fit
    page = browser.get("/jobs/new/?application=decode-plex&entrypoint=train").content.decode()
    assert 'id="cpu-route"' in page and "with Device = cpu it goes to the <code>cpu</code> queue" in page
    assert "online for 60 s" in page
    assert "data-cpu-route" not in browser.get("/jobs/new/?application=comet").content.decode()
