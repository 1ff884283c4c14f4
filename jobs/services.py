"""What the API, the UI, the admin and the tasks all call: submit, uploads, claim, worker calls, sweeps.

Business rules live here (and transitions in `jobs.states`); views only translate HTTP to these calls.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import time
import uuid
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import IO, Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.db.models import Case, IntegerField, Q, Sum, Value, When
from django.utils import timezone

from algorithms import pipelines
from algorithms import registry as reg
from jobs import dispatch, notifications, pools, selftest, siblings, states, storage, trained_models
from jobs.capabilities import normalise
from jobs.models import (
    Attempt,
    Dataset,
    EnrollmentToken,
    File,
    Institution,
    Job,
    LogChunk,
    Worker,
    WorkerToken,
    hash_token,
)
from jobs.registry import get_registry
from jobs.textsafe import clean_text, is_clean, non_finite_path


class InvalidInput(Exception):
    """Bad user input: HTTP 400 with `fields` mapping a field path to its problems."""

    def __init__(self, fields: dict[str, str], status: int = 400):
        self.fields = fields
        self.status = status
        super().__init__("; ".join(f"{k}: {v}" for k, v in fields.items()))


class NotFound(Exception):
    """Unknown or not yours: HTTP 404 (never 403, which would leak existence)."""


class TooLarge(Exception):
    """Over the file-size limit or the user's quota: HTTP 413."""


class QuotaExceeded(Exception):
    """Too many of something at once (active jobs): HTTP 429; the message names the limit."""


@cache
def code_version() -> str:
    """The code the portal runs (git commit or configured), recorded in every frozen spec."""
    if settings.LOCUS_CODE_VERSION:
        return settings.LOCUS_CODE_VERSION
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# --- uploads -------------------------------------------------------------------------------------------

def used_bytes(user) -> int:
    return File.objects.filter(owner=user).aggregate(total=Sum("size"))["total"] or 0


def quota_bytes(user) -> int:
    """The user's storage quota: set per user by an admin (profile), else the site default."""
    own = getattr(getattr(user, "profile", None), "quota_bytes", None)
    return own if own is not None else settings.LOCUS_USER_QUOTA_BYTES


def check_upload_allowed(user, size: int | None) -> None:
    """Refuse before any byte is stored: over the per-file maximum or the user's quota → 413."""
    if size is None:
        return
    if size > settings.LOCUS_MAX_FILE_BYTES:
        raise TooLarge(f"file is {size} bytes; the maximum is {settings.LOCUS_MAX_FILE_BYTES} bytes")
    left = quota_bytes(user) - used_bytes(user)
    if size > left:
        raise TooLarge(f"file is {size} bytes but only {max(left, 0)} bytes of your quota are left")


def lock_owner(user) -> None:
    """Lock the user's row until the transaction ends: what counts against their quotas (stored bytes,
    active jobs) is then counted and added by one request at a time."""
    # get_user_model(), not type(user): a view's request.user is a lazy wrapper.
    get_user_model().objects.select_for_update().filter(pk=user.pk).values_list("pk", flat=True).first()


def check_quota_locked(user, size: int, promised: int = 0) -> None:
    """Inside a transaction: lock the owner, then refuse `size` more bytes if they do not fit (413)."""
    lock_owner(user)
    left = quota_bytes(user) - used_bytes(user) - promised
    if size > left:
        raise TooLarge(f"file is {size} bytes but only {max(left, 0)} bytes of your quota are left")


def add_file(dataset: Dataset, name: str, stream: IO[bytes], size_hint: int | None = None,
             content_type: str = "application/octet-stream", expected_sha256: str | None = None) -> File:
    """Store an upload under a server-made key and record its size and sha256.

    The quota is checked before the bytes are stored and again, under the owner's lock, when the file is
    recorded: parallel uploads each saw the same room at the start, and only those that still fit are kept.
    """
    check_upload_allowed(dataset.owner, size_hint)
    limit = min(settings.LOCUS_MAX_FILE_BYTES, quota_bytes(dataset.owner) - used_bytes(dataset.owner))
    key = storage.dataset_key(dataset.owner_id, dataset.pk, name)
    try:
        key, size, sha = storage.save_stream(key, stream, limit=limit)
    except storage.TooLarge as exc:
        storage.delete(key)
        raise TooLarge(f"upload is {exc}") from None
    if expected_sha256 and expected_sha256.lower() != sha:
        storage.delete(key)
        raise InvalidInput({"sha256": f"checksum mismatch: received bytes hash to {sha}"})
    try:
        with transaction.atomic():
            check_quota_locked(dataset.owner, size)
            return File.objects.create(owner=dataset.owner, dataset=dataset, name=storage.sanitise_name(name),
                                       key=key, size=size, sha256=sha, content_type=content_type[:100])
    except TooLarge:
        storage.delete(key)
        raise


def start_presigned_upload(dataset: Dataset, name: str, size: int, sha256: str) -> tuple[File, dict[str, Any]]:
    """S3: a pending File and a presigned PUT straight to the bucket; `finish_presigned_upload` verifies."""
    if not settings.S3_STORAGE:
        raise InvalidInput({"storage": "presigned uploads need S3 storage; use multipart upload instead"})
    check_upload_allowed(dataset.owner, size)
    if len(sha256 or "") != 64:
        raise InvalidInput({"sha256": "64 hex characters required"})
    key = storage.dataset_key(dataset.owner_id, dataset.pk, name)
    with transaction.atomic():
        check_quota_locked(dataset.owner, size)
        file = File.objects.create(owner=dataset.owner, dataset=dataset, name=storage.sanitise_name(name), key=key,
                                   size=size, sha256=sha256.lower(), status=File.Status.PENDING)
    if size > storage.MULTIPART_PART_BYTES:
        return file, storage.start_multipart(key, size)
    return file, storage.upload_target(key, scope={"file": str(file.pk)}, size=size, sha256=sha256)


def finish_presigned_upload(file: File, multipart: dict[str, Any] | None = None) -> File:
    """Verify what arrived in the bucket (size + sha256) before the file can be used; else delete it.

    For a multipart upload, `multipart` is `{"upload_id", "parts": [{"part_number", "etag"}]}`.
    """
    if file.status == File.Status.READY:
        return file
    if multipart:
        if not isinstance(multipart, dict) or not isinstance(multipart.get("parts"), list):
            raise InvalidInput({"multipart": "expected {upload_id, parts: [{part_number, etag}]}"})
        try:
            storage.finish_multipart(file.key, str(multipart.get("upload_id")), multipart["parts"])
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidInput({"multipart": f"S3 refused to assemble the parts: {exc}"}) from None
    try:
        size, sha = storage.checksum(file.key)
    except (FileNotFoundError, OSError):
        raise InvalidInput({"file": "no bytes were uploaded for this file"}) from None
    except Exception as exc:  # noqa: BLE001 - botocore raises ClientError for a missing key
        raise InvalidInput({"file": f"no bytes were uploaded for this file ({type(exc).__name__})"}) from None
    if size != file.size or sha != file.sha256:
        storage.delete(file.key)
        file.delete()
        raise InvalidInput({"sha256": f"uploaded bytes do not match: {size} bytes, sha256 {sha}"})
    File.objects.filter(pk=file.pk).update(status=File.Status.READY)
    file.status = File.Status.READY
    return file


def delete_dataset(dataset: Dataset) -> None:
    busy = Job.objects.filter(inputs__dataset=dataset, status__in=[Job.Status.QUEUED, Job.Status.RUNNING])
    if busy.exists():
        raise states.Conflict("a queued or running job uses this dataset")
    from jobs.uploads import discard_parts  # uploads builds on this module

    keys = list(dataset.files.values_list("key", flat=True))
    unfinished = list(dataset.uploads.filter(file__isnull=True))  # they go with their dataset
    dataset.delete()
    for key in keys:
        transaction.on_commit(lambda k=key: storage.delete(k))
    for upload in unfinished:
        transaction.on_commit(lambda u=upload: discard_parts(u))


# --- submit --------------------------------------------------------------------------------------------

def submit(user, *, application: str, entrypoint: str, version: str | None = None, params: dict | None = None,
           inputs: dict[str, list] | None = None, notify: str | None = None, idempotency_key: str | None = None,
           pinned_worker: Worker | None = None, parent: Job | None = None, step: str = "",
           retrain: bool = False) -> tuple[Job, bool]:
    """Validate against the registry, freeze the resolved spec, queue it. Returns (job, created).

    The same `idempotency_key` from the same user returns the first job instead of making a second. The queue
    is the user's institution pool when one serves the job's tier (`jobs.pools`), else the shared tier; a job
    `pinned_worker` goes to that worker's own queue (system-made, so the active-jobs quota does not apply).
    A pipeline (application `pipeline`) gets a job of its own that runs nowhere: `jobs.pipelines` submits
    its steps, each with `parent` and `step` set, as their inputs come to exist. A DECODE-Plex train whose
    model exists already among those the user may use ends at once with a copy of it (`jobs.trained_models`)
    unless `retrain`.
    """
    if idempotency_key:
        existing = Job.objects.filter(owner=user, idempotency_key=idempotency_key).first()
        if existing:
            return existing, False
    try:
        entry = get_registry().get(application, version, entrypoint)
    except reg.UnknownEntrypoint as exc:
        raise InvalidInput({exc.field: exc.message}) from None
    if not is_clean(params):
        raise InvalidInput({"params": "text must not contain NUL or unpaired surrogate characters"})
    if (where := non_finite_path(params)) is not None:
        raise InvalidInput({f"params.{where}" if where else "params": "must be a finite number"})
    try:
        resolved = entry.resolve_params(params)
    except reg.ParamsError as exc:
        raise InvalidInput({f"params.{exc.path}" if exc.path else "params": exc.message}) from None
    files = _resolve_inputs(user, entry, inputs or {})
    travelling = _travelling_siblings(entry, files)
    notify = notify or getattr(getattr(user, "profile", None), "notify", notifications.DEFAULT)
    if notify not in notifications.VALUES:
        raise InvalidInput({"notify": f"must be one of {', '.join(notifications.VALUES)}"})
    spec = {
        "application": entry.application, "version": entry.version, "entrypoint": entry.name,
        "command": list(entry.command), "params": resolved, "hardware": entry.hardware,
        "timeout_s": entry.timeout_s, "max_attempts": entry.max_attempts,
        "retry_on_algorithm_failure": entry.retry_on_algorithm_failure, "outputs": list(entry.outputs),
        "inputs": _input_manifest(files, travelling),
        "code_version": code_version(),
    }
    route_note = ""
    if entry.is_pipeline:
        spec["pipeline"] = pipelines.plan(entry)
        queue = pipelines.QUEUE
    else:
        # The CPU route (registry `cpu_route`) changes the spec's hardware and time limit, so the tier follows it.
        spec, route_note = (spec, "") if pinned_worker else pools.choose_route(entry, spec)
        queue = pinned_worker.queue if pinned_worker else pools.route(user, reg.queue_for(spec["hardware"]))
    try:
        with transaction.atomic():
            if pinned_worker is None:
                _check_active_jobs(user)
            # `dispatched_at` is written with the row rather than by a second UPDATE after the send: a failed
            # send clears it again (dispatch.send_job), so the redispatch sweep still re-sends at its next pass.
            # A process that dies between commit and send leaves it set: the sweep re-sends once it is older
            # than LOCUS_REDISPATCH_SECONDS, as for a message the broker lost.
            now = timezone.now()
            job = Job.objects.create(
                owner=user, application=entry.application, version=entry.version, entrypoint=entry.name,
                params=resolved, spec=spec, queue=queue, notify=notify, max_attempts=entry.max_attempts,
                idempotency_key=idempotency_key or None, pinned_worker=pinned_worker, parent=parent, step=step,
                waiting_reason=spec.get("route_reason", "")[:300],  # the deployment chose the CPU route: say so
                dispatched_at=None if entry.is_pipeline else now,
                **({"status": Job.Status.RUNNING, "started_at": now} if entry.is_pipeline else {}),
            )
            if chosen := [f for fs in files.values() for f in fs] + [s for _, s in travelling]:
                job.inputs.add(*chosen)
            if entry.is_pipeline:
                steps = ", ".join(s.name for s in entry.steps)
                states.event(job, "submitted", f"pipeline of {len(entry.steps)} steps: {steps}")
                transaction.on_commit(lambda: dispatch.advance_pipeline(job.pk))
            else:
                where = f"step {step} of pipeline {parent.pk}, " if parent else ""
                states.event(job, "submitted", f"{where}queued on {queue}{route_note}")
                model = None if retrain or not trained_models.is_train(spec) else \
                    trained_models.find_reusable(user, spec)
                if model is not None:
                    trained_models.answer_with(job, model)
                    job.refresh_from_db()
                else:
                    transaction.on_commit(lambda: dispatch.send_job(job.pk, job.queue, marked=True))
    except IntegrityError:
        # Two concurrent submissions with one idempotency key: the other one won. Without a key there is
        # nothing to look up (filtering on None would find any job of the user's without one).
        existing = (Job.objects.filter(owner=user, idempotency_key=idempotency_key).first()
                    if idempotency_key else None)
        if existing is None:
            raise
        return existing, False
    return job, True


def _check_active_jobs(user) -> None:
    """At most LOCUS_MAX_ACTIVE_JOBS queued or running jobs per user (inside submit's transaction).

    The user's row is locked first so that concurrent submissions count one after the other.
    """
    limit = settings.LOCUS_MAX_ACTIVE_JOBS
    lock_owner(user)
    active = Job.objects.filter(owner=user, status__in=[Job.Status.QUEUED, Job.Status.RUNNING]).count()
    if active >= limit:
        raise QuotaExceeded(f"you have {active} queued or running jobs; the limit is {limit} "
                            "(LOCUS_MAX_ACTIVE_JOBS): wait for some to finish or cancel some")


def _resolve_inputs(user, entry: reg.Entrypoint, inputs: dict[str, list]) -> dict[str, list[File]]:
    if not isinstance(inputs, dict):
        raise InvalidInput({"inputs": "must map slot names to lists of file ids"})
    extra = sorted(set(inputs) - set(entry.inputs))
    if extra:
        raise InvalidInput({f"inputs.{extra[0]}": f"{entry.key} has no input slot {extra[0]!r}"})
    resolved = {}
    for slot in entry.inputs.values():
        ids = inputs.get(slot.name, [])
        if isinstance(ids, str):
            ids = [ids]
        if not isinstance(ids, list):
            raise InvalidInput({f"inputs.{slot.name}": "must be a list of file ids"})
        if len(ids) < slot.min_count or (slot.max_count is not None and len(ids) > slot.max_count):
            raise InvalidInput({f"inputs.{slot.name}": f"needs {slot.describe_count()} file(s), got {len(ids)}"})
        if len({str(file_id) for file_id in ids}) < len(ids):
            raise InvalidInput({f"inputs.{slot.name}": "the same file is given more than once"})
        files = []
        for i, file_id in enumerate(ids):
            # Your files, and the model files of the models you may use (shared by others, bundled).
            file = (File.objects.filter(pk=parse_uuid(file_id), status=File.Status.READY)
                    .filter(Q(owner=user) | Q(trained_model__in=trained_models.visible(user))).first())
            if file is None:
                raise InvalidInput({f"inputs.{slot.name}.{i}": f"no file {file_id!r} among your files"})
            if slot.suffixes and file.suffix not in slot.suffixes:
                raise InvalidInput({f"inputs.{slot.name}.{i}":
                                    f"{file.name!r} must end with {' or '.join(slot.suffixes)}"})
            files.append(file)
        resolved[slot.name] = files
    return resolved


def _travelling_siblings(entry: reg.Entrypoint, files: dict[str, list[File]]) -> list[tuple[File, File]]:
    """(picked file, sibling) for the siblings its format needs (`jobs.siblings`), in slots that name the
    format's suffix (an "any file" slot takes files as they are). One the user picked already, or a file of
    the same name in that slot, is not added twice."""
    out = []
    for slot, picked in files.items():
        if not entry.inputs[slot].suffixes:
            continue
        names = {f.name for f in picked}
        for f in picked:
            for sibling in siblings.siblings_of(f):
                if sibling.name not in names:
                    names.add(sibling.name)
                    out.append((f, sibling))
    return out


def _input_manifest(files: dict[str, list[File]], travelling: list[tuple[File, File]]) -> list[dict[str, Any]]:
    """The frozen `spec.inputs`: each picked file in its slot, each sibling right after the file it travels
    with, in the same slot (the worker lays it beside it) and marked `sibling_of` (not one of the slot's
    picks: re-run and clone leave it out, and submit finds it again)."""
    with_siblings: dict[Any, list[File]] = {}
    for f, sibling in travelling:
        with_siblings.setdefault(f.pk, []).append(sibling)
    items = []
    for slot, picked in files.items():
        for f in picked:
            items.append({"slot": slot, "file": str(f.pk), "name": f.name, "size": f.size, "sha256": f.sha256})
            items += [{"slot": slot, "file": str(s.pk), "name": s.name, "size": s.size, "sha256": s.sha256,
                       "sibling_of": str(f.pk)} for s in with_siblings.get(f.pk, [])]
    return items


def picked_inputs(spec: dict[str, Any]) -> dict[str, list[str]]:
    """`inputs` as the user gave them ({slot: [file ids]}) from a frozen spec: siblings are left out, as
    `submit` adds them again. For re-run, clone and requeue."""
    inputs: dict[str, list[str]] = {}
    for item in spec.get("inputs", []):
        if not item.get("sibling_of"):
            inputs.setdefault(item["slot"], []).append(item["file"])
    return inputs


def parse_uuid(value: Any) -> uuid.UUID | None:
    """A UUID from user input, or None: a malformed id is simply 'not found', never a 500."""
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


# --- workers -------------------------------------------------------------------------------------------

def worker_queues(worker: Worker) -> list[str]:
    """The queues a worker may consume, most urgent first: its own (pinned jobs), its institution pools, then
    the shared tiers its hardware covers. The agent consumes them in this order (priority, not round robin),
    which is how a pool worker serves its institution first."""
    tiers = pools.tier_queues(worker)
    own = [pools.pool_queue(pool, tier) for pool in (worker.pools or []) for tier in tiers]
    return [worker.queue, *own, *tiers]


def managed_workers(user):
    """Workers `user` may see and revoke: staff all, an institution admin their institution's, anyone the
    workers they enrolled."""
    if user.is_staff:
        return Worker.objects.all()
    admin_of = Institution.objects.filter(membership__user=user, membership__is_admin=True)
    return Worker.objects.filter(Q(owner=user) | Q(institution__in=admin_of)).distinct()


def admin_institutions(user):
    """Institutions for which `user` may create enrollment tokens (staff: all)."""
    if user.is_staff:
        return Institution.objects.all().order_by("slug")
    return Institution.objects.filter(membership__user=user, membership__is_admin=True).order_by("slug")


def worker_facts(workers) -> dict[Any, dict[str, Any]]:
    """What the workers page and API show beyond the row: online state, GPUs, the job it runs now, GPU-hours
    served, and the selftest verdict (or the selftest job's state while it has none). Three queries in all."""
    from jobs import usage

    workers = list(workers)
    now = timezone.now()
    running = {a.worker_id: a for a in Attempt.objects.filter(worker__in=workers, status=Attempt.Status.RUNNING)
               .select_related("job").order_by("started_at")}
    donated = usage.donated_by_workers(Worker.objects.filter(pk__in=[w.pk for w in workers]))
    selftests = {j.pk: j for j in Job.objects.filter(pk__in=[w.selftest_job_id for w in workers if w.selftest_job_id])}
    facts = {}
    for w in workers:
        attempt = running.get(w.pk)
        job = selftests.get(w.selftest_job_id)
        report = w.selftest_report or {}
        if report:
            verdict = "passed" if report.get("passed") else "failed"
        else:
            verdict = job.status if job else "none"
        facts[w.pk] = {
            "online": w.enabled and w.is_online(now),
            "gpus": [{"name": g["name"], "memory_gb": g["memory_gb"]} for g in normalise(w.capabilities)["gpus"]],
            # No job id: the job belongs to someone the worker's manager may not be (a 404 on its id).
            "current_job": ({"application": attempt.job.application,
                             "entrypoint": attempt.job.entrypoint, "attempt": attempt.number,
                             "started_at": attempt.started_at.isoformat()} if attempt else None),
            "gpu_hours": donated.get(w.pk, {}).get("gpu_hours", 0.0),
            "cpu_hours": donated.get(w.pk, {}).get("cpu_hours", 0.0),
            "selftest": {"result": verdict, "job": str(job.pk) if job else None, "report": report},
        }
    return facts


def enroll(raw_token: str, name: str, capabilities: dict, *, selftest_job: bool | None = None) -> tuple[Worker, str]:
    """Spend a one-time enrollment token; returns the new worker and its (raw) worker token.

    A selftest job pinned to the new worker is queued in the same transaction when `selftest_job` is true
    (None: the LOCUS_SELFTEST_ON_ENROLL setting).
    """
    now = timezone.now()
    with transaction.atomic():
        token = EnrollmentToken.objects.select_for_update().filter(key_hash=hash_token(raw_token or "")).first()
        if token is None or token.used_at or token.expires_at < now:
            raise InvalidInput({"enrollment_token": "unknown, used or expired enrollment token"}, status=403)
        worker = Worker.objects.create(name=clean_text(name or "worker")[:200] or "worker", owner=token.created_by,
                                       institution=token.institution, pools=token.pools,
                                       capabilities=capabilities or {}, last_seen=now)
        updated = EnrollmentToken.objects.filter(pk=token.pk, used_at__isnull=True).update(used_at=now, worker=worker)
        if not updated:
            raise InvalidInput({"enrollment_token": "enrollment token already used"}, status=403)
        _, raw = WorkerToken.issue(worker)
        if settings.LOCUS_SELFTEST_ON_ENROLL if selftest_job is None else selftest_job:
            submit_selftest(worker)
    return worker, raw


def submit_selftest(worker: Worker) -> Job:
    """Queue `diagnostics selftest` pinned to `worker`, owned by its owner (or the system user)."""
    owner = worker.owner or selftest.system_user()
    job, _ = submit(owner, application=selftest.APPLICATION, entrypoint=selftest.ENTRYPOINT, params={},
                    notify=Job.Notify.NEVER, pinned_worker=worker,
                    idempotency_key=f"selftest:{worker.pk}:{timezone.now().isoformat()}")
    Worker.objects.filter(pk=worker.pk).update(selftest_job=job, selftest_report={})
    worker.selftest_job, worker.selftest_report = job, {}
    return job


POOL_SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


def issue_enrollment_token(user, *, institution: str | None = None, pool_slugs: list[str] | None = None,
                           hours: float = 24, note: str = "") -> tuple[EnrollmentToken, str]:
    """A one-time enrollment token (raw value returned once). Staff may name any institution and pools; an
    institution admin only their institution and, as pool, only its slug. Everyone else: 400 naming why."""
    inst = None
    if institution:
        inst = Institution.objects.filter(slug=institution).first()
        if inst is None:
            raise InvalidInput({"institution": f"no institution {institution!r}"})
    allowed = user.is_staff or (inst is not None and inst.membership_set.filter(user=user, is_admin=True).exists())
    if not allowed:
        raise InvalidInput({"institution": "only staff, or an admin of this institution, may enroll workers"})
    pool_slugs = list(pool_slugs or [])
    bad = [slug for slug in pool_slugs if not POOL_SLUG_RE.match(str(slug))]
    if bad:  # the agent accepts only these queue names (workers.celery_app.JOB_QUEUE_RE)
        raise InvalidInput({"pools": f"{bad[0]!r}: a pool slug is lower-case letters, digits, '-' and '_'"})
    if pool_slugs and not user.is_staff and pool_slugs != [inst.slug]:
        raise InvalidInput({"pools": f"an institution admin may only use pool {inst.slug!r}"})
    return EnrollmentToken.issue(user, hours=hours, institution=inst, pools=pool_slugs, note=clean_text(note)[:200])


@transaction.atomic
def revoke_worker(worker: Worker) -> Worker:
    """Cut a worker off: tokens revoked, disabled, its running attempts handed back (requeued now), and the
    jobs pinned to it that can no longer run (its queued selftest) cancelled."""
    now = timezone.now()
    WorkerToken.objects.filter(worker=worker, revoked_at__isnull=True).update(revoked_at=now)
    Worker.objects.filter(pk=worker.pk).update(enabled=False)
    states.hand_back(worker, f"worker {worker.name} was revoked")
    for job in Job.objects.filter(pinned_worker=worker, status__in=[Job.Status.QUEUED, Job.Status.RUNNING]):
        with contextlib.suppress(states.Conflict):  # it ended meanwhile
            states.cancel(job)
    worker.refresh_from_db()
    return worker


def worker_heartbeat(worker: Worker, capabilities: dict | None) -> Worker:
    fields: dict[str, Any] = {"last_seen": timezone.now()}
    if isinstance(capabilities, dict) and capabilities:
        fields["capabilities"] = capabilities
    Worker.objects.filter(pk=worker.pk).update(**fields)
    for k, v in fields.items():
        setattr(worker, k, v)
    return worker


def claim(job_id, worker: Worker) -> Attempt:
    """A worker asks for a job it was sent; 409 unless queued and covered by the worker's hardware."""
    job = Job.objects.filter(pk=parse_uuid(job_id)).first()
    if job is None:
        raise NotFound("no such job")
    if job.pinned_worker_id not in (None, worker.pk):
        raise states.Conflict("job is pinned to another worker", job.status)
    if job.queue not in worker_queues(worker):
        # Only through its own queues: a worker must not pick another pool's job by its id.
        raise states.Conflict(f"this worker does not serve the job's queue {job.queue}", job.status)
    if not reg.covers(worker.capabilities or {}, job.spec.get("hardware", {})):
        raise states.Conflict("this worker's hardware does not cover the job", job.status)
    worker_heartbeat(worker, None)
    return states.claim(job.pk, worker, code_version=normalise(worker.capabilities).get("code_version", ""))


def claim_next(worker: Worker, wait_s: float = 0.0) -> Attempt | None:
    """Pull mode: the oldest queued job this worker can run, long-polling up to `wait_s` seconds."""
    deadline = time.monotonic() + max(0.0, min(float(wait_s), 30.0))
    queues = worker_queues(worker)
    # Its own queue first, then its pools, then the shared tiers (oldest first within each).
    rank = Case(*[When(queue=q, then=Value(i)) for i, q in enumerate(queues)], output_field=IntegerField())
    while True:
        worker_heartbeat(worker, None)
        with transaction.atomic():
            candidates = (Job.objects.select_for_update(skip_locked=True)
                          .filter(status=Job.Status.QUEUED, cancel_requested=False, queue__in=queues)
                          .filter(Q(pinned_worker__isnull=True) | Q(pinned_worker=worker))
                          .annotate(rank=rank).order_by("rank", "created_at")[:20])
            for job in candidates:
                if reg.covers(worker.capabilities or {}, job.spec.get("hardware", {})):
                    try:
                        return states.claim(job.pk, worker,
                                            code_version=normalise(worker.capabilities).get("code_version", ""))
                    except states.Conflict:
                        continue
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.25)


def claim_payload(attempt: Attempt) -> dict[str, Any]:
    """What a worker needs to run an attempt: frozen spec, scoped input URLs, lease."""
    job = attempt.job
    scope = {"job": str(job.pk), "attempt": str(attempt.pk)}
    files = {str(f.pk): f for f in job.inputs.all()}
    inputs = []
    for item in job.spec.get("inputs", []):
        f = files[item["file"]]
        inputs.append({**item, "url": storage.download_url(f.key, scope={**scope, "file": item["file"]},
                                                           filename=f.name)})
    spec = {k: job.spec[k] for k in ("application", "version", "entrypoint", "command", "params",
                                     "timeout_s", "hardware", "code_version", "outputs")}
    return {"job_id": str(job.pk), "attempt_id": str(attempt.pk), "attempt": attempt.number,
            "fencing_token": attempt.fencing_token, "lease_s": settings.LOCUS_LEASE_SECONDS,
            "lease_expires_at": attempt.lease_expires_at.isoformat(), "spec": spec, "inputs": inputs}


def append_log(attempt: Attempt, text: str) -> int:
    """Append to the job's log (bounded by LOCUS_MAX_LOG_BYTES); returns the log's new size in bytes."""
    job = attempt.job
    data = clean_text(text).encode()
    with transaction.atomic():
        size = Job.objects.select_for_update().values_list("log_size", flat=True).get(pk=job.pk)
        room = settings.LOCUS_MAX_LOG_BYTES - size
        if room <= 0:
            return size
        if len(data) > room:
            data = data[:room].decode(errors="ignore").encode() + b"\n[log truncated]\n"
        LogChunk.objects.create(job=job, attempt_number=attempt.number, offset=size,
                                text=data.decode(errors="replace"))
        Job.objects.filter(pk=job.pk).update(log_size=size + len(data))
    return size + len(data)


def read_log(job: Job, offset: int = 0, limit: int = 1024 * 1024) -> dict[str, Any]:
    """Incremental log read: the bytes from `offset` (up to `limit`), and where to continue."""
    offset = max(0, int(offset))
    chunks = LogChunk.objects.filter(job=job, offset__gte=_chunk_start(job, offset)).order_by("offset")
    out, pos = bytearray(), None
    for chunk in chunks:
        data = chunk.text.encode()
        start = max(0, offset - chunk.offset)
        out += data[start:]
        pos = chunk.offset + len(data)
        if len(out) >= limit:
            break
    out = out[:limit]
    next_offset = offset + len(out)
    return {"offset": offset, "next_offset": next_offset, "text": out.decode(errors="replace"),
            "complete": job.is_terminal and next_offset >= (pos or job.log_size)}


def _chunk_start(job: Job, offset: int) -> int:
    first = LogChunk.objects.filter(job=job, offset__lte=offset).order_by("-offset").values_list("offset", flat=True)
    return first[0] if first else 0


def output_upload_target(attempt: Attempt, name: str, size: int, sha256: str) -> dict[str, Any]:
    """Where the worker puts one output (`name`, `size` and `sha256` checked by the worker API's contract)."""
    clean = storage.sanitise_relpath(name)
    key = storage.output_key(attempt.job.owner_id, attempt.job_id, attempt.number, clean)
    scope = {"job": str(attempt.job_id), "attempt": str(attempt.pk)}
    return storage.upload_target(key, scope=scope, size=size, sha256=sha256.lower())


def reported_seconds(attempt: Attempt, cpu_seconds: float, gpu_seconds: float) -> tuple[float, float]:
    """What a worker reports, capped by what it could have used: the attempt's wall time on the server's
    clock times the worker's registered CPU cores (CPU time) or the GPUs it could give the job (GPU time:
    wall time × GPUs allocated, as the agent measures it), so no worker can inflate the hours it is
    credited with."""
    wall = max((timezone.now() - attempt.started_at).total_seconds(), 0.0)
    caps = normalise(attempt.worker.capabilities if attempt.worker else {})
    gpus = min(reg.number(attempt.job.spec.get("hardware", {}).get("gpu")), len(caps["gpus"]))
    return min(cpu_seconds, wall * max(caps["cpu_count"], 1)), min(gpu_seconds, wall * gpus)


def complete(attempt: Attempt, token: str, data: dict[str, Any]) -> Job:
    """Verify every reported output in storage (size + sha256), then finish the attempt atomically.

    `data` is a body checked by the worker API's contract (jobs.api.worker_contract.CompleteRequest).
    """
    outputs = data.get("outputs") or []
    exit_code = data.get("exit_code")
    failure_class = data.get("failure_class")
    cpu_seconds, gpu_seconds = reported_seconds(attempt, data.get("cpu_seconds", 0.0), data.get("gpu_seconds", 0.0))
    prefix = storage.output_prefix(attempt.job.owner_id, attempt.job_id, attempt.number)
    verified = []
    if exit_code == 0 and not failure_class:
        for i, out in enumerate(outputs):
            key = out["key"]
            if not key.startswith(prefix) or ".." in key:
                raise InvalidInput({f"outputs.{i}.key": "not an upload target of this attempt"})
            try:
                size, sha = storage.checksum(key)
            except Exception:  # noqa: BLE001 - missing object (local or S3)
                raise InvalidInput({f"outputs.{i}": f"{out.get('name') or key!r} was not uploaded"}) from None
            if size != out["size"] or sha != out["sha256"]:
                raise InvalidInput({f"outputs.{i}": f"{out.get('name') or key!r} does not match its reported "
                                                    "checksum"})
            verified.append((key, size, sha))

    def register(job: Job, att: Attempt) -> None:
        # The name shown is the stored key below the attempt's folder, never what the worker calls it.
        for key, size, sha in verified:
            File.objects.create(owner_id=job.owner_id, job=job, attempt=att, key=key,
                                name=storage.sanitise_name(key.rsplit("/", 1)[-1]),
                                size=size, sha256=sha)

    # One transaction: a finished selftest and its verdict on the worker become visible together, so nobody
    # reads a terminal selftest job next to an empty report.
    with transaction.atomic():
        job = states.complete(
            attempt.pk, token, exit_code=exit_code, failure_class=failure_class,
            reason=data.get("reason", ""), cpu_seconds=cpu_seconds, gpu_seconds=gpu_seconds,
            register_outputs=register, handback=data.get("handback", False),
        )
        selftest.record(job)
        trained_models.register(job)
    return job


# --- sweeps --------------------------------------------------------------------------------------------

def describe_need(hardware: dict[str, Any]) -> str:
    return f"no online worker with {pools.need_text(hardware)}"


def cpu_route_offer(spec: dict[str, Any]) -> str:
    """For a waiting GPU job that can also run on a CPU: what happens next, or what the user can do."""
    route = spec.get("cpu_route")
    if spec.get("route") != "gpu" or not route:
        return ""
    how = reg.CpuRoute(**route).describe()
    after = settings.LOCUS_CPU_ROUTE_AFTER_SECONDS
    if after and (spec.get("params") or {}).get(reg.DEVICE_PARAM) is None:
        return f"; it moves to the CPU queue ({how}) if none is online for {after} s"
    return f" — or re-run it with Device = cpu: it also runs on a CPU ({how})"


def flag_unschedulable() -> int:
    """Tell users why queued jobs wait when no online worker could ever take them."""
    now = timezone.now()
    online = [w for w in Worker.objects.filter(enabled=True, last_seen__isnull=False) if w.is_online(now)]
    flagged = 0
    for job in Job.objects.filter(status=Job.Status.QUEUED).only("id", "spec", "queue", "waiting_reason"):
        hardware = job.spec.get("hardware", {})
        takers = [w for w in online if job.queue in worker_queues(w) and reg.covers(w.capabilities or {}, hardware)]
        if takers:
            reason = job.spec.get("route_reason", "")  # the deployment chose the CPU route: keep saying so
        elif job.queue.startswith("worker."):
            reason = "waiting for the worker it is pinned to to come online"
        elif job.queue.startswith("pool."):
            slug = job.queue.split(".")[1]
            reason = (f"no online worker in pool {slug}; it moves to the shared queue "
                      f"{pools.shared_tier(job)} after {pools.spillover_seconds(slug)} s")
        else:
            reason = describe_need(hardware) + cpu_route_offer(job.spec)
            if job.spec.get("route_reason"):
                reason += f"; it {job.spec['route_reason']}"
        reason = reason[:300]
        if reason != job.waiting_reason:
            states.flag_waiting(job, reason)
            flagged += bool(reason)
    return flagged


def redispatch_stale(age: timedelta | None = None) -> int:
    """Re-send queued jobs whose message may be lost (broker restart, failed send). Duplicates are harmless."""
    age = age or timedelta(seconds=max(settings.LOCUS_REDISPATCH_SECONDS, 4 * settings.LOCUS_SWEEP_SECONDS))
    cutoff = timezone.now() - age
    stale = Job.objects.filter(status=Job.Status.QUEUED, cancel_requested=False).exclude(dispatched_at__gt=cutoff)
    count = 0
    for job_id, queue in stale.values_list("id", "queue"):
        count += dispatch.send_job(job_id, queue)
    return count


def sweep() -> dict[str, int]:
    """The periodic maintenance pass (beat, every LOCUS_SWEEP_SECONDS)."""
    return {"lost": states.expire_leases(), "spilled": pools.spill_over(), "cpu_routed": pools.move_to_cpu_route(),
            "flagged": flag_unschedulable(), "redispatched": redispatch_stale()}
