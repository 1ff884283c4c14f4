"""Uploads and job outputs on local storage are private to the portal's user: files 0600, folders 0700,
whatever the umask the portal was started with (umask 0 here: the most permissive)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from jobs.models import File, Upload
from jobs.uploads import part_path
from tests.conftest import sha256, upload
from tests.unit.test_worker_api import call, claim, new_job, put_output

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def open_umask():
    old = os.umask(0)
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def assert_private(path: Path, top: Path) -> None:
    assert mode(path) == 0o600, f"{path}: {oct(mode(path))}"
    for folder in [path.parent, *path.parent.parents]:
        if folder == top.parent:
            break
        assert mode(folder) == 0o700, f"{folder}: {oct(mode(folder))}"


def test_an_uploaded_file_and_its_folders_are_private(api, dataset):
    response = upload(api, dataset.pk, "frames.tif", b"frames")
    assert response.status_code == 201
    media = Path(django_settings.MEDIA_ROOT)
    assert_private(media / File.objects.get(pk=response.json()["id"]).key, media)


def test_a_resumable_uploads_part_file_and_its_folder_are_private(api, dataset, settings, tmp_path):
    settings.LOCUS_UPLOAD_DIR = tmp_path / "var" / "uploads"
    data = b"x" * 1000
    started = api.post(f"/api/v1/datasets/{dataset.pk}/uploads/", {"name": "m.tif", "size": len(data)},
                       format="json").json()
    part = part_path(Upload.objects.get(pk=started["id"]))
    assert_private(part, tmp_path / "var")
    assert api.put(f"/api/v1/uploads/{started['id']}/chunk/?offset=0", data[:500],
                   content_type="application/octet-stream").status_code == 200
    part.unlink()  # gone between two chunks (a cleanup, a full disk): made again, still private
    assert api.put(f"/api/v1/uploads/{started['id']}/chunk/?offset=500", data[500:],
                   content_type="application/octet-stream").status_code == 200
    assert_private(part, tmp_path / "var")


def test_a_job_output_uploaded_by_a_worker_is_private(api, worker):
    body = claim(worker, new_job(api)).json()
    output = put_output(body, worker, "ch0/locs.csv", b"x,y\n1,2\n")
    assert call(worker, body, "complete", {"exit_code": 0, "failure_class": None, "outputs": [output]}).status_code == 200
    media = Path(django_settings.MEDIA_ROOT)
    stored = File.objects.get(key=output["key"])
    assert stored.sha256 == sha256(b"x,y\n1,2\n")
    assert_private(media / stored.key, media)
