"""Explicit serializers: what the API shows of each model (commands and keys are never shown)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import cached_property
from typing import Any

from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import ISO_8601, serializers
from rest_framework.relations import PKOnlyObject
from rest_framework.settings import api_settings

from algorithms.pipelines import QUEUE as PIPELINE_QUEUE
from jobs import notifications, pipelines, services
from jobs.capabilities import normalise
from jobs.models import Attempt, Dataset, File, Job, JobEvent, Worker


class FileSerializer(serializers.ModelSerializer):
    class Meta:
        model = File
        fields = ["id", "name", "size", "sha256", "content_type", "status", "dataset", "job", "created_at"]
        read_only_fields = fields


class DatasetSerializer(serializers.ModelSerializer):
    files = FileSerializer(many=True, read_only=True)

    class Meta:
        model = Dataset
        fields = ["id", "name", "description", "created_at", "files"]
        read_only_fields = ["id", "created_at", "files"]


class AttemptSerializer(serializers.ModelSerializer):
    worker = serializers.CharField(source="worker.name", default=None, read_only=True)

    class Meta:
        model = Attempt
        fields = ["number", "status", "worker", "started_at", "finished_at", "lease_expires_at", "exit_code",
                  "failure_class", "reason", "code_version", "cpu_seconds", "gpu_seconds"]
        read_only_fields = fields


class EventSerializer(serializers.ModelSerializer):
    class Meta:
        model = JobEvent
        fields = ["kind", "message", "data", "created_at"]
        read_only_fields = fields


class JobListSerializer(serializers.ModelSerializer):
    class Meta:
        model = Job
        fields = ["id", "application", "version", "entrypoint", "status", "progress", "queue", "waiting_reason",
                  "attempt_count", "created_at", "started_at", "finished_at"]
        read_only_fields = fields


class JobSerializer(JobListSerializer):
    attempts = AttemptSerializer(many=True, read_only=True)
    events = EventSerializer(many=True, read_only=True)
    outputs = FileSerializer(many=True, read_only=True)
    inputs = serializers.SerializerMethodField()
    steps = serializers.SerializerMethodField()

    class Meta(JobListSerializer.Meta):
        fields = [*JobListSerializer.Meta.fields, "params", "inputs", "notify", "progress_detail",
                  "cancel_requested", "max_attempts", "failure_class", "reason", "log_size", "attempts", "events",
                  "outputs", "parent", "step", "steps"]
        read_only_fields = fields

    def get_inputs(self, job: Job) -> list[dict]:
        return job.spec.get("inputs", [])

    @extend_schema_field({"type": "array", "nullable": True, "description": "a pipeline's steps in order: "
                          "step, application, entrypoint, status (waiting | not run | a job status), job, outputs"})
    def get_steps(self, job: Job) -> list[dict] | None:
        return pipelines.chain(job) if job.queue == PIPELINE_QUEUE else None


class Rendering:
    """What a read-only ModelSerializer renders, compiled once: (name, source, to_representation) per field.

    The job list and detail are the API's hottest reads, and DRF's per-field machinery (building the fields
    for every serializer instance, `get_attribute`, a time-zone lookup per date-time) cost more CPU than their
    queries. Rendering through the serializer's own bound fields gives the same JSON, byte for byte. `rows`
    renders `.values()` dicts (no model instances at all; method fields need `obj`); `obj` one instance.
    Nested serializers are not rendered here: the caller passes their data, which keeps its place in the
    field order.
    """

    def __init__(self, serializer_class: type[serializers.ModelSerializer]):
        self.serializer_class = serializer_class

    @cached_property
    def _fields(self) -> list[tuple[str, str, Callable[[Any], Any] | None, bool]]:
        prototype = self.serializer_class()
        fields = []
        for name, field in prototype.fields.items():
            if isinstance(field, serializers.BaseSerializer):
                fields.append((name, "", None, False))  # supplied by the caller
                continue
            convert = field.to_representation
            if isinstance(field, serializers.PrimaryKeyRelatedField):  # a row holds the id, as DRF's own shortcut
                convert = lambda value, field=field: field.to_representation(PKOnlyObject(value))  # noqa: E731
            elif isinstance(field, serializers.RelatedField):
                raise TypeError(f"{self.serializer_class.__name__}.{name}: only primary-key relations render here")
            fmt = getattr(field, "format", api_settings.DATETIME_FORMAT)
            iso = (isinstance(field, serializers.DateTimeField) and not hasattr(field, "timezone")
                   and isinstance(fmt, str) and fmt.lower() == ISO_8601)
            fields.append((name, "__".join(field.source_attrs) or field.source, convert, iso))
        return fields

    @property
    def lookups(self) -> list[str]:
        """The `.values()` lookups that `rows` reads."""
        return [source for _, source, convert, _ in self._fields if convert is not None and source != "*"]

    def rows(self, rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        tz = timezone.get_current_timezone()
        return [self._render(row.__getitem__, tz, {}) for row in rows]

    def obj(self, instance: Any, **nested: Any) -> dict[str, Any]:
        def get(source: str) -> Any:
            # serializable_value: a foreign key gives its id, as in a `.values()` row; "*" is the instance
            # itself (method fields).
            return instance if source == "*" else instance.serializable_value(source)

        return self._render(get, timezone.get_current_timezone(), nested)

    def _render(self, get: Callable[[str], Any], tz, nested: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for name, source, convert, iso in self._fields:
            if convert is None:
                out[name] = nested[name]
                continue
            value = get(source)
            if value is None:
                out[name] = None
            elif iso and getattr(value, "tzinfo", None) is not None:
                # DRF's DateTimeField.to_representation, with the time zone looked up once, not per value.
                text = value.astimezone(tz).isoformat()
                out[name] = text[:-6] + "Z" if text.endswith("+00:00") else text
            else:
                out[name] = convert(value)
        return out


JOB_LIST = Rendering(JobListSerializer)
JOB_DETAIL = Rendering(JobSerializer)
ATTEMPTS = Rendering(AttemptSerializer)
EVENTS = Rendering(EventSerializer)
OUTPUTS = Rendering(FileSerializer)


def job_detail(job: Job, *, attempts: Iterable[dict] | None = None, events: Iterable[dict] | None = None,
               outputs: Iterable[dict] | None = None) -> dict[str, Any]:
    """`JobSerializer(job).data`; the related rows are read as `.values()` unless given (`[]` for a new job)."""
    if job.attempt_count == 0:
        # Never claimed: no attempt and no output can exist. `attempt_count` only grows, in the transaction that
        # creates an Attempt (jobs.states.claim), and outputs are registered only by an attempt's completion.
        attempts = [] if attempts is None else attempts
        outputs = [] if outputs is None else outputs
    return JOB_DETAIL.obj(
        job,
        attempts=ATTEMPTS.rows(job.attempts.values(*ATTEMPTS.lookups) if attempts is None else attempts),
        events=EVENTS.rows(job.events.values(*EVENTS.lookups) if events is None else events),
        outputs=OUTPUTS.rows(job.outputs.values(*OUTPUTS.lookups) if outputs is None else outputs),
    )


class RerunSerializer(serializers.Serializer):
    from_step = serializers.CharField(max_length=50, help_text="the step to run again, with every step after it")


class JobCreateSerializer(serializers.Serializer):
    application = serializers.CharField(max_length=100)
    version = serializers.CharField(max_length=20, required=False, allow_null=True)
    entrypoint = serializers.CharField(max_length=100)
    params = serializers.DictField(required=False, default=dict)
    inputs = serializers.DictField(child=serializers.ListField(child=serializers.CharField()), required=False,
                                   default=dict)
    notify = serializers.ChoiceField(choices=notifications.VALUES, required=False)
    retrain = serializers.BooleanField(required=False, default=False,
                                       help_text="DECODE-Plex train: train even if the same model exists")


class WorkerSerializer(serializers.ModelSerializer):
    """A worker with what its managers need to see: online state, GPUs, current job, GPU-hours served and the
    selftest verdict (`services.worker_facts`; list views pass them precomputed in the context)."""

    capabilities = serializers.SerializerMethodField()
    online = serializers.SerializerMethodField()
    institution = serializers.CharField(source="institution.slug", default=None, read_only=True)
    gpus = serializers.SerializerMethodField()
    current_job = serializers.SerializerMethodField()
    gpu_hours = serializers.SerializerMethodField()
    cpu_hours = serializers.SerializerMethodField()
    selftest = serializers.SerializerMethodField()

    class Meta:
        model = Worker
        fields = ["id", "name", "institution", "pools", "capabilities", "enabled", "last_seen", "online", "gpus",
                  "current_job", "gpu_hours", "cpu_hours", "selftest"]
        read_only_fields = fields

    def _facts(self, worker: Worker) -> dict:
        facts = self.context.setdefault("facts", {})
        if worker.pk not in facts:
            facts.update(services.worker_facts([worker]))
        return facts[worker.pk]

    @extend_schema_field({"type": "object"})
    def get_capabilities(self, worker: Worker) -> dict:
        return normalise(worker.capabilities)

    def get_online(self, worker: Worker) -> bool:
        return self._facts(worker)["online"]

    @extend_schema_field({"type": "array", "items": {"type": "object", "properties": {
        "name": {"type": "string"}, "memory_gb": {"type": "number"}}}})
    def get_gpus(self, worker: Worker) -> list:
        return self._facts(worker)["gpus"]

    @extend_schema_field({"type": "object", "nullable": True, "properties": {
        "application": {"type": "string"},
        "entrypoint": {"type": "string"}, "attempt": {"type": "integer"},
        "started_at": {"type": "string", "format": "date-time"}}})
    def get_current_job(self, worker: Worker) -> dict | None:
        return self._facts(worker)["current_job"]

    def get_gpu_hours(self, worker: Worker) -> float:
        return self._facts(worker)["gpu_hours"]

    def get_cpu_hours(self, worker: Worker) -> float:
        return self._facts(worker)["cpu_hours"]

    @extend_schema_field({"type": "object", "properties": {
        "result": {"type": "string", "description": "passed | failed | queued | running | cancelled | none"},
        "job": {"type": "string", "format": "uuid", "nullable": True},
        "report": {"type": "object", "description": "verdict: passed, problems, hostname, gpus, gflops ..."}}})
    def get_selftest(self, worker: Worker) -> dict:
        return self._facts(worker)["selftest"]
