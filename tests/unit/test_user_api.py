"""User API: uploads, submission with its validation, scoping, cancel, logs, idempotency, pagination."""

import pytest
from django.core.files.storage import default_storage
from rest_framework.test import APIClient

from jobs.models import File, Job
from tests.conftest import sha256, upload

pytestmark = pytest.mark.django_db


def error_of(response):
    body = response.json()
    assert set(body) == {"error"}, body
    return body["error"]


@pytest.fixture
def inputs(api, dataset, test_registry):
    frames = upload(api, dataset.pk, "movie.tif", b"II*\x00frames").json()
    cal = upload(api, dataset.pk, "beads_3dcal.mat", b"MATLAB").json()
    return {"frames": [frames["id"]], "calibration": [cal["id"]]}


def submit(api, **overrides):
    body = {"application": "fit", "version": "1.0", "entrypoint": "run", "params": {}, **overrides}
    return api.post("/api/v1/jobs/", body, format="json")


def test_upload_records_size_and_checksum_under_a_server_made_key(api, dataset, user):
    data = b"x" * 1000
    response = upload(api, dataset.pk, "../../etc/passwd", data)
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["size"] == 1000 and body["sha256"] == sha256(data)
    file = File.objects.get(pk=body["id"])
    assert file.name == "passwd"
    assert file.key.startswith(f"users/{user.pk}/datasets/{dataset.pk}/") and ".." not in file.key
    assert default_storage.open(file.key).read() == data


def test_upload_with_wrong_checksum_is_refused_and_nothing_kept(api, dataset):
    import io

    fh = io.BytesIO(b"abc")
    fh.name = "a.tif"
    response = api.post(f"/api/v1/datasets/{dataset.pk}/files/", {"file": fh, "sha256": "0" * 64}, format="multipart")
    assert response.status_code == 400 and error_of(response)["fields"].keys() == {"sha256"}
    assert File.objects.count() == 0


def test_oversize_upload_is_413_before_storing(api, dataset, settings):
    settings.LOCUS_MAX_FILE_BYTES = 100
    response = upload(api, dataset.pk, "big.tif", b"y" * 500)
    assert response.status_code == 413
    assert "maximum" in error_of(response)["message"] or "limit" in error_of(response)["message"]
    assert File.objects.count() == 0


def test_quota_is_enforced(api, dataset, settings):
    settings.LOCUS_USER_QUOTA_BYTES = 1500
    assert upload(api, dataset.pk, "a.tif", b"y" * 1000).status_code == 201
    response = upload(api, dataset.pk, "b.tif", b"y" * 1000)
    assert response.status_code == 413 and "quota" in error_of(response)["message"]


def test_submit_freezes_the_resolved_spec_and_routes_to_the_gpu_tier(api, inputs):
    response = submit(api, inputs=inputs, params={"threshold": 0.7})
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "queued" and body["queue"] == "gpu.16"
    assert body["params"] == {"threshold": 0.7}
    job = Job.objects.get(pk=body["id"])
    assert job.spec["command"] == ["python", "-m", "algorithms.fit", "run"]
    assert {i["slot"] for i in job.spec["inputs"]} == {"frames", "calibration"}
    assert all(len(i["sha256"]) == 64 for i in job.spec["inputs"])
    assert [e.kind for e in job.events.all()] == ["submitted"]


def test_commands_are_never_exposed(api, inputs):
    body = submit(api, inputs=inputs).json()
    assert "command" not in str(body)
    apps = api.get("/api/v1/applications/").json()
    assert "command" not in str(apps) and {a["name"] for a in apps} == {"diagnostics", "fit"}


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"application": "nope"}, "application"),
        ({"version": "9.9"}, "version"),
        ({"entrypoint": "nope"}, "entrypoint"),
        ({"params": {"threshold": -1}}, "params.threshold"),
        ({"params": {"roi": {"x0": -3}}}, "params.roi.x0"),
        ({"params": {"thresold": 1}}, "params.thresold"),
        ({"notify": "sometimes"}, "notify"),
    ],
)
def test_bad_submissions_are_400_naming_the_field(api, inputs, overrides, field):
    response = submit(api, inputs=inputs, **overrides)
    assert response.status_code == 400, response.content
    assert field in error_of(response)["fields"], error_of(response)
    assert Job.objects.count() == 0


def test_input_slot_errors(api, other_api, inputs, other_user):
    from jobs.models import Dataset

    assert "inputs.calibration" in error_of(submit(api, inputs={"frames": inputs["frames"]}))["fields"]
    assert "inputs.extra" in error_of(submit(api, inputs={**inputs, "extra": inputs["frames"]}))["fields"]
    wrong_suffix = {"frames": inputs["calibration"], "calibration": inputs["calibration"]}
    assert "inputs.frames.0" in error_of(submit(api, inputs=wrong_suffix))["fields"]
    theirs = Dataset.objects.create(owner=other_user, name="theirs")
    foreign = upload(other_api, theirs.pk, "x.tif", b"x").json()["id"]
    response = submit(api, inputs={**inputs, "frames": [foreign]})
    assert response.status_code == 400 and "inputs.frames.0" in error_of(response)["fields"]


def test_malformed_json_is_400(api):
    response = api.post("/api/v1/jobs/", b"{not json", content_type="application/json")
    assert response.status_code == 400 and error_of(response)["code"] == "malformed"


def test_unauthenticated_is_401():
    response = APIClient().get("/api/v1/jobs/")
    assert response.status_code == 401 and error_of(response)


def test_revoked_token_is_401(user):
    from portal.accounts.models import ApiToken

    token, raw = ApiToken.issue(user, "t")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {raw}")
    assert client.get("/api/v1/jobs/").status_code == 200
    client_owner = APIClient()
    client_owner.force_authenticate(user)
    assert client_owner.delete(f"/api/v1/tokens/{token.pk}/").status_code == 204
    assert client.get("/api/v1/jobs/").status_code == 401


def test_token_is_shown_once_and_stored_hashed(api, user):
    from portal.accounts.models import ApiToken

    response = api.post("/api/v1/tokens/", {"name": "laptop"}, format="json")
    raw = response.json()["token"]
    assert not ApiToken.objects.filter(key_hash=raw).exists()
    assert "token" not in str(api.get("/api/v1/tokens/").json()[0].keys())


def test_other_users_jobs_and_datasets_are_404(api, other_api, dataset):
    job = submit(api, application="diagnostics", entrypoint="selftest").json()
    assert other_api.get(f"/api/v1/jobs/{job['id']}/").status_code == 404
    assert other_api.post(f"/api/v1/jobs/{job['id']}/cancel/").status_code == 404
    assert other_api.get(f"/api/v1/datasets/{dataset.pk}/").status_code == 404
    assert other_api.delete(f"/api/v1/datasets/{dataset.pk}/").status_code == 404


def test_idempotency_key_returns_the_first_job(api):
    body = {"application": "diagnostics", "entrypoint": "selftest"}
    first = api.post("/api/v1/jobs/", body, format="json", HTTP_IDEMPOTENCY_KEY="abc")
    again = api.post("/api/v1/jobs/", body, format="json", HTTP_IDEMPOTENCY_KEY="abc")
    assert first.status_code == 201 and again.status_code == 200
    assert first.json()["id"] == again.json()["id"] and Job.objects.count() == 1


def test_cancel_queued_job_then_cancel_again_is_409(api):
    job = submit(api, application="diagnostics", entrypoint="selftest").json()
    response = api.post(f"/api/v1/jobs/{job['id']}/cancel/")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    again = api.post(f"/api/v1/jobs/{job['id']}/cancel/")
    assert again.status_code == 409 and error_of(again)["status"] == "cancelled"


def test_list_filters_and_cursor_pagination(api):
    ids = [submit(api, application="diagnostics", entrypoint="selftest").json()["id"] for _ in range(5)]
    api.post(f"/api/v1/jobs/{ids[0]}/cancel/")
    page = api.get("/api/v1/jobs/?page_size=2").json()
    seen = [j["id"] for j in page["results"]]
    while page["next"]:
        page = api.get(page["next"]).json()
        seen += [j["id"] for j in page["results"]]
    assert seen == ids[::-1]
    cancelled = api.get("/api/v1/jobs/?status=cancelled").json()["results"]
    assert [j["id"] for j in cancelled] == [ids[0]]
    assert api.get("/api/v1/jobs/?status=bogus").status_code == 400
    assert api.get("/api/v1/jobs/?created_after=yesterday").status_code == 400


def test_dataset_in_use_cannot_be_deleted(api, inputs, dataset):
    submit(api, inputs=inputs)
    response = api.delete(f"/api/v1/datasets/{dataset.pk}/")
    assert response.status_code == 409
    assert File.objects.filter(dataset=dataset).count() == 2


def test_schema_builds_and_validates(api):
    from drf_spectacular.generators import SchemaGenerator
    from drf_spectacular.validation import validate_schema

    schema = SchemaGenerator().get_schema(request=None, public=True)
    validate_schema(schema)
    assert "/api/v1/jobs/" in schema["paths"] and "/api/v1/worker/attempts/{attempt_id}/complete" in schema["paths"]
    assert api.get("/api/schema/").status_code == 200
