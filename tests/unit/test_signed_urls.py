"""The portal's own signed transfer URLs (local storage): short-lived and scoped to one job's one object.

The signing timestamp is set with Django's own mechanism (`TimestampSigner.timestamp`), so a URL signed
"N seconds ago" is exactly what the portal would have minted then; no clock is faked.
"""

from __future__ import annotations

import time

import pytest
from django.core import signing
from django.test import override_settings
from rest_framework.test import APIClient

from jobs import storage
from jobs.models import Dataset
from tests.conftest import sha256, upload
from tests.unit.test_worker_api import call, claim

pytestmark = pytest.mark.django_db

A_BYTES, B_BYTES = b"frames of job A" * 10, b"job B's calibration, not A's" * 10


class _SignedAt(signing.TimestampSigner):
    """The portal's signer with the signing time moved to `at` (seconds since the epoch)."""

    def __init__(self, at: float):
        super().__init__(salt=storage._SIGNING_SALT)
        self.at = at

    def timestamp(self) -> str:
        return signing.b62_encode(int(self.at))


def resign(token: str, *, age_s: float, **changes) -> str:
    """The same scope (with `changes`), as the portal would have signed it `age_s` seconds ago."""
    payload = signing.loads(token, salt=storage._SIGNING_SALT)  # no max_age: read even an old one
    return _SignedAt(time.time() - age_s).sign_object({**payload, **changes}, compress=True)


def token_of(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


def get(token: str):
    return APIClient().get(f"/api/v1/worker/transfer/{token}")


def _running_checksum_job(api, worker, owner, name: str, data: bytes) -> dict:
    dataset = Dataset.objects.create(owner=owner, name=name)
    file_id = upload(api, dataset.pk, name, data).json()["id"]
    job_id = api.post("/api/v1/jobs/", {"application": "diagnostics", "entrypoint": "checksum",
                                        "inputs": {"files": [file_id]}}, format="json").json()["id"]
    body = claim(worker, job_id).json()
    assert body["inputs"][0]["file"] == file_id
    return body


@pytest.fixture
def job_a(api, worker, user) -> dict:
    """A running attempt of the user's job; its claim body holds the input's signed URL."""
    return _running_checksum_job(api, worker, user, "a.tif", A_BYTES)


@pytest.fixture
def job_b(other_api, other_worker, other_user) -> dict:
    return _running_checksum_job(other_api, other_worker, other_user, "b.mat", B_BYTES)


def test_transfer_url_is_accepted_now_and_refused_after_its_lifetime(job_a):
    token = token_of(job_a["inputs"][0]["url"])
    response = get(token)
    assert response.status_code == 200 and b"".join(response.streaming_content) == A_BYTES
    signed_at = signing.b62_decode(token.split(":")[-2])
    with override_settings(LOCUS_URL_TTL_SECONDS=1):
        time.sleep(max(0.0, signed_at + 1.05 - time.time()))  # at most ~2 s: the same URL, one second too old
        expired = get(token)
    assert expired.status_code == 403 and expired.json()["error"]["code"] == "expired"
    assert get(token).status_code == 200  # the lifetime is the setting's, read on every use


def test_transfer_url_lifetime_is_the_configured_ttl(job_a, settings):
    token = token_of(job_a["inputs"][0]["url"])
    ttl = settings.LOCUS_URL_TTL_SECONDS
    assert get(resign(token, age_s=ttl - 30)).status_code == 200
    old = get(resign(token, age_s=ttl + 2))
    assert old.status_code == 403 and old.json()["error"]["code"] == "expired"
    assert b"".join(get(resign(token, age_s=120)).streaming_content) == A_BYTES
    with override_settings(LOCUS_URL_TTL_SECONDS=60):
        assert get(resign(token, age_s=120)).status_code == 403


def test_expired_upload_url_is_refused_and_stores_nothing(job_a, worker, settings):
    from django.core.files.storage import default_storage

    data = b'{"ok": true}'
    target = call(worker, job_a, "outputs", {"name": "report.json", "size": len(data),
                                             "sha256": sha256(data)}).json()
    old = resign(token_of(target["url"]), age_s=settings.LOCUS_URL_TTL_SECONDS + 2)
    response = APIClient().put(f"/api/v1/worker/transfer/{old}", data, content_type="application/octet-stream")
    assert response.status_code == 403 and response.json()["error"]["code"] == "expired"
    assert not default_storage.exists(target["key"])


def test_url_for_one_jobs_file_cannot_fetch_another_jobs_file(job_a, job_b):
    a_token, b_token = token_of(job_a["inputs"][0]["url"]), token_of(job_b["inputs"][0]["url"])
    assert b"".join(get(b_token).streaming_content) == B_BYTES  # B's own URL works: the refusals below are real

    # Tampered: B's scope spliced in front of A's timestamp and signature.
    spliced = b_token.split(":")[0] + ":" + a_token.split(":", 1)[1]
    response = get(spliced)
    assert response.status_code == 403 and response.json()["error"]["code"] == "forbidden"
    # Tampered: one character of A's signed scope changed.
    flipped = ("A" if a_token[5] != "A" else "B").join([a_token[:5], a_token[6:]])
    assert get(flipped).status_code == 403

    # Even correctly signed, A's attempt cannot reach B's object: the scope is checked again on use.
    b_input = job_b["inputs"][0]
    for changes in ({"key": signing.loads(b_token, salt=storage._SIGNING_SALT)["key"]},
                    {"key": signing.loads(b_token, salt=storage._SIGNING_SALT)["key"], "file": b_input["file"]}):
        response = get(resign(a_token, age_s=0, **changes))
        assert response.status_code == 403, changes
        assert B_BYTES not in response.content
