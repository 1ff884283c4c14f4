"""Resumable uploads (jobs/uploads.py through /api/v1/): the server says where to continue, refuses a stale
offset, survives a lost client (the same file finds its upload again) and verifies the sha256 at the end."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
from django.utils import timezone

from jobs import uploads
from jobs.models import File, Upload
from tests.conftest import sha256

pytestmark = pytest.mark.django_db
CHUNK = 1000


@pytest.fixture(autouse=True)
def _small_chunks(settings, tmp_path):
    settings.LOCUS_UPLOAD_CHUNK_BYTES = CHUNK
    settings.LOCUS_UPLOAD_DIR = tmp_path / "uploads"


def start(api, dataset, data: bytes, name="movie.tif", digest=None):
    return api.post(f"/api/v1/datasets/{dataset.pk}/uploads/",
                    {"name": name, "size": len(data), "sha256": digest or sha256(data)}, format="json")


def put(api, upload_id, offset: int, body: bytes):
    return api.put(f"/api/v1/uploads/{upload_id}/chunk/?offset={offset}", body,
                   content_type="application/octet-stream")


def test_chunks_then_complete_make_a_verified_file(api, dataset, django_capture_on_commit_callbacks):
    data = os.urandom(2 * CHUNK + 123)
    upload = start(api, dataset, data).json()
    assert (upload["received"], upload["chunk_bytes"], upload["complete"]) == (0, CHUNK, False)
    for offset in range(0, len(data), CHUNK):
        answer = put(api, upload["id"], offset, data[offset:offset + CHUNK])
        assert answer.status_code == 200 and answer.json()["received"] == min(offset + CHUNK, len(data))
    with django_capture_on_commit_callbacks(execute=True):
        done = api.post(f"/api/v1/uploads/{upload['id']}/complete/")
    assert done.status_code == 200
    stored = File.objects.get(pk=done.json()["id"])
    assert (stored.size, stored.sha256, stored.dataset_id) == (len(data), sha256(data), dataset.pk)
    assert not uploads.part_path(Upload.objects.get(pk=upload["id"])).exists()
    # Completing again answers the same file (a retried request after a lost answer).
    assert api.post(f"/api/v1/uploads/{upload['id']}/complete/").json()["id"] == str(stored.pk)


def test_a_stale_offset_is_refused_with_where_the_server_is(api, dataset):
    data = os.urandom(3 * CHUNK)
    upload = start(api, dataset, data).json()
    put(api, upload["id"], 0, data[:CHUNK])
    again = put(api, upload["id"], 0, data[:CHUNK])  # a retry of a chunk that did arrive
    assert again.status_code == 409 and again.json()["error"]["status"] == str(CHUNK)
    ahead = put(api, upload["id"], 2 * CHUNK, data[2 * CHUNK:])
    assert ahead.status_code == 409
    assert api.get(f"/api/v1/uploads/{upload['id']}/").json()["received"] == CHUNK


def test_a_client_that_lost_its_state_resumes_the_same_file(api, dataset):
    data = os.urandom(3 * CHUNK)
    first = start(api, dataset, data).json()
    put(api, first["id"], 0, data[:CHUNK])
    again = start(api, dataset, data)  # e.g. after a page reload: same name, size and checksum
    assert again.status_code == 200 and again.json()["id"] == first["id"] and again.json()["received"] == CHUNK
    other = start(api, dataset, data[:-1] + b"x")  # different bytes: a new upload
    assert other.status_code == 201 and other.json()["id"] != first["id"]


def test_bytes_that_do_not_match_the_declared_checksum_are_discarded(api, dataset):
    data = os.urandom(CHUNK)
    upload = start(api, dataset, data, digest=sha256(b"something else")).json()
    put(api, upload["id"], 0, data)
    response = api.post(f"/api/v1/uploads/{upload['id']}/complete/")
    assert response.status_code == 400 and "sha256" in response.json()["error"]["fields"]
    assert not Upload.objects.filter(pk=upload["id"]).exists() and not File.objects.exists()


def test_incomplete_oversized_and_over_quota_uploads_are_refused(api, dataset, settings):
    data = os.urandom(CHUNK)
    upload = start(api, dataset, data).json()
    assert api.post(f"/api/v1/uploads/{upload['id']}/complete/").status_code == 400
    too_long = put(api, upload["id"], 0, data + b"extra")
    assert too_long.status_code == 400  # more than a chunk, and beyond the declared size
    settings.LOCUS_USER_QUOTA_BYTES = CHUNK + 10
    assert start(api, dataset, os.urandom(11)).status_code == 413  # the unfinished upload holds CHUNK bytes
    assert start(api, dataset, os.urandom(10)).status_code == 201
    assert start(api, dataset, b"", digest="nothex").status_code == 400


def test_another_users_upload_is_not_found(api, other_api, dataset):
    data = os.urandom(CHUNK)
    upload = start(api, dataset, data).json()
    assert other_api.get(f"/api/v1/uploads/{upload['id']}/").status_code == 404
    assert put(other_api, upload["id"], 0, data).status_code == 404
    assert other_api.post(f"/api/v1/datasets/{dataset.pk}/uploads/", {"name": "x", "size": 1, "sha256": "0" * 64},
                          format="json").status_code == 404


def test_abandoned_uploads_expire_with_their_part_files(api, dataset):
    data = os.urandom(CHUNK)
    upload = Upload.objects.get(pk=start(api, dataset, data + data).json()["id"])
    put(api, upload.pk, 0, data)
    part = uploads.part_path(upload)
    assert part.stat().st_size == CHUNK
    assert uploads.expire_stale() == 0
    Upload.objects.filter(pk=upload.pk).update(updated_at=timezone.now() - timedelta(days=30))
    assert uploads.expire_stale() == 1
    assert not part.exists() and not Upload.objects.exists()


def test_deleting_the_dataset_removes_its_unfinished_uploads(api, dataset, django_capture_on_commit_callbacks):
    data = os.urandom(CHUNK)
    upload = Upload.objects.get(pk=start(api, dataset, data + data).json()["id"])
    put(api, upload.pk, 0, data)
    with django_capture_on_commit_callbacks(execute=True):
        assert api.delete(f"/api/v1/datasets/{dataset.pk}/").status_code == 204
    assert not Upload.objects.exists() and not uploads.part_path(upload).exists()


def test_the_checksum_may_come_at_completion_from_a_client_that_hashes_while_it_sends(api, dataset):
    data = os.urandom(2 * CHUNK)
    upload = api.post(f"/api/v1/datasets/{dataset.pk}/uploads/", {"name": "m.tif", "size": len(data)},
                      format="json").json()
    put(api, upload["id"], 0, data[:CHUNK])
    again = api.post(f"/api/v1/datasets/{dataset.pk}/uploads/", {"name": "m.tif", "size": len(data)}, format="json")
    assert again.json()["id"] == upload["id"] and again.json()["received"] == CHUNK  # after a reload
    put(api, upload["id"], CHUNK, data[CHUNK:])
    missing = api.post(f"/api/v1/uploads/{upload['id']}/complete/", {}, format="json")
    assert missing.status_code == 400 and "sha256" in missing.json()["error"]["fields"]
    done = api.post(f"/api/v1/uploads/{upload['id']}/complete/", {"sha256": sha256(data)}, format="json")
    assert done.status_code == 200 and done.json()["sha256"] == sha256(data)


def test_a_checksum_at_completion_must_match_the_one_declared_at_the_start(api, dataset):
    data = os.urandom(CHUNK)
    upload = start(api, dataset, data).json()
    put(api, upload["id"], 0, data)
    other = api.post(f"/api/v1/uploads/{upload['id']}/complete/", {"sha256": sha256(b"x")}, format="json")
    assert other.status_code == 400 and "declared" in other.json()["error"]["message"]
    assert not File.objects.exists()
