"""The worker API's contract (docs/worker-api.md): what a worker may send, typed and bounded.

Every worker call is validated here before anything is stored, so nothing a worker sends (a number as a
string, `1e999`, `NaN`, a 2**40 exit code, an 8 MB progress document) can reach a row that a later read
trips over. Unknown keys are dropped: an agent of a newer version may send more than this portal knows.
The same serializers describe the request bodies in the OpenAPI schema that the fuzzers use.
"""

from __future__ import annotations

import json
import math
from typing import Any

from django.conf import settings
from rest_framework import serializers

from jobs.api.parsers import depth
from jobs.capabilities import (
    MAX_COMPUTE_CAPABILITY,
    MAX_CPUS,
    MAX_GPU_NAME,
    MAX_GPUS,
    MAX_MEMORY_GB,
    TEXT_FIELDS,
)
from jobs.textsafe import MAX_DEPTH, clean_json, clean_text

INT32 = 2**31 - 1
MAX_SECONDS = 1e9  # about 32 years of CPU time for one attempt
MAX_PROGRESS_BYTES = 64 * 1024
MAX_LOG_CHARS = 1024 * 1024  # the agent sends 256 k characters at a time (workers.runner)
MAX_OUTPUTS = 10_000
MAX_REASON_CHARS = 20_000
SHA256 = r"^[0-9a-f]{64}$"


class CleanCharField(serializers.CharField):
    """Text made storable (NUL and lone surrogates dropped, see jobs.textsafe) rather than refused."""

    def to_internal_value(self, data):
        return clean_text(super().to_internal_value(data))


def _short(max_length: int = 200, **kwargs) -> CleanCharField:
    return CleanCharField(max_length=max_length, allow_blank=True, trim_whitespace=False, required=False,
                          **kwargs)


class GpuSerializer(serializers.Serializer):
    name = _short(MAX_GPU_NAME)
    memory_gb = serializers.FloatField(min_value=0, max_value=MAX_MEMORY_GB)
    compute_capability = _short(MAX_COMPUTE_CAPABILITY, allow_null=True)


class CapabilitiesSerializer(serializers.Serializer):
    """What the agent's probe reports (workers.capabilities.probe); numbers as numbers, finite, in range."""

    cpu_count = serializers.IntegerField(min_value=0, max_value=MAX_CPUS, required=False)
    memory_gb = serializers.FloatField(min_value=0, max_value=MAX_MEMORY_GB, required=False)
    gpus = serializers.ListField(child=GpuSerializer(), max_length=MAX_GPUS, required=False)
    hostname = _short(TEXT_FIELDS["hostname"])
    platform = _short(TEXT_FIELDS["platform"])
    python = _short(TEXT_FIELDS["python"])
    code_version = _short(TEXT_FIELDS["code_version"])
    agent_version = _short(TEXT_FIELDS["agent_version"])


class ProgressField(serializers.DictField):
    """A progress document as the job prints it (design §6): any JSON object up to MAX_PROGRESS_BYTES.

    Non-finite numbers (a diverged loss) become null instead of failing the heartbeat that carries them:
    refusing it would cost the job its lease. A `progress` outside [0, 1] is kept but not shown as the bar.
    """

    def to_internal_value(self, data):
        value = _finite_json(clean_json(super().to_internal_value(data)))
        if depth(value) > MAX_DEPTH:
            raise serializers.ValidationError(f"nested deeper than {MAX_DEPTH} levels")
        size = len(json.dumps(value, ensure_ascii=False).encode())
        if size > MAX_PROGRESS_BYTES:
            raise serializers.ValidationError(f"{size} bytes; at most {MAX_PROGRESS_BYTES}")
        return value


def _finite_json(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_json(v) for v in value]
    return value


class EnrollRequest(serializers.Serializer):
    enrollment_token = serializers.CharField(max_length=200)
    name = _short()
    capabilities = CapabilitiesSerializer(required=False)


class HeartbeatRequest(serializers.Serializer):
    capabilities = CapabilitiesSerializer(required=False)


class ClaimNextRequest(serializers.Serializer):
    wait_s = serializers.FloatField(min_value=0, max_value=30, required=False, default=0.0)


class AttemptHeartbeatRequest(serializers.Serializer):
    progress = ProgressField(required=False, allow_null=True)


class LogRequest(serializers.Serializer):
    text = CleanCharField(allow_blank=True, trim_whitespace=False, max_length=MAX_LOG_CHARS)


class OutputRequest(serializers.Serializer):
    name = serializers.CharField(max_length=500)
    size = serializers.IntegerField(min_value=0)
    sha256 = serializers.RegexField(SHA256)

    def validate_size(self, size: int) -> int:
        if size > settings.LOCUS_MAX_FILE_BYTES:
            raise serializers.ValidationError(f"the maximum is {settings.LOCUS_MAX_FILE_BYTES} bytes")
        return size


class ReportedOutput(serializers.Serializer):
    name = serializers.CharField(max_length=500, required=False, allow_blank=True)
    key = serializers.CharField(max_length=1000)
    size = serializers.IntegerField(min_value=0, max_value=2**63 - 1)
    sha256 = serializers.RegexField(SHA256)


class CompleteRequest(serializers.Serializer):
    exit_code = serializers.IntegerField(allow_null=True, min_value=-INT32 - 1, max_value=INT32,
                                         help_text="null when the process never ran (then failure_class says why)")
    failure_class = serializers.ChoiceField(choices=["input", "algorithm", "infrastructure"], allow_null=True,
                                            allow_blank=True, required=False)
    reason = CleanCharField(required=False, allow_blank=True, trim_whitespace=False, max_length=MAX_REASON_CHARS)
    outputs = serializers.ListField(child=ReportedOutput(), required=False, max_length=MAX_OUTPUTS)
    cpu_seconds = serializers.FloatField(required=False, min_value=0, max_value=MAX_SECONDS, default=0.0)
    gpu_seconds = serializers.FloatField(required=False, min_value=0, max_value=MAX_SECONDS, default=0.0)
    handback = serializers.BooleanField(required=False, default=False,
                                        help_text="the worker is shutting down: requeue the job without using "
                                                  "one of its max_attempts")

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        if data.get("exit_code") is None and not data.get("failure_class"):
            raise serializers.ValidationError({"exit_code": "an integer is required (null only with a "
                                                            "failure_class)"})
        data["failure_class"] = data.get("failure_class") or None
        return data


def validated(serializer_class: type[serializers.Serializer], data: Any) -> dict[str, Any]:
    """The request body checked against the contract (400 naming the field otherwise)."""
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)
