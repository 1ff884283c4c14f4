"""Resumable uploads: a file of any size arrives in chunks, survives a page reload or a dropped connection,
and becomes a `File` only once its size and sha256 match what the client declared (at the start, or at
completion by a client that hashes while it sends).

The client asks where to continue (`received`), sends the bytes from there, and finally asks to complete.
Where the chunks go depends on the storage. Local storage: they are appended to a part file under
LOCUS_UPLOAD_DIR (a folder every portal process must share), and on completion the part file goes through
`services.add_file` (quota, server-made key, checksum on the way into storage). S3 storage: each chunk is
one part of an S3 multipart upload begun at the start, so the portal keeps no bytes of its own and any of
its processes (pods) can take the next chunk; completion assembles the parts in the bucket and reads the
object back to check its size and sha256 before it becomes a `File`.
"""

from __future__ import annotations

import io
import os
from datetime import timedelta
from pathlib import Path
from typing import IO

from django.conf import settings
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from jobs import services, states, storage
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
    fields = {"owner": dataset.owner, "dataset": dataset, "name": name[:255], "size": size, "sha256": sha,
              "part_bytes": settings.LOCUS_UPLOAD_CHUNK_BYTES}
    if settings.S3_STORAGE:
        fields["key"] = storage.dataset_key(dataset.owner_id, dataset.pk, name)
        fields["s3_upload_id"] = storage.begin_multipart(fields["key"])
    try:
        with transaction.atomic():
            # Bytes promised by unfinished uploads count against the quota too, or parts could exceed it;
            # counted under the owner's lock so that parallel starts cannot all take the same room.
            services.lock_owner(dataset.owner)
            promised = Upload.objects.filter(owner=dataset.owner, file__isnull=True).aggregate(
                total=Sum("size"))["total"] or 0
            try:
                services.check_quota_locked(dataset.owner, size, promised)
            except services.TooLarge as exc:
                raise services.TooLarge(f"{exc} (unfinished uploads count): finish or delete them first") from None
            upload = Upload.objects.create(**fields)
    except services.TooLarge:
        if settings.S3_STORAGE:
            storage.abort_multipart(fields["key"], fields["s3_upload_id"])
        raise
    if settings.S3_STORAGE:
        return upload, True
    storage.private_file(part_path(upload))
    return upload, True


def chunk_bytes(upload: Upload) -> int:
    return upload.part_bytes or settings.LOCUS_UPLOAD_CHUNK_BYTES


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
        if current.s3_upload_id:
            return _put_part(current, offset, stream, length)
        path = part_path(current)
        storage.private_file(path)  # 0600 in a 0700 folder; recreated (empty) if someone removed it
        written = 0
        with path.open("r+b") as fh:
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


def _put_part(current: Upload, offset: int, stream: IO[bytes], length: int) -> Upload:
    """S3: the chunk at `offset` is part `offset / part_bytes + 1`; all but the last are exactly part_bytes."""
    step = chunk_bytes(current)
    if offset % step or (length != step and offset + length != current.size) or length == 0:
        raise services.InvalidInput({"chunk": f"on S3 storage every chunk but the last is exactly {step} bytes"})
    data = bytearray()
    while len(data) < length and (block := stream.read(min(1024 * 1024, length - len(data)))):
        data += block
    if len(data) != length:
        raise services.InvalidInput({"chunk": f"expected {length} bytes, received {len(data)}"})
    number = offset // step + 1
    etag = storage.put_part(current.key, current.s3_upload_id, number, bytes(data))
    parts = [p for p in current.parts if p["part_number"] != number] + [{"part_number": number, "etag": etag}]
    Upload.objects.filter(pk=current.pk).update(received=offset + length, parts=parts, updated_at=timezone.now())
    current.received, current.parts = offset + length, parts
    return current


def _assemble(current: Upload) -> File:
    """S3: join the parts into the object and check what the bucket holds; a mismatch deletes it."""
    if current.size == 0:  # S3 cannot assemble zero parts: store the empty file directly
        storage.abort_multipart(current.key, current.s3_upload_id)
        return services.add_file(current.dataset, current.name, io.BytesIO(b""), size_hint=0,
                                 expected_sha256=current.sha256)
    try:
        storage.finish_multipart(current.key, current.s3_upload_id, current.parts)
    except ValueError as exc:
        if not storage.exists(current.key):  # not a repeat of a completion that already assembled it
            raise services.InvalidInput({"upload": f"S3 refused to assemble the parts: {exc}"}) from None
    size, sha = storage.checksum(current.key)
    if size != current.size or sha != current.sha256:
        storage.delete(current.key)
        raise services.InvalidInput({"sha256": f"checksum mismatch: received bytes hash to {sha}"})
    return File.objects.create(owner=current.owner, dataset=current.dataset, name=storage.sanitise_name(current.name),
                               key=current.key, size=size, sha256=sha)


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
            if current.s3_upload_id:
                file = _assemble(current)
            else:
                with path.open("rb") as fh:
                    file = services.add_file(current.dataset, current.name, fh, size_hint=current.size,
                                             expected_sha256=current.sha256)
        except services.InvalidInput as exc:
            if "sha256" not in exc.fields:
                raise
            mismatch = exc
        else:
            Upload.objects.filter(pk=current.pk).update(file=file, updated_at=timezone.now())
            if not current.s3_upload_id:  # on S3 the parts became the object
                transaction.on_commit(lambda: path.unlink(missing_ok=True))
            return file
    abandon(current)
    raise services.InvalidInput({"sha256": f"{mismatch.fields['sha256']}, not {current.sha256}; the upload "
                                           "was discarded: send the file again"})


def discard_parts(upload: Upload) -> None:
    """Remove the bytes of an unfinished upload: its part file, or its S3 multipart upload."""
    if upload.s3_upload_id:
        storage.abort_multipart(upload.key, upload.s3_upload_id)
    else:
        part_path(upload).unlink(missing_ok=True)


def abandon(upload: Upload) -> None:
    discard_parts(upload)
    upload.delete()


def expire_stale(age: timedelta | None = None) -> int:
    """Remove unfinished uploads untouched for LOCUS_UPLOAD_EXPIRE_HOURS (their part files too)."""
    cutoff = timezone.now() - (age or timedelta(hours=settings.LOCUS_UPLOAD_EXPIRE_HOURS))
    stale = list(Upload.objects.filter(file__isnull=True, updated_at__lt=cutoff))
    for upload in stale:
        abandon(upload)
    return len(stale)

