"""The user's Python client (`locus_client`, its own package under client/) and its `locus` command against the
live portal and a real worker agent: chunked resumable upload, submit, follow the log, checked downloads,
retries that never duplicate, pipelines and the model registry. The command runs as a user installs it:
`pip install ./client` into an environment that holds nothing but `requests`."""

from __future__ import annotations

import hashlib
import importlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import requests

from jobs.models import Dataset, Job, Upload
from locus_client import Locus, LocusError
from tests.integration.conftest import ROOT, clean_env

CHUNK = 64 * 1024


class Recording(requests.Session):
    """A real session that records every call; `drop_answer` loses the answer of the first matching call
    after the server handled it — what a connection reset on the way back does."""

    def __init__(self, drop_answer: tuple[str, str] | None = None):
        super().__init__()
        self.calls: list[tuple[str, str, int | None]] = []
        self.drop_answer = drop_answer

    def request(self, method, url, *args, **kwargs):
        response = super().request(method, url, *args, **kwargs)
        path = url.split("/api/v1", 1)[-1]
        if self.drop_answer and method == self.drop_answer[0] and self.drop_answer[1] in path:
            self.drop_answer = None
            self.calls.append((method, path, None))
            raise requests.ConnectionError("connection reset by peer (injected after the server answered)")
        self.calls.append((method, path, response.status_code))
        return response


@pytest.fixture
def token(portal, user, settings):
    from portal.accounts.models import ApiToken

    settings.LOCUS_UPLOAD_CHUNK_BYTES = CHUNK
    _, raw = ApiToken.issue(user, "client")
    return raw


@pytest.fixture
def movie(tmp_path):
    data = bytes(range(256)) * 1200 + b"tail"  # 307 204 bytes: four full chunks and a short one
    path = tmp_path / "movie.tif"
    path.write_bytes(data)
    return path, data


def test_upload_submit_follow_and_download(portal, token, movie, start_agent, tmp_path):
    path, data = movie
    session = Recording()
    locus = Locus(portal, token, session=session)
    seen = []
    dataset = locus.create_dataset("client")
    file = locus.upload(dataset["id"], path, progress=lambda done, total: seen.append((done, total)))
    assert (file["name"], file["size"], file["sha256"]) == ("movie.tif", len(data), hashlib.sha256(data).hexdigest())
    assert [c for c in session.calls if c[0] == "PUT"] == [("PUT", f"/uploads/{Upload.objects.get().pk}/chunk/",
                                                            200)] * 5
    assert seen[-1] == (len(data), len(data)) and len(seen) == 5

    start_agent()
    job = locus.submit("diagnostics", "checksum", params={"copy": True}, inputs={"files": [file["id"]]})
    pieces: list[str] = []
    job = locus.wait(job["id"], timeout=120, poll=0.3, on_log=pieces.append)
    assert job["status"] == "succeeded", job["reason"]
    assert "".join(pieces) == locus.logs(job["id"])["text"]  # every piece once, in order
    assert '"stage": "hash"' in "".join(pieces)

    out = tmp_path / "out"
    written = locus.download_outputs(job["id"], out)
    assert sorted(p.name for p in written) == ["checksums.json", "copy-movie.tif"]
    assert (out / "copy-movie.tif").read_bytes() == data
    assert json.loads((out / "checksums.json").read_text())[0]["sha256"] == file["sha256"]
    assert sorted(p.name for p in out.iterdir()) == ["checksums.json", "copy-movie.tif"]  # no .part left
    assert any(j["id"] == job["id"] for j in locus.jobs(status="succeeded"))


def test_an_interrupted_upload_continues_where_the_server_stopped(portal, token, movie):
    path, data = movie
    raw = requests.Session()
    raw.headers["Authorization"] = f"Token {token}"
    base = portal + "/api/v1"
    dataset = raw.post(f"{base}/datasets/", json={"name": "resume"}).json()
    started = raw.post(f"{base}/datasets/{dataset['id']}/uploads/",
                       json={"name": "movie.tif", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    assert raw.put(f"{base}/uploads/{started.json()['id']}/chunk/?offset=0", data=data[:CHUNK]).status_code == 200

    session = Recording()
    file = Locus(portal, token, session=session).upload(dataset["id"], path)
    offsets = [c[1] for c in session.calls if c[0] == "PUT"]
    assert len(offsets) == 4  # the first chunk is not sent again
    assert Upload.objects.get().file_id is not None and file["sha256"] == hashlib.sha256(data).hexdigest()


def test_resuming_with_a_file_that_changed_is_refused_and_the_next_try_succeeds(portal, token, movie):
    path, data = movie
    locus = Locus(portal, token)
    dataset = locus.create_dataset("changed")
    started = locus.request("POST", f"datasets/{dataset['id']}/uploads/", json={"name": "movie.tif",
                                                                                 "size": len(data)})
    locus.request("PUT", f"uploads/{started['id']}/chunk/", params={"offset": 0}, data=b"x" * CHUNK)
    with pytest.raises(LocusError, match="send the file again"):
        locus.upload(dataset["id"], path)  # resumes the stale upload; the server's check catches it
    assert not Upload.objects.exists()  # discarded, so the next try starts afresh
    assert locus.upload(dataset["id"], path)["sha256"] == hashlib.sha256(data).hexdigest()


def test_a_lost_answer_is_retried_without_a_second_job_or_a_resent_chunk(portal, token, user, movie):
    path, data = movie
    dataset = Locus(portal, token).create_dataset("lost answers")
    session = Recording(drop_answer=("PUT", "/chunk/"))
    locus = Locus(portal, token, session=session)
    file = locus.upload(dataset["id"], path)
    assert file["sha256"] == hashlib.sha256(data).hexdigest()
    assert [c[2] for c in session.calls if c[0] == "PUT"][:2] == [None, 409]  # landed; the retry learns so

    session.drop_answer = ("POST", "/jobs/")
    job = locus.submit("diagnostics", "checksum", inputs={"files": [file["id"]]})
    assert [c[2] for c in session.calls if c[:2] == ("POST", "/jobs/")] == [None, 200]  # the first one's job
    assert Job.objects.filter(owner=user).count() == 1 and str(Job.objects.get().pk) == job["id"]


def test_a_throttled_client_waits_and_goes_on(portal, token, settings):
    settings.LOCUS_THROTTLE_RATES = {**settings.LOCUS_THROTTLE_RATES, "token": "4/s"}
    session = Recording()
    locus = Locus(portal, token, session=session)
    for _ in range(10):
        assert isinstance(locus.applications(), list)
    statuses = [c[2] for c in session.calls]
    assert statuses.count(200) == 10 and 429 in statuses


def test_refusals_raise_with_the_field_and_are_not_retried(portal, token, movie, tmp_path):
    session = Recording()
    locus = Locus(portal, token, session=session)
    with pytest.raises(LocusError) as refused:
        locus.submit("diagnostics", "no-such-entrypoint")
    assert refused.value.status == 400 and "entrypoint" in str(refused.value)
    assert len(session.calls) == 1
    with pytest.raises(LocusError) as unknown:
        Locus(portal, "not-a-token").applications()
    assert unknown.value.status == 401

    dataset = locus.create_dataset("checks")
    file = locus.upload(dataset["id"], movie[0])
    target = tmp_path / "downloads" / "copy.tif"
    with pytest.raises(LocusError, match="does not match its checksum"):
        locus.download({**file, "sha256": "0" * 64}, target)
    assert list(target.parent.iterdir()) == []  # neither the target nor a partial file


@pytest.fixture(scope="session")
def standalone(tmp_path_factory) -> Path:
    """The client's wheel built from client/ and installed with pip into a fresh environment whose only other
    packages are requests and its dependencies: no Django, no numpy, not the repository. Answers its bin/."""
    root = tmp_path_factory.mktemp("client-install")
    wheels, env_dir, shelf = root / "wheels", root / "env", root / "shelf"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(wheels), str(ROOT / "client")], check=True, timeout=300)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True, timeout=120)
    [wheel] = wheels.glob("locus_client-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(env_dir / "bin" / "python"), "install", "-q",
                    "--no-deps", str(wheel)], check=True, timeout=300)
    shelf.mkdir()
    for name in ("requests", "urllib3", "idna", "charset_normalizer", "certifi"):
        (shelf / name).symlink_to(Path(importlib.import_module(name).__file__).parent)
    [site] = env_dir.glob("lib/python*/site-packages")
    (site / "requests-only.pth").write_text(f"{shelf}\n")
    return env_dir / "bin"


def _standalone_env(**extra: str) -> dict[str, str]:
    return {k: v for k, v in clean_env(**extra).items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


def test_the_client_installs_with_pip_and_runs_without_django(standalone, tmp_path):
    probe = subprocess.run([str(standalone / "python"), "-c", "import locus_client, sys; print(locus_client.__file__)\n"
                            "try:\n import django\nexcept ImportError:\n sys.exit(0)\nsys.exit(3)"],
                           cwd=tmp_path, env=_standalone_env(), capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, probe.stderr  # Django is not there, and the client imports without it
    assert Path(probe.stdout.strip()).is_relative_to(standalone.parent)  # the installed copy, not the checkout
    helped = subprocess.run([str(standalone / "locus"), "--help"], cwd=tmp_path, env=_standalone_env(),
                            capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0 and "pipelines" in helped.stdout and "models" in helped.stdout


@pytest.fixture
def cli(standalone, tmp_path):
    """`locus ARGS` from the installed package, in a folder outside the repository."""

    def run(portal: str, token: str, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        env = _standalone_env(LOCUS_URL=portal, LOCUS_TOKEN=token)
        return subprocess.run([str(standalone / "locus"), *args], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=timeout)

    return run


def test_the_command_line_runs_a_job_from_local_files_to_outputs(portal, token, movie, start_agent, tmp_path,
                                                                  cli):
    path, data = movie
    start_agent()
    out = tmp_path / "results"
    done = cli(portal, token, "run", "diagnostics", "checksum", "-i", f"files={path}", "-p", "copy=true",
               "--out", str(out))
    assert done.returncode == 0, done.stderr
    job_id, *written = done.stdout.split()
    assert Job.objects.get(pk=job_id).status == "succeeded"
    assert (out / "copy-movie.tif").read_bytes() == data and str(out / "copy-movie.tif") in written
    assert '"stage": "hash"' in done.stderr  # the job's log, streamed

    listed = cli(portal, token, "jobs", "--status", "succeeded")
    assert listed.returncode == 0 and job_id in listed.stdout
    log = cli(portal, token, "logs", job_id)
    assert log.returncode == 0 and log.stdout == Locus(portal, token).logs(job_id)["text"]


def test_the_command_line_refuses_bad_input_in_one_line_with_exit_2(portal, token, tmp_path, cli):
    before = Dataset.objects.count()
    missing = cli(portal, token, "run", "diagnostics", "checksum", "-i", f"files={tmp_path / 'nope.tif'}")
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "no such file" in missing.stderr
    assert Dataset.objects.count() == before  # nothing made on the portal

    for args, words in ((("status", "00000000-0000-0000-0000-000000000000"), "no job matches"),
                        (("run", "diagnostics", "checksum", "-p", "copy"), "expected name=value")):
        refused = cli(portal, token, *args)
        assert refused.returncode == 2 and refused.stderr.startswith("locus: error:"), refused.stderr
        assert words in refused.stderr.lower() and "Traceback" not in refused.stderr
    wrong_token = cli(portal, "nope", "apps")
    assert wrong_token.returncode == 2 and wrong_token.stderr.count("\n") == 1


def test_run_uploads_local_inputs_and_brings_the_outputs_home(portal, token, movie, start_agent, tmp_path):
    path, data = movie
    locus = Locus(portal, token)
    before = Dataset.objects.count()
    with pytest.raises(LocusError, match="not a file"):
        locus.run("diagnostics", "checksum", inputs={"files": [path, tmp_path]})  # a folder: nothing is made
    assert Dataset.objects.count() == before
    start_agent()
    job = locus.run("diagnostics", "checksum", inputs={"files": [path]}, params={"copy": True},
                    out=tmp_path / "home", timeout=120)
    assert job["status"] == "succeeded" and (tmp_path / "home" / "copy-movie.tif").read_bytes() == data
    assert Dataset.objects.count() == before + 1


def test_the_locus_command_runs_a_pipeline_and_fits_with_a_model_named_from_the_registry(
        portal, token, cli, start_agent, portal_celery, tmp_path):
    import tifffile

    from algorithms.comet.simulate import simulate_localizations
    from algorithms.io.formats import write_table
    from jobs.trained_models import register_bundled

    [bundled] = register_bundled()
    models = cli(portal, token, "models")
    assert models.returncode == 0, models.stderr
    assert f"{bundled.id}  {bundled.name}" in models.stdout and "bundled" in models.stdout
    pipelines = cli(portal, token, "pipelines")
    assert pipelines.returncode == 0 and "steps: drift → render → qc" in pipelines.stdout

    # A model by its name stands for its file; a name that is no model is refused before anything is made.
    movie = tmp_path / "movie.tif"
    tifffile.imwrite(movie, np.random.default_rng(1).integers(100, 200, (8, 32, 32), dtype=np.uint16))
    before = Dataset.objects.count()
    unknown = cli(portal, token, "run", "decode-plex", "fit", "-i", f"frames={movie}", "-i", "model=no-such-model")
    assert unknown.returncode == 2 and "no such file, file id or model name" in unknown.stderr
    assert Dataset.objects.count() == before
    fit = cli(portal, token, "run", "decode-plex", "fit", "-i", f"frames={movie}", "-i", f"model={bundled.name}",
              "-p", "device=cpu", "--no-wait")
    assert fit.returncode == 0, fit.stderr
    spec = Job.objects.get(pk=fit.stdout.strip()).spec
    assert {(i["slot"], i["file"]) for i in spec["inputs"]} >= {("model", str(bundled.file_id))}
    Locus(portal, token).cancel(fit.stdout.strip())  # running it is not this test's business

    # A pipeline by its name alone, a step's parameter as STEP.NAME, each step's outputs in a folder of its own.
    table = tmp_path / "drifted.h5"
    write_table(simulate_localizations(n_locs=20_000, n_frames=2000, seed=7).table, table, fmt="locus")
    start_agent()
    out = tmp_path / "results"
    done = cli(portal, token, "run", "drift-render", "-i", f"locs={table}", "-p", "render.pixel_nm=20",
               "--out", str(out), "-q", timeout=300)
    assert done.returncode == 0, done.stderr
    pipeline_id = done.stdout.split()[0]
    job = Job.objects.get(pk=pipeline_id)
    assert job.status == "succeeded" and job.params["render"]["pixel_nm"] == 20
    assert "drift:succeeded render:succeeded qc:succeeded" in done.stderr  # the chain, as it went
    for name in ("drift/drift.png", "render/render.png", "qc/qc.json"):
        assert (out / name).is_file(), name
