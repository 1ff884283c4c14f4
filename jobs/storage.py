"""Where bytes live and who may reach them: server-made keys, checksummed writes, short-lived scoped URLs.

Local storage (embedded default) serves worker transfers through the portal's own signed URLs; S3 storage
hands out presigned URLs for the same purpose. Either way a URL names one object, one method and an
expiry, and is minted only for the job that needs it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import unicodedata
import uuid
from pathlib import Path
from typing import IO, Any

from django.conf import settings
from django.core import signing
from django.core.files.base import File as DjangoFile
from django.core.files.storage import default_storage
from django.urls import reverse

CHUNK = 1024 * 1024
_SIGNING_SALT = "locus.transfer"
_UNSAFE = re.compile(r"[^A-Za-z0-9._ +()\-\[\]]+")


def sanitise_name(name: str) -> str:
    """A display/storage-safe file name: no directories, control characters, NULs or leading dots."""
    name = unicodedata.normalize("NFC", str(name or "")).replace("\\", "/").split("/")[-1]
    name = "".join(ch for ch in name if ch.isprintable() and ch != "\x00")
    name = _UNSAFE.sub("_", name).strip(" .")
    if len(name) > 150:
        stem, dot, suffix = name.rpartition(".")
        name = (stem[: 150 - len(suffix) - 1] + "." + suffix) if dot and len(suffix) <= 16 else name[:150]
    return name or "file"


def sanitise_relpath(name: str, max_parts: int = 8) -> str:
    """An output's path relative to its job's output folder, each part sanitised; `..` and empty parts
    dropped, so it can never leave the folder. Sub-folders are kept: `ch0/locs.csv` and `ch1/locs.csv` are
    two outputs, not one overwriting the other."""
    parts = unicodedata.normalize("NFC", str(name or "")).replace("\\", "/").split("/")
    clean = [sanitise_name(p) for p in parts if p.strip() not in ("", ".", "..")]
    return "/".join(clean[-max_parts:]) or "file"


def dataset_key(user_id: int, dataset_id: uuid.UUID, name: str) -> str:
    return f"users/{user_id}/datasets/{dataset_id}/{uuid.uuid4().hex[:8]}-{sanitise_name(name)}"


def output_key(user_id: int, job_id: uuid.UUID, attempt_number: int, name: str) -> str:
    # Per attempt: a stale attempt can never overwrite the outputs of the current one.
    return f"users/{user_id}/jobs/{job_id}/attempt-{attempt_number}/{sanitise_relpath(name)}"


def output_prefix(user_id: int, job_id: uuid.UUID, attempt_number: int) -> str:
    return f"users/{user_id}/jobs/{job_id}/attempt-{attempt_number}/"


class _HashingReader:
    """Wraps a stream, counting and hashing bytes as storage reads them (one pass, no second read)."""

    def __init__(self, stream: IO[bytes], limit: int | None):
        self.stream, self.limit = stream, limit
        self.size = 0
        self.sha = hashlib.sha256()

    closed = False

    def seekable(self) -> bool:
        """No: storage must read it once, front to back (S3 storage would otherwise seek and ask `closed`)."""
        return False

    def read(self, n: int = -1) -> bytes:
        data = self.stream.read(n if n and n > 0 else CHUNK)
        self.size += len(data)
        if self.limit is not None and self.size > self.limit:
            raise TooLarge(self.limit)
        self.sha.update(data)
        return data


class TooLarge(Exception):
    def __init__(self, limit: int):
        super().__init__(f"larger than the limit of {limit} bytes")
        self.limit = limit


def save_stream(key: str, stream: IO[bytes], limit: int | None = None) -> tuple[str, int, str]:
    """Store `stream` at `key`; returns (key, size, sha256). Storage may alter the key if it exists."""
    reader = _HashingReader(stream, limit)
    saved = default_storage.save(key, DjangoFile(reader, name=key))
    return saved, reader.size, reader.sha.hexdigest()


def open_file(key: str) -> IO[bytes]:
    """A stored object opened for reading (local or S3)."""
    return default_storage.open(key, "rb")


def checksum(key: str) -> tuple[int, str]:
    """(size, sha256) of a stored object, by streaming it."""
    sha, size = hashlib.sha256(), 0
    with open_file(key) as fh:
        while chunk := fh.read(CHUNK):
            sha.update(chunk)
            size += len(chunk)
    return size, sha.hexdigest()


def private_file(path: Path) -> Path:
    """Create `path` if missing (an existing one keeps its bytes), readable by the portal's user only: the file
    0600 and the folders made for it 0700, whatever the umask. For the bytes the portal writes itself (resumable
    upload parts); storage applies FILE_UPLOAD_PERMISSIONS and FILE_UPLOAD_DIRECTORY_PERMISSIONS to its own."""
    missing = [p for p in (path.parent, *path.parent.parents) if not p.exists()]
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    for folder in missing:  # mkdir's mode passes through the umask, and parents get none of it
        os.chmod(folder, 0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o600)  # also an existing file, and whatever the umask took from the mode above
    finally:
        os.close(fd)
    return path


def exists(key: str) -> bool:
    return bool(key) and default_storage.exists(key)


def delete(key: str) -> None:
    if exists(key):
        default_storage.delete(key)


# --- scoped URLs ---------------------------------------------------------------------------------------

def _s3_client() -> Any:
    return default_storage.connection.meta.client


def sign(payload: dict[str, Any]) -> str:
    return signing.dumps(payload, salt=_SIGNING_SALT, compress=True)


def unsign(token: str) -> dict[str, Any]:
    """Raises signing.BadSignature / SignatureExpired (a subclass) for forged or old tokens."""
    return signing.loads(token, salt=_SIGNING_SALT, max_age=settings.LOCUS_URL_TTL_SECONDS)


def download_url(key: str, *, scope: dict[str, Any], filename: str) -> str:
    """A GET URL for one object, valid for LOCUS_URL_TTL_SECONDS. `scope` is checked again on use."""
    if settings.S3_STORAGE:
        return _s3_client().generate_presigned_url(
            "get_object",
            Params={"Bucket": settings.AWS_STORAGE_BUCKET_NAME, "Key": key,
                    "ResponseContentDisposition": f'attachment; filename="{sanitise_name(filename)}"'},
            ExpiresIn=settings.LOCUS_URL_TTL_SECONDS,
        )
    token = sign({"op": "get", "key": key, **scope})
    return settings.PUBLIC_URL + reverse("transfer", args=[token])


def upload_target(key: str, *, scope: dict[str, Any], size: int, sha256: str) -> dict[str, Any]:
    """Where a worker PUTs one output: the portal's signed URL locally, a presigned PUT on S3."""
    if settings.S3_STORAGE:
        url = _s3_client().generate_presigned_url(
            "put_object", Params={"Bucket": settings.AWS_STORAGE_BUCKET_NAME, "Key": key},
            ExpiresIn=settings.LOCUS_URL_TTL_SECONDS, HttpMethod="PUT",
        )
        return {"key": key, "url": url, "method": "PUT", "headers": {}}
    token = sign({"op": "put", "key": key, "size": size, "sha256": sha256, **scope})
    return {"key": key, "url": settings.PUBLIC_URL + reverse("transfer", args=[token]), "method": "PUT",
            "headers": {"Content-Type": "application/octet-stream"}}


# --- S3 multipart (large browser/client uploads) -----------------------------------------------------------

MULTIPART_PART_BYTES = 64 * 1024 * 1024  # S3 allows 5 MiB..5 GiB per part and at most 10 000 parts


def multipart_plan(size: int) -> tuple[int, int]:
    """Parts needed for `size` bytes: 64 MiB parts, more per part for files beyond 640 GB."""
    part = max(MULTIPART_PART_BYTES, -(-size // 10_000))
    return max(1, -(-size // part)), part


def start_multipart(key: str, size: int) -> dict[str, Any]:
    """Begin an S3 multipart upload and presign one PUT per part."""
    client = _s3_client()
    bucket = settings.AWS_STORAGE_BUCKET_NAME
    upload_id = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    count, part_bytes = multipart_plan(size)
    parts = [{"part_number": n, "url": client.generate_presigned_url(
        "upload_part", Params={"Bucket": bucket, "Key": key, "UploadId": upload_id, "PartNumber": n},
        ExpiresIn=settings.LOCUS_URL_TTL_SECONDS, HttpMethod="PUT")} for n in range(1, count + 1)]
    return {"key": key, "upload_id": upload_id, "part_bytes": part_bytes, "parts": parts, "method": "PUT"}


def begin_multipart(key: str) -> str:
    """An S3 multipart upload the portal itself fills part by part (resumable uploads); its UploadId."""
    return _s3_client().create_multipart_upload(Bucket=settings.AWS_STORAGE_BUCKET_NAME, Key=key)["UploadId"]


def put_part(key: str, upload_id: str, part_number: int, data: bytes) -> str:
    """Store one part (a repeated number replaces the earlier one); its ETag."""
    return _s3_client().upload_part(Bucket=settings.AWS_STORAGE_BUCKET_NAME, Key=key, UploadId=upload_id,
                                    PartNumber=part_number, Body=data)["ETag"]


def abort_multipart(key: str, upload_id: str) -> None:
    """Drop an unfinished multipart upload and its parts; one that is already gone is fine."""
    with contextlib.suppress(Exception):  # botocore ClientError NoSuchUpload: completed or aborted before
        _s3_client().abort_multipart_upload(Bucket=settings.AWS_STORAGE_BUCKET_NAME, Key=key, UploadId=upload_id)


def finish_multipart(key: str, upload_id: str, parts: list[dict[str, Any]]) -> None:
    """Assemble the parts (ETags as S3 returned them); raises ValueError when S3 refuses."""
    client = _s3_client()
    try:
        client.complete_multipart_upload(
            Bucket=settings.AWS_STORAGE_BUCKET_NAME, Key=key, UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": int(p["part_number"]), "ETag": str(p["etag"])}
                                       for p in sorted(parts, key=lambda p: int(p["part_number"]))]})
    except Exception as exc:  # noqa: BLE001 - botocore ClientError: wrong ETag, missing part, ...
        raise ValueError(str(exc)) from None
