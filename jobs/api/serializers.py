"""Explicit serializers: what the API shows of each model (commands and keys are never shown)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from jobs import services
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

    class Meta(JobListSerializer.Meta):
        fields = [*JobListSerializer.Meta.fields, "params", "inputs", "notify", "progress_detail",
                  "cancel_requested", "max_attempts", "failure_class", "reason", "log_size", "attempts", "events",
                  "outputs"]
        read_only_fields = fields

    def get_inputs(self, job: Job) -> list[dict]:
        return job.spec.get("inputs", [])


class JobCreateSerializer(serializers.Serializer):
    application = serializers.CharField(max_length=100)
    version = serializers.CharField(max_length=20, required=False, allow_null=True)
    entrypoint = serializers.CharField(max_length=100)
    params = serializers.DictField(required=False, default=dict)
    inputs = serializers.DictField(child=serializers.ListField(child=serializers.CharField()), required=False,
                                   default=dict)
    notify = serializers.ChoiceField(choices=Job.Notify.choices, required=False)


class WorkerSerializer(serializers.ModelSerializer):
    """A worker with what its managers need to see: online state, GPUs, current job, GPU-hours served and the
    selftest verdict (`services.worker_facts`; list views pass them precomputed in the context)."""

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
