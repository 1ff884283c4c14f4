"""Resumable uploads: a file of any size arrives in chunks, survives a page reload or a dropped connection,
and becomes a `File` only once its size and sha256 match what the client declared (at the start, or at
completion by a client that hashes while it sends).

The client asks where to continue (`received`), sends the bytes from there, and finally asks to complete.
Chunks are appended to a part file under LOCUS_UPLOAD_DIR (a volume every portal process shares); on
completion the part file goes through `services.add_file`, the one path by which bytes become a `File`
(quota, server-made key, checksum on the way into storage).
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import IO

from django.conf import settings
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from jobs import services, states
from jobs.models import Dataset, File, Upload

_HEX = set("0123456789abcdef")


def part_path(upload: Upload) -> Path:
    return Path(settings.LOCUS_UPLOAD_DIR) / f"{upload.pk}.part"


def _clean_sha(sha256: str | None) -> str:
    sha = (sha256 or "").lower()
    if sha and (len(sha) != 64 or not set(sha) <= _HEX):
        raise services.InvalidInput({"sha256": "64 hex characters required"})
    return sha


def start(dataset: Dataset, name: str, size: int, sha256: str | None = None) -> tuple[Upload, bool]:
    """A new upload, or the unfinished one of the same file in this dataset: a client that lost its state (a
    reload, another browser) resumes instead of starting over. The same file is the same name and size, and the
    same sha256 when both sides know it; the checksum may also come only at completion, so that a browser can
    hash while it sends. A wrong guess costs nothing: completion verifies every byte."""
    sha = _clean_sha(sha256)
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise services.InvalidInput({"size": "must be a non-negative integer"})
    candidates = Upload.objects.filter(dataset=dataset, owner=dataset.owner, name=name[:255], size=size,
                                       file__isnull=True).order_by("-received")
    existing = next((u for u in candidates if not sha or not u.sha256 or u.sha256 == sha), None)
    if existing is not None:
        if sha and not existing.sha256:
            Upload.objects.filter(pk=existing.pk).update(sha256=sha)
            existing.sha256 = sha
        return existing, False
    services.check_upload_allowed(dataset.owner, size)
    # Bytes promised by unfinished uploads count against the quota too, or parts could exceed it.
    promised = Upload.objects.filter(owner=dataset.owner, file__isnull=True).aggregate(total=Sum("size"))["total"]
    left = services.quota_bytes(dataset.owner) - services.used_bytes(dataset.owner) - (promised or 0)
    if size > left:
        raise services.TooLarge(f"file is {size} bytes but only {max(left, 0)} bytes of your quota are left "
                                "(unfinished uploads count): finish or delete them first")
    upload = Upload.objects.create(owner=dataset.owner, dataset=dataset, name=name[:255], size=size, sha256=sha)
    part_path(upload).parent.mkdir(parents=True, exist_ok=True)
    part_path(upload).touch()
    return upload, True


def write_chunk(upload: Upload, offset: int, stream: IO[bytes], length: int) -> Upload:
    """Append `length` bytes at `offset`. The offset must be where the server is (else 409 with `received`),
    so a retried or duplicated chunk never writes twice."""
    if length < 0 or offset < 0:
        raise services.InvalidInput({"offset": "offset and length must be non-negative"})
    with transaction.atomic():
        current = Upload.objects.select_for_update().get(pk=upload.pk)
        if current.is_complete:
            raise states.Conflict("upload is already complete", "complete")
        if offset != current.received:
            raise states.Conflict(f"upload is at byte {current.received}, not {offset}", str(current.received))
        if offset + length > current.size:
            raise services.InvalidInput({"offset": f"chunk ends at byte {offset + length}, beyond the declared "
                                                   f"size of {current.size} bytes"})
        path = part_path(current)
        path.parent.mkdir(parents=True, exist_ok=True)
        written = 0
        with path.open("r+b" if path.exists() else "wb") as fh:
            fh.seek(offset)
            fh.truncate()  # bytes past `received` are from a chunk that never committed
            while written < length:
                data = stream.read(min(1024 * 1024, length - written))
                if not data:
                    break
                fh.write(data)
                written += len(data)
            fh.flush()
            os.fsync(fh.fileno())
        if written != length:
            raise services.InvalidInput({"chunk": f"expected {length} bytes, received {written}"})
        Upload.objects.filter(pk=current.pk).update(received=offset + written, updated_at=timezone.now())
        current.received = offset + written
    return current


def complete(upload: Upload, sha256: str | None = None) -> File:
    """Verify all bytes arrived and hash to the declared sha256 (one pass, while they go into storage),
    then record them as a File of the dataset. Bytes that hash otherwise are discarded: start over."""
    sha = _clean_sha(sha256)
    mismatch: services.InvalidInput | None = None
    with transaction.atomic():
        current = Upload.objects.select_for_update().get(pk=upload.pk)
        if current.file_id:
            return current.file
        if sha and current.sha256 and sha != current.sha256:
            raise services.InvalidInput({"sha256": f"declared {current.sha256} at the start, now {sha}"})
        current.sha256 = current.sha256 or sha
        if not current.sha256:
            raise services.InvalidInput({"sha256": "the file's sha256 is needed to verify the upload"})
        if current.received != current.size:
            raise services.InvalidInput({"upload": f"only {current.received} of {current.size} bytes arrived"})
        path = part_path(current)
        try:
            with path.open("rb") as fh:
                file = services.add_file(current.dataset, current.name, fh, size_hint=current.size,
                                         expected_sha256=current.sha256)
        except services.InvalidInput as exc:
            if "sha256" not in exc.fields:
                raise
            mismatch = exc
        else:
            Upload.objects.filter(pk=current.pk).update(file=file, updated_at=timezone.now())
            transaction.on_commit(lambda: path.unlink(missing_ok=True))
            return file
    abandon(current)
    raise services.InvalidInput({"sha256": f"{mismatch.fields['sha256']}, not {current.sha256}; the upload "
                                           "was discarded: send the file again"})


def abandon(upload: Upload) -> None:
    part_path(upload).unlink(missing_ok=True)
    upload.delete()


def expire_stale(age: timedelta | None = None) -> int:
    """Remove unfinished uploads untouched for LOCUS_UPLOAD_EXPIRE_HOURS (their part files too)."""
    cutoff = timezone.now() - (age or timedelta(hours=settings.LOCUS_UPLOAD_EXPIRE_HOURS))
    stale = list(Upload.objects.filter(file__isnull=True, updated_at__lt=cutoff))
    for upload in stale:
        abandon(upload)
    return len(stale)

