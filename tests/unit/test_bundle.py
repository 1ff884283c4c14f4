"""The provenance bundle (`GET /api/v1/jobs/<id>/bundle/`): what a paper's methods section is rebuilt from.

A job is run to success through the real worker API (claim, log, output uploads over the signed transfer
URLs, complete), then the zip is opened and every part is checked against what went in and came out.
"""

from __future__ import annotations

import io
import json
import zipfile

import pytest

from jobs.models import Job
from tests.conftest import sha256, upload
from tests.unit.test_worker_api import call, claim, put_output

pytestmark = pytest.mark.django_db

FRAMES = b"II*\x00" + bytes(range(256)) * 8
LOG = ["probing storage\n", "beads.tif: 2052 bytes, sha256 ok \u2713 (\u00b5m units untouched)\n"]


def _bundle(api, job_id) -> zipfile.ZipFile:
    response = api.get(f"/api/v1/jobs/{job_id}/bundle/")
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/zip"
    assert f'filename="locus-job-{job_id}.zip"' in response["Content-Disposition"]
    return zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))


@pytest.fixture
def code_version(settings):
    """A known code version; `services.code_version` caches its answer, so the cache is cleared around it."""
    from jobs import services

    settings.LOCUS_CODE_VERSION = "locus-test-7f3a2c1"
    services.code_version.cache_clear()
    yield settings.LOCUS_CODE_VERSION
    services.code_version.cache_clear()


def test_bundle_holds_manifest_params_log_and_every_output_byte_for_byte(api, worker, dataset, code_version):
    frames = upload(api, dataset.pk, "beads.tif", FRAMES).json()
    job_id = api.post("/api/v1/jobs/", {"application": "diagnostics", "entrypoint": "checksum",
                                        "params": {"copy": True}, "inputs": {"files": [frames["id"]]}},
                      format="json").json()["id"]
    body = claim(worker, job_id).json()
    for text in LOG:
        call(worker, body, "log", {"text": text})
    report = json.dumps({"beads.tif": {"size": len(FRAMES), "sha256": sha256(FRAMES)}}).encode()
    outputs = [put_output(body, worker, "checksums.json", report),
               put_output(body, worker, "beads.tif", FRAMES)]
    done = call(worker, body, "complete", {"exit_code": 0, "failure_class": None, "outputs": outputs})
    assert done.json()["job_status"] == "succeeded"

    bundle = _bundle(api, job_id)
    assert bundle.testzip() is None  # every member's CRC checks out
    assert sorted(bundle.namelist()) == ["job.json", "log.txt", "manifest.json", "outputs/beads.tif",
                                         "outputs/checksums.json", "params.json"]
    manifest = json.loads(bundle.read("manifest.json"))
    assert manifest["job"] == job_id and manifest["status"] == "succeeded"
    assert (manifest["application"], manifest["version"], manifest["entrypoint"]) == ("diagnostics", "1.0",
                                                                                      "checksum")
    assert manifest["code_version"] == code_version
    assert manifest["inputs"] == [{"slot": "files", "file": frames["id"], "name": "beads.tif",
                                   "size": len(FRAMES), "sha256": sha256(FRAMES)}]
    assert manifest["params"] == {"copy": True}
    assert sorted(manifest["outputs"], key=lambda o: o["name"]) == [
        {"name": "beads.tif", "size": len(FRAMES), "sha256": sha256(FRAMES)},
        {"name": "checksums.json", "size": len(report), "sha256": sha256(report)},
    ]
    assert json.loads(bundle.read("params.json")) == {"copy": True}
    assert json.loads(bundle.read("job.json"))["id"] == job_id
    assert bundle.read("log.txt").decode() == "".join(LOG)
    assert bundle.read("outputs/checksums.json") == report
    assert bundle.read("outputs/beads.tif") == FRAMES
    # The manifest's checksums describe the bytes actually bundled.
    for entry in manifest["outputs"]:
        assert sha256(bundle.read(f"outputs/{entry['name']}")) == entry["sha256"]
    assert Job.objects.get(pk=job_id).spec["code_version"] == manifest["code_version"]


def test_bundle_of_another_users_job_is_404(api, other_api, worker):
    job_id = api.post("/api/v1/jobs/", {"application": "diagnostics", "entrypoint": "selftest"},
                      format="json").json()["id"]
    assert other_api.get(f"/api/v1/jobs/{job_id}/bundle/").status_code == 404


def test_bundle_keeps_outputs_in_sub_folders_apart(api, worker):
    from tests.unit.test_worker_api import new_job

    job_id = new_job(api)
    body = claim(worker, job_id).json()
    outputs = [put_output(body, worker, "ch0/locs.csv", b"x,y\n1,2\n"),
               put_output(body, worker, "ch1/locs.csv", b"x,y\n3,4\n5,6\n")]
    assert call(worker, body, "complete", {"exit_code": 0, "outputs": outputs}).json()["job_status"] == "succeeded"
    bundle = _bundle(api, job_id)
    members = [n for n in bundle.namelist() if n.startswith("outputs/")]
    assert len(members) == len(set(members)) == 2, members
    assert bundle.read("outputs/ch0/locs.csv") == b"x,y\n1,2\n"
    assert bundle.read("outputs/ch1/locs.csv") == b"x,y\n3,4\n5,6\n"
    names = sorted(o["name"] for o in json.loads(bundle.read("manifest.json"))["outputs"])
    assert names == ["ch0/locs.csv", "ch1/locs.csv"]
