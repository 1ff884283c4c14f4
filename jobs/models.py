"""The job engine's data. Status fields are written only by `jobs.states` (conditional UPDATEs)."""

from __future__ import annotations

import hashlib
import secrets
import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone


def hash_token(raw: str) -> str:
    """Tokens are stored as SHA-256 hex: a leaked database does not leak usable tokens."""
    return hashlib.sha256(raw.encode()).hexdigest()


def new_token(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(32)}"


class Institution(models.Model):
    """A lab or institute. Its members share private worker pools (`pool.<slug>.*` queues)."""

    slug = models.SlugField(unique=True)
    name = models.CharField(max_length=200)
    # How long a job waits in this institution's pool before it spills over to the shared tiers; empty
    # means the site default (LOCUS_POOL_SPILLOVER_SECONDS).
    pool_spillover_seconds = models.PositiveIntegerField(null=True, blank=True)
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, through="Membership", related_name="institutions")

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    """A user belongs to an institution; `is_admin` may approve members and manage its workers."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    institution = models.ForeignKey(Institution, on_delete=models.CASCADE)
    is_admin = models.BooleanField(default=False)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "institution"], name="unique_membership")]


class Dataset(models.Model):
    """A named group of uploaded files owned by one user; inputs of jobs are picked from these."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="datasets")
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.name


class File(models.Model):
    """One stored object: a user's upload (in a dataset) or a job's output. Bytes live in storage at `key`.

    `key` is always server-made (`users/<id>/...`), never derived from a user-supplied path. A file is
    `pending` while a presigned upload is under way and becomes `ready` once size + sha256 are verified.
    """

    class Status(models.TextChoices):
        PENDING = "pending"
        READY = "ready"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="files")
    dataset = models.ForeignKey(Dataset, null=True, blank=True, on_delete=models.CASCADE, related_name="files")
    job = models.ForeignKey("Job", null=True, blank=True, on_delete=models.CASCADE, related_name="outputs")
    attempt = models.ForeignKey("Attempt", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    name = models.CharField(max_length=255)
    key = models.CharField(max_length=512, unique=True)
    size = models.BigIntegerField()
    sha256 = models.CharField(max_length=64)
    content_type = models.CharField(max_length=100, default="application/octet-stream")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.READY)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def suffix(self) -> str:
        dot = self.name.rfind(".")
        return self.name[dot:].lower() if dot > 0 else ""

    @property
    def output_path(self) -> str:
        """A job output's path below its attempt's folder (`ch0/locs.csv`); the name for an upload."""
        if self.job_id is None:
            return self.name
        below_job = self.key.partition(f"/jobs/{self.job_id}/")[2]  # attempt-N/ch0/locs.csv
        return below_job.partition("/")[2] or self.name


class Job(models.Model):
    """One requested run of a registry entrypoint. `spec` is frozen at submission and never changes.

    `status` follows design §3 and is written only through `jobs.states`. `attempt_count` counts claims;
    the current attempt is the one with the highest number.
    """

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    TERMINAL = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)

    class Notify(models.TextChoices):
        ALWAYS = "always"
        FAILURE = "failure"
        NEVER = "never"
        # On failure, or when the job took longer than LOCUS_NOTIFY_LONG_JOB_MINUTES (jobs.notifications).
        LONG = "long"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="jobs")
    application = models.CharField(max_length=100)
    version = models.CharField(max_length=20)
    entrypoint = models.CharField(max_length=100)
    params = models.JSONField(default=dict)
    spec = models.JSONField()
    inputs = models.ManyToManyField(File, related_name="used_by_jobs", blank=True)
    queue = models.CharField(max_length=100)
    # Set for jobs that must run on one worker only (the selftest after enrollment): claim refuses others.
    pinned_worker = models.ForeignKey("Worker", null=True, blank=True, on_delete=models.SET_NULL,
                                      related_name="pinned_jobs")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED, db_index=True)
    progress = models.FloatField(default=0.0)
    progress_detail = models.JSONField(default=dict, blank=True)
    cancel_requested = models.BooleanField(default=False)
    notify = models.CharField(max_length=10, choices=Notify.choices, default=Notify.LONG)
    idempotency_key = models.CharField(max_length=200, null=True, blank=True)
    attempt_count = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=3)
    failure_class = models.CharField(max_length=20, blank=True)
    reason = models.TextField(blank=True)
    waiting_reason = models.CharField(max_length=300, blank=True)
    log_size = models.BigIntegerField(default=0)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    # When the job last entered `queued` (submission or requeue): the pool spill-over wait counts from here.
    queued_at = models.DateTimeField(default=timezone.now)
    notified_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # A pipeline's step (jobs.pipelines): the pipeline's own job, and the step's name in it. A pipeline job
    # itself runs nowhere: it is `running` while its steps run and ends with them.
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.CASCADE, related_name="steps")
    step = models.CharField(max_length=50, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["owner", "idempotency_key"], name="unique_idempotency_key",
                                    condition=models.Q(idempotency_key__isnull=False)),
        ]
        indexes = [
            models.Index(fields=["status", "queue", "created_at"]),
            # A user's job list, newest first (the API's cursor pages): read in index order, never sorted.
            models.Index(fields=["owner", "-created_at", "-id"], name="job_owner_newest_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.application}/{self.version}/{self.entrypoint} {self.id}"

    @property
    def is_terminal(self) -> bool:
        return self.status in self.TERMINAL

    @property
    def current_attempt(self) -> Attempt | None:
        return self.attempts.order_by("-number").first()


class Worker(models.Model):
    """A machine that runs jobs: a Kubernetes pod, a lab PC, a donated GPU. Enrolled once, then uses a token.

    `capabilities` is what its last heartbeat reported (cpu_count, memory_gb, gpus[...]); `pools` are the
    institution pools it serves besides the shared tiers. `selftest_job` is the diagnostics job submitted
    at enrollment (pinned to this worker); `selftest_report` is its hardware report once it finished.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="workers")
    institution = models.ForeignKey(Institution, null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="workers")
    pools = models.JSONField(default=list, blank=True)
    capabilities = models.JSONField(default=dict, blank=True)
    enabled = models.BooleanField(default=True)
    last_seen = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    selftest_job = models.ForeignKey(Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    selftest_report = models.JSONField(default=dict, blank=True)

    def __str__(self) -> str:
        return self.name

    @property
    def queue(self) -> str:
        """This worker's own queue: jobs pinned to it (its selftest) and nothing else."""
        return f"worker.{self.pk}"

    @property
    def is_authenticated(self) -> bool:  # lets DRF treat a worker as an authenticated principal
        return True

    def is_online(self, now=None) -> bool:
        if not self.last_seen:
            return False
        now = now or timezone.now()
        return (now - self.last_seen).total_seconds() < 3 * settings.LOCUS_LEASE_SECONDS


class WorkerToken(models.Model):
    """A worker's credential (hashed). Revoking it cuts the worker off at its next call."""

    worker = models.ForeignKey(Worker, on_delete=models.CASCADE, related_name="tokens")
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    revoked_at = models.DateTimeField(null=True, blank=True)

    @classmethod
    def issue(cls, worker: Worker) -> tuple[WorkerToken, str]:
        raw = new_token("lwk")
        return cls.objects.create(worker=worker, key_hash=hash_token(raw)), raw


class EnrollmentToken(models.Model):
    """A one-time secret an admin hands to a new worker; spent by `enroll`, which issues a WorkerToken."""

    key_hash = models.CharField(max_length=64, unique=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    institution = models.ForeignKey(Institution, null=True, blank=True, on_delete=models.SET_NULL)
    pools = models.JSONField(default=list, blank=True)
    note = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
    worker = models.ForeignKey(Worker, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    @classmethod
    def issue(cls, created_by=None, *, hours: float = 24, **fields) -> tuple[EnrollmentToken, str]:
        raw = new_token("len")
        token = cls.objects.create(key_hash=hash_token(raw), created_by=created_by,
                                   expires_at=timezone.now() + timezone.timedelta(hours=hours), **fields)
        return token, raw


class Attempt(models.Model):
    """One claim of a job by a worker. `fencing_token` proves the caller holds the current lease."""

    class Status(models.TextChoices):
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        LOST = "lost"
        CANCELLED = "cancelled"
        # Handed back by a worker that is shutting down: not the job's fault, so it uses none of max_attempts.
        RELEASED = "released"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="attempts")
    number = models.PositiveIntegerField()
    worker = models.ForeignKey(Worker, null=True, on_delete=models.SET_NULL, related_name="attempts")
    fencing_token = models.CharField(max_length=64, unique=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RUNNING, db_index=True)
    lease_expires_at = models.DateTimeField(db_index=True)
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    exit_code = models.IntegerField(null=True, blank=True)
    failure_class = models.CharField(max_length=20, blank=True)
    reason = models.TextField(blank=True)
    code_version = models.CharField(max_length=100, blank=True)
    cpu_seconds = models.FloatField(default=0.0)
    gpu_seconds = models.FloatField(default=0.0)

    class Meta:
        ordering = ["number"]
        constraints = [models.UniqueConstraint(fields=["job", "number"], name="unique_attempt_number")]


class JobEvent(models.Model):
    """The audit timeline of a job: every transition and notable fact, in order. Append-only."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="events")
    attempt = models.ForeignKey(Attempt, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    kind = models.CharField(max_length=40)
    message = models.TextField(blank=True)
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]


class LogChunk(models.Model):
    """A piece of a job's combined log. `offset` is the byte offset of its first byte in the whole log."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="log_chunks")
    attempt_number = models.PositiveIntegerField()
    offset = models.BigIntegerField()
    text = models.TextField()

    class Meta:
        ordering = ["offset"]
        indexes = [models.Index(fields=["job", "offset"])]


class Upload(models.Model):
    """A resumable browser/client upload under way: bytes arrive in chunks at `received`; `complete`
    verifies size + sha256 and turns it into a `File`.

    The chunks go to a part file on the portal's upload folder, or, on S3 storage, straight into an S3
    multipart upload (`key`, `s3_upload_id`, `parts`), so that any portal process can take the next chunk.
    Written only by `jobs.uploads`; the parts are removed when the upload completes or is abandoned.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="uploads")
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="uploads")
    name = models.CharField(max_length=255)
    size = models.BigIntegerField()
    sha256 = models.CharField(max_length=64, blank=True)  # declared at start or, at the latest, at completion
    received = models.BigIntegerField(default=0)
    part_bytes = models.BigIntegerField(default=0)  # chunk size fixed at the start (0: the setting's)
    key = models.CharField(max_length=500, blank=True)  # S3: the object the parts become
    s3_upload_id = models.CharField(max_length=1024, blank=True)
    parts = models.JSONField(default=list, blank=True)  # S3: [{"part_number", "etag"}] as S3 answered
    file = models.ForeignKey(File, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.received}/{self.size} bytes)"

    @property
    def is_complete(self) -> bool:
        return self.file_id is not None


class TrainedModel(models.Model):
    """A trained DECODE-Plex model that fits can use (design §9): a `model.pt` output of a train job, or a model
    bundled with Locus (no owner, no job). Written by `jobs.trained_models` when a train job succeeds.

    `reuse_key` digests what determines the model (calibration and transform sha256, training parameters,
    code version): a train asking for the same is answered with this model instead of training again.
    """

    class Visibility(models.TextChoices):
        PRIVATE = "private", "Only me"
        INSTITUTION = "institution", "My institutions"
        PUBLIC = "public", "Everyone"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE,
                              related_name="trained_models")
    visibility = models.CharField(max_length=12, choices=Visibility.choices, default=Visibility.PRIVATE)
    file = models.OneToOneField(File, on_delete=models.CASCADE, related_name="trained_model")
    train_job = models.ForeignKey(Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    params = models.JSONField(default=dict)
    calibration_sha256 = models.CharField(max_length=64, blank=True)
    code_version = models.CharField(max_length=100, blank=True)
    reuse_key = models.CharField(max_length=64, db_index=True)
    metrics = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.name
