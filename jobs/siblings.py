"""Sibling files that a format needs beside the file a user picks (design §9): a Picasso `.hdf5` table is read
with the `.yaml` of the same stem (its pixel size and history), and a Picasso `.raw` movie with the `.yaml`
that gives its frame size and data type, so when either is an input, that `.yaml` goes to the worker too.

A sibling is found where the format's writer puts it: in the same dataset under the same stem, or among the
same job's outputs in the same folder of the same attempt. `jobs.services.submit` adds it to the frozen
input manifest in the table's slot, marked `sibling_of`, outside the slot's count and suffix rules; the worker
lays it out beside the table like any other input, which is where the readers look for it.
"""

from __future__ import annotations

from collections.abc import Iterable

from jobs.models import File

# Suffix of a picked file → suffixes of the files that travel with it (same stem, same place).
SIBLING_SUFFIXES: dict[str, tuple[str, ...]] = {".hdf5": (".yaml",), ".raw": (".yaml",)}


def stem(name: str) -> str:
    dot = name.rfind(".")
    return name[:dot] if dot > 0 else name


def siblings_of(file: File) -> list[File]:
    """The ready files that travel with `file` (same owner, same dataset or same job folder), at most one per
    sibling suffix; the newest when a dataset holds the same name twice."""
    found = []
    for suffix in SIBLING_SUFFIXES.get(file.suffix, ()):
        same = File.objects.filter(owner_id=file.owner_id, status=File.Status.READY).exclude(pk=file.pk)
        if file.job_id:
            # The writer's own folder: `.../attempt-N/ch0/locs.hdf5` goes with `.../attempt-N/ch0/locs.yaml`.
            same = same.filter(job_id=file.job_id, key=stem(file.key) + suffix)
        elif file.dataset_id:
            same = same.filter(dataset_id=file.dataset_id, name=stem(file.name) + suffix)
        else:
            continue
        sibling = same.order_by("-created_at").first()
        if sibling is not None:
            found.append(sibling)
    return found


def _place(file: File, name_or_key: str | None = None) -> tuple | None:
    if file.job_id:
        return ("job", file.job_id, file.key if name_or_key is None else name_or_key)
    if file.dataset_id:
        return ("dataset", file.dataset_id, file.name if name_or_key is None else name_or_key)
    return None


def pairs(files: Iterable[File]) -> list[tuple[File, File]]:
    """(file, sibling) pairs among `files`, found without a query (for pickers and output tables)."""
    files = list(files)
    by_place = {place: f for f in files if (place := _place(f)) is not None}
    found = []
    for f in files:
        for suffix in SIBLING_SUFFIXES.get(f.suffix, ()):
            sibling = by_place.get(_place(f, stem(f.key if f.job_id else f.name) + suffix))
            if sibling is not None and sibling.pk != f.pk:
                found.append((f, sibling))
    return found
