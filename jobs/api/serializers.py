"""Explicit serializers: what the API shows of each model (commands and keys are never shown)."""

from __future__ import annotations

from rest_framework import serializers

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
    online = serializers.SerializerMethodField()
    institution = serializers.CharField(source="institution.slug", default=None, read_only=True)

    class Meta:
        model = Worker
        fields = ["id", "name", "institution", "pools", "capabilities", "enabled", "last_seen", "online"]
        read_only_fields = fields

    def get_online(self, worker: Worker) -> bool:
        return worker.is_online()
