"""S3 storage against a real S3 API server (moto on loopback): presigned upload with checksum verification,
job-scoped presigned downloads and uploads by a real worker agent."""

import hashlib
import io
import os
import zipfile
from urllib.parse import parse_qs, urlparse

import boto3
import pytest
import requests
from django.test import Client

from jobs.models import File
from tests.integration.conftest import free_port, submit, wait_for_status

BUCKET = "locus-test"


@pytest.fixture
def s3(settings):
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    credentials = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}
    client = boto3.client("s3", endpoint_url=endpoint, **credentials)
    client.create_bucket(Bucket=BUCKET)
    settings.S3_STORAGE = True
    settings.AWS_STORAGE_BUCKET_NAME = BUCKET
    settings.STORAGES = {**settings.STORAGES, "default": {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": {
        "bucket_name": BUCKET, "endpoint_url": endpoint, "access_key": "testing", "secret_key": "testing",
        "region_name": "us-east-1", "signature_version": "s3v4", "file_overwrite": False, "default_acl": None}}}
    yield client
    server.stop()


def presigned_upload(session, dataset_id: str, name: str, data: bytes, claimed: bytes | None = None) -> dict:
    claimed = data if claimed is None else claimed
    response = session.post(f"{session.base}/datasets/{dataset_id}/presigned-uploads/", json={
        "name": name, "size": len(claimed), "sha256": hashlib.sha256(claimed).hexdigest()}, timeout=10)
    assert response.status_code == 201, response.text
    body = response.json()
    put = requests.request(body["upload"]["method"], body["upload"]["url"], data=data,
                           headers=body["upload"]["headers"], timeout=30)
    assert put.status_code == 200, put.text
    return body


def test_presigned_upload_is_scoped_and_verified(user_session, s3, settings, user):
    dataset = user_session.post(f"{user_session.base}/datasets/", json={"name": "s3"}, timeout=10).json()
    body = presigned_upload(user_session, dataset["id"], "../beads.tif", b"frames" * 1000)
    url = urlparse(body["upload"]["url"])
    # What the portal signs: one server-made key, one method, a short expiry.
    assert url.path == f"/{BUCKET}/{body['upload']['key']}"
    assert body["upload"]["key"].startswith(f"users/{user.pk}/datasets/{dataset['id']}/")
    assert ".." not in body["upload"]["key"]
    assert parse_qs(url.query)["X-Amz-Expires"] == [str(settings.LOCUS_URL_TTL_SECONDS)]
    assert body["file"]["status"] == "pending"
    done = user_session.post(f"{user_session.base}/files/{body['file']['id']}/complete/", timeout=10)
    assert done.status_code == 200 and done.json()["status"] == "ready"

    bad = presigned_upload(user_session, dataset["id"], "other.tif", b"not what was announced", claimed=b"x" * 22)
    refused = user_session.post(f"{user_session.base}/files/{bad['file']['id']}/complete/", timeout=10)
    assert refused.status_code == 400 and "sha256" in refused.json()["error"]["fields"]
    assert not File.objects.filter(pk=bad["file"]["id"]).exists()
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix=bad["upload"]["key"])


def test_pending_file_cannot_be_a_job_input(user_session, s3):
    dataset = user_session.post(f"{user_session.base}/datasets/", json={"name": "s3"}, timeout=10).json()
    body = presigned_upload(user_session, dataset["id"], "a.tif", b"abc")
    response = user_session.post(f"{user_session.base}/jobs/", json={
        "application": "diagnostics", "entrypoint": "checksum", "inputs": {"files": [body["file"]["id"]]}}, timeout=10)
    assert response.status_code == 400


def test_worker_runs_a_job_on_s3_storage(user_session, s3, start_agent, tmp_path, user):
    dataset = user_session.post(f"{user_session.base}/datasets/", json={"name": "s3"}, timeout=10).json()
    data = b"\x00\x01" * 50000
    body = presigned_upload(user_session, dataset["id"], "movie.tif", data)
    user_session.post(f"{user_session.base}/files/{body['file']['id']}/complete/", timeout=10)
    start_agent()
    job_id = submit(user_session, "checksum", {"copy": True}, {"files": [body["file"]["id"]]})
    job = wait_for_status(user_session, job_id, {"succeeded", "failed"})
    assert job["status"] == "succeeded", job
    outputs = {o["name"]: o for o in user_session.get(f"{user_session.base}/jobs/{job_id}/outputs/").json()}
    copy = user_session.get(outputs["copy-movie.tif"]["url"], timeout=30)  # redirected to a presigned GET
    assert copy.content == data
    from locus_client import Locus  # the Python client follows the redirect (without its token) and checks it

    token = user_session.headers["Authorization"].split()[1]
    fetched = Locus(user_session.base.rsplit("/api/v1", 1)[0], token).download_outputs(job_id, tmp_path / "out")
    assert sorted(p.name for p in fetched) == ["checksums.json", "copy-movie.tif"]
    assert (tmp_path / "out" / "copy-movie.tif").read_bytes() == data
    bundle = user_session.get(f"{user_session.base}/jobs/{job_id}/bundle/", timeout=30)
    with zipfile.ZipFile(io.BytesIO(bundle.content)) as zf:  # built by the portal, reading from the bucket
        assert zf.read("outputs/copy-movie.tif") == data
    browser = Client()
    browser.force_login(user)
    page = browser.get(f"/files/{outputs['checksums.json']['id']}/")  # the text preview, read from the bucket
    assert page.status_code == 200 and hashlib.sha256(data).hexdigest() in page.content.decode()
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="users/")["Contents"]]
    assert any(k.endswith("/attempt-1/copy-movie.tif") for k in keys)


def test_large_upload_goes_in_presigned_parts_and_is_verified(user_session, s3, monkeypatch):
    from jobs import storage

    monkeypatch.setattr(storage, "MULTIPART_PART_BYTES", 5 * 1024 * 1024)  # S3's smallest part
    dataset = user_session.post(f"{user_session.base}/datasets/", json={"name": "big"}, timeout=10).json()
    data = bytes(range(256)) * (12 * 1024 * 1024 // 256)  # 12 MiB → 3 parts of 5 MiB
    response = user_session.post(f"{user_session.base}/datasets/{dataset['id']}/presigned-uploads/", json={
        "name": "big.tif", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}, timeout=10)
    upload = response.json()["upload"]
    assert len(upload["parts"]) == 3 and upload["part_bytes"] == 5 * 1024 * 1024
    etags = []
    for part in upload["parts"]:
        start = (part["part_number"] - 1) * upload["part_bytes"]
        put = requests.put(part["url"], data=data[start:start + upload["part_bytes"]], timeout=30)
        etags.append({"part_number": part["part_number"], "etag": put.headers["ETag"]})
    file_id = response.json()["file"]["id"]
    wrong = user_session.post(f"{user_session.base}/files/{file_id}/complete/", json={
        "multipart": {"upload_id": upload["upload_id"], "parts": [{"part_number": 1, "etag": '"nope"'}]}}, timeout=10)
    assert wrong.status_code == 400
    done = user_session.post(f"{user_session.base}/files/{file_id}/complete/", json={
        "multipart": {"upload_id": upload["upload_id"], "parts": etags}}, timeout=30)
    assert done.status_code == 200 and done.json()["status"] == "ready", done.text
    assert s3.get_object(Bucket=BUCKET, Key=upload["key"])["Body"].read() == data


# --- resumable uploads on S3: the portal keeps no bytes, so any of its processes takes the next chunk -------

PART = 5 * 1024 * 1024


@pytest.fixture
def no_local_parts(settings, tmp_path):
    """An upload folder that cannot be written (a file stands where the folder would be): a chunk that went
    to the portal's own disk would fail, as it would be lost on a pod other than the one taking the next."""
    blocker = tmp_path / "uploads"
    blocker.write_bytes(b"")
    settings.LOCUS_UPLOAD_DIR = blocker
    settings.LOCUS_UPLOAD_CHUNK_BYTES = PART


def test_a_resumable_upload_on_s3_goes_into_a_multipart_upload_and_resumes(user_session, s3, no_local_parts,
                                                                             user, tmp_path):
    from jobs.models import Upload
    from locus_client import Locus

    data = os.urandom(12 * 1024 * 1024)  # 3 parts: 5 + 5 + 2 MiB
    path = tmp_path / "movie.tif"
    path.write_bytes(data)
    token = user_session.headers["Authorization"].split()[1]
    locus = Locus(user_session.base.rsplit("/api/v1", 1)[0], token)
    dataset = locus.create_dataset("s3 resumable")
    started = locus.request("POST", f"datasets/{dataset['id']}/uploads/", json={"name": "movie.tif",
                                                                                 "size": len(data)})
    assert started["chunk_bytes"] == PART
    short = user_session.put(f"{user_session.base}/uploads/{started['id']}/chunk/?offset=0", data=data[:1000])
    assert short.status_code == 400 and "exactly" in short.json()["error"]["message"]
    locus.request("PUT", f"uploads/{started['id']}/chunk/", params={"offset": 0}, data=data[:PART])

    file = locus.upload(dataset["id"], path)  # finds the upload, sends parts 2 and 3, completes
    upload = Upload.objects.get(pk=started["id"])
    assert file["sha256"] == hashlib.sha256(data).hexdigest() and [p["part_number"] for p in upload.parts] == [1, 2, 3]
    assert File.objects.get(pk=file["id"]).key == upload.key
    assert s3.get_object(Bucket=BUCKET, Key=upload.key)["Body"].read() == data
    assert "Uploads" not in s3.list_multipart_uploads(Bucket=BUCKET, Prefix=upload.key)


def test_on_s3_a_wrong_checksum_or_an_abandoned_upload_leaves_nothing_in_the_bucket(user_session, s3,
                                                                                     no_local_parts, user):
    base = user_session.base
    dataset = user_session.post(f"{base}/datasets/", json={"name": "s3 refusals"}).json()
    prefix = f"users/{user.pk}/datasets/{dataset['id']}/"
    data = os.urandom(PART + 10)
    for name, sha in (("wrong.tif", hashlib.sha256(b"other").hexdigest()), ("left.tif", None)):
        upload = user_session.post(f"{base}/datasets/{dataset['id']}/uploads/", json={
            "name": name, "size": len(data), **({"sha256": sha} if sha else {})}).json()
        for offset in (0, PART):
            assert user_session.put(f"{base}/uploads/{upload['id']}/chunk/?offset={offset}",
                                    data=data[offset:offset + PART]).status_code == 200
        if sha:
            refused = user_session.post(f"{base}/uploads/{upload['id']}/complete/", json={})
            assert refused.status_code == 400 and "sha256" in refused.json()["error"]["fields"]
        else:
            assert user_session.delete(f"{base}/uploads/{upload['id']}/").status_code == 204
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    assert "Uploads" not in s3.list_multipart_uploads(Bucket=BUCKET, Prefix=prefix)

    empty = user_session.post(f"{base}/datasets/{dataset['id']}/uploads/", json={
        "name": "empty.csv", "size": 0, "sha256": hashlib.sha256(b"").hexdigest()}).json()
    done = user_session.post(f"{base}/uploads/{empty['id']}/complete/", json={})
    assert done.status_code == 200 and done.json()["size"] == 0
    assert "Uploads" not in s3.list_multipart_uploads(Bucket=BUCKET, Prefix=prefix)


def test_a_file_posted_through_the_portal_is_stored_in_the_bucket(user_session, s3, user):
    """The one-request upload (multipart form) and the portal-side checksum on the way into S3."""
    data = os.urandom(3 * 1024 * 1024 + 7)
    dataset = user_session.post(f"{user_session.base}/datasets/", json={"name": "posted"}).json()
    posted = user_session.post(f"{user_session.base}/datasets/{dataset['id']}/files/",
                               files={"file": ("beads.tif", data)}, data={"sha256": hashlib.sha256(data).hexdigest()})
    assert posted.status_code == 201, posted.text
    key = File.objects.get(pk=posted.json()["id"]).key
    assert key.startswith(f"users/{user.pk}/datasets/{dataset['id']}/")
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == data
