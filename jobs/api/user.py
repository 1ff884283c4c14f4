"""The user API: datasets and files, jobs, applications. Querysets are scoped to the requesting user."""

from __future__ import annotations

import json
import tempfile
import zipfile

from django.conf import settings
from django.core.files.storage import default_storage
from django.db.models import Q
from django.http import FileResponse, HttpResponseRedirect
from django.utils.dateparse import parse_datetime
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, pagination, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from algorithms.pipelines import QUEUE as PIPELINE_QUEUE
from algorithms.pipelines import plan as pipelines_plan
from jobs import pipelines, services, states, storage
from jobs.api.parsers import BoundedJSONParser as JSONParser
from jobs.api.serializers import (
    JOB_LIST,
    DatasetSerializer,
    FileSerializer,
    JobCreateSerializer,
    JobListSerializer,
    JobSerializer,
    RerunSerializer,
    job_detail,
)
from jobs.api.uploads import StartUploadSerializer, UploadSerializer, start_upload
from jobs.models import Dataset, File, Job
from jobs.registry import get_registry


class JobCursorPagination(pagination.CursorPagination):
    ordering = ("-created_at", "-id")
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


class PresignedUploadSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=1000)
    size = serializers.IntegerField(min_value=0)
    sha256 = serializers.RegexField(r"^[0-9a-fA-F]{64}$", error_messages={"invalid": "64 hex characters"})


class DatasetViewSet(viewsets.ModelViewSet):
    serializer_class = DatasetSerializer
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    parser_classes = [JSONParser, MultiPartParser]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation has no user
            return Dataset.objects.none()
        return Dataset.objects.filter(owner=self.request.user).prefetch_related("files")

    def perform_create(self, serializer):
        serializer.save(owner=self.request.user)

    def perform_destroy(self, instance):
        services.delete_dataset(instance)

    @extend_schema(methods=["GET"], request=None, responses={200: FileSerializer(many=True)},
                   description="The dataset's files (by name), each with the `id` that job `inputs` take.")
    @extend_schema(methods=["POST"], request={"multipart/form-data": {"type": "object", "properties": {
        "file": {"type": "string", "format": "binary"}, "sha256": {"type": "string"}}}},
        responses={201: FileSerializer})
    @action(detail=True, methods=["get", "post"], parser_classes=[MultiPartParser])
    def files(self, request, pk=None):
        """GET: the dataset's files. POST: upload one file (multipart field `file`; optional `sha256` is
        checked on arrival)."""
        dataset = self.get_object()
        if request.method == "GET":
            return Response(FileSerializer(dataset.files.order_by("name", "created_at"), many=True).data)
        content_length = request.META.get("CONTENT_LENGTH")
        services.check_upload_allowed(request.user, int(content_length) if content_length else None)
        upload = request.FILES.get("file")
        if upload is None:
            raise ValidationError({"file": "a multipart field named 'file' is required"})
        file = services.add_file(dataset, upload.name, upload, size_hint=upload.size,
                                 content_type=upload.content_type or "application/octet-stream",
                                 expected_sha256=request.data.get("sha256") or None)
        return Response(FileSerializer(file).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=StartUploadSerializer, responses={201: UploadSerializer, 200: UploadSerializer})
    @action(detail=True, methods=["post"], parser_classes=[JSONParser])
    def uploads(self, request, pk=None):
        """Start (or find again) a resumable chunked upload of one file into this dataset."""
        return start_upload(request, self.get_object())

    @extend_schema(request=PresignedUploadSerializer, responses={201: {"type": "object"}})
    @action(detail=True, methods=["post"], url_path="presigned-uploads", parser_classes=[JSONParser])
    def presigned_uploads(self, request, pk=None):
        """S3 storage: reserve a file and get a presigned PUT; then POST files/<id>/complete/."""
        dataset = self.get_object()
        serializer = PresignedUploadSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        file, target = services.start_presigned_upload(dataset, **serializer.validated_data)
        return Response({"file": FileSerializer(file).data, "upload": target}, status=status.HTTP_201_CREATED)


@extend_schema(parameters=[
    OpenApiParameter("job", str, description="only the outputs of this job (an id)"),
    OpenApiParameter("dataset", str, description="only the files of this dataset (an id)"),
    OpenApiParameter("kind", str, enum=["upload", "output"], description="uploads (in datasets) or job outputs"),
    OpenApiParameter("suffix", str, description="comma-separated name endings, e.g. `.hdf5,.csv`"),
])
class FileViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Every file of yours, uploads and job outputs alike: any `id` here can go into a job's `inputs`."""

    serializer_class = FileSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return File.objects.none()
        qs = File.objects.filter(owner=self.request.user)
        if self.action != "list":
            return qs
        params = self.request.query_params
        for name in ("job", "dataset"):
            if (value := params.get(name)) is not None:
                if services.parse_uuid(value) is None:
                    raise ValidationError({name: "expected an id"})
                qs = qs.filter(**{f"{name}_id": services.parse_uuid(value)})
        if (kind := params.get("kind")) is not None:
            if kind not in ("upload", "output"):
                raise ValidationError({"kind": "upload or output"})
            qs = qs.filter(**{"dataset__isnull" if kind == "upload" else "job__isnull": False})
        if suffixes := [s.strip().lower() for s in params.get("suffix", "").split(",") if s.strip()]:
            q = Q()
            for suffix in suffixes:
                q |= Q(name__iendswith=suffix if suffix.startswith(".") else f".{suffix}")
            qs = qs.filter(q)
        # Newest first: a job's outputs and a fresh upload are what one looks for.
        return qs.order_by("-created_at", "name")

    @extend_schema(request=None, responses={200: FileSerializer})
    @action(detail=True, methods=["post"])
    def complete(self, request, pk=None):
        """Finish a presigned upload: the portal checks size and sha256 of what reached the bucket.

        Multipart uploads send `{"multipart": {"upload_id", "parts": [{"part_number", "etag"}]}}`.
        """
        multipart = request.data.get("multipart") if isinstance(request.data, dict) else None
        return Response(FileSerializer(services.finish_presigned_upload(self.get_object(), multipart)).data)

    @extend_schema(responses={(200, "application/octet-stream"): bytes})
    @action(detail=True, methods=["get"])
    def download(self, request, pk=None):
        file = self.get_object()
        if settings.S3_STORAGE:
            return HttpResponseRedirect(storage.download_url(file.key, scope={}, filename=file.name))
        return FileResponse(default_storage.open(file.key, "rb"), as_attachment=True, filename=file.name)


@extend_schema(parameters=[
    OpenApiParameter("status", str, description="comma-separated statuses"),
    OpenApiParameter("application", str),
    OpenApiParameter("created_after", str, description="ISO-8601"),
    OpenApiParameter("created_before", str, description="ISO-8601"),
    OpenApiParameter("Idempotency-Key", str, location=OpenApiParameter.HEADER, required=False),
])
class JobViewSet(mixins.CreateModelMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin,
                 viewsets.GenericViewSet):
    pagination_class = JobCursorPagination

    def get_serializer_class(self):
        return {"list": JobListSerializer, "create": JobCreateSerializer}.get(self.action, JobSerializer)

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Job.objects.none()
        qs = Job.objects.filter(owner=self.request.user)
        if self.action != "list":
            return qs
        # The list reads plain rows (no model instances, never the spec/params JSON): see `list`.
        qs = qs.values(*JOB_LIST.lookups)
        params = self.request.query_params
        if value := params.get("status"):
            wanted = [s for s in value.split(",") if s]
            unknown = sorted(set(wanted) - set(Job.Status.values))
            if unknown:
                raise ValidationError({"status": f"unknown status {unknown[0]!r}"})
            qs = qs.filter(status__in=wanted)
        if value := params.get("application"):
            qs = qs.filter(application=value)
        for name, lookup in (("created_after", "created_at__gte"), ("created_before", "created_at__lt")):
            if value := params.get(name):
                try:
                    when = parse_datetime(value)
                except ValueError:  # well-formed but impossible, e.g. month 13
                    when = None
                if when is None:
                    raise ValidationError({name: "expected an ISO-8601 date-time"})
                qs = qs.filter(**{lookup: when})
        return qs

    @extend_schema(request=JobCreateSerializer, responses={201: JobSerializer, 200: JobSerializer})
    def create(self, request, *args, **kwargs):
        serializer = JobCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        key = request.headers.get("Idempotency-Key")
        if key is not None and not (0 < len(key) <= 200):
            raise ValidationError({"Idempotency-Key": "1 to 200 characters"})
        job, created = services.submit(request.user, idempotency_key=key, **serializer.validated_data)
        if not created:  # the first submission's job, as it is now
            return Response(job_detail(self.get_queryset().get(pk=job.pk)))
        # Made by this request: answer from memory, without attempts or outputs (it has none yet); only its JSON
        # columns are read back, as the database normalises them (key order, numbers), so the answer is byte for
        # byte what a GET of the job gives, and its `submitted` event.
        job.refresh_from_db(fields=["params", "spec"])
        return Response(job_detail(job, attempts=[], outputs=[]), status=status.HTTP_201_CREATED)

    def list(self, request, *args, **kwargs):
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        return self.get_paginated_response(JOB_LIST.rows(page))

    def retrieve(self, request, *args, **kwargs):
        return Response(job_detail(self.get_object()))

    @extend_schema(request=None, responses={200: JobSerializer})
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        job = states.cancel(self.get_object(), by=request.user)
        return Response(job_detail(self.get_queryset().get(pk=job.pk)))

    @extend_schema(request=RerunSerializer, responses={201: JobSerializer})
    @action(detail=True, methods=["post"])
    def rerun(self, request, pk=None):
        """A pipeline again from one of its steps: the succeeded steps before it are reused, not run again."""
        serializer = RerunSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        job = pipelines.rerun_from(self.get_object(), serializer.validated_data["from_step"], request.user)
        return Response(job_detail(self.get_queryset().get(pk=job.pk)), status=status.HTTP_201_CREATED)

    @extend_schema(parameters=[OpenApiParameter("offset", int), OpenApiParameter("limit", int)],
                   responses={200: {"type": "object"}})
    @action(detail=True, methods=["get"])
    def logs(self, request, pk=None):
        """The job's log from byte `offset`; poll again with `next_offset` until `complete`."""
        try:
            offset = int(request.query_params.get("offset", 0))
            limit = min(int(request.query_params.get("limit", 1024 * 1024)), 4 * 1024 * 1024)
        except ValueError:
            raise ValidationError({"offset": "offset and limit are integers"}) from None
        return Response(services.read_log(self.get_object(), offset, max(limit, 1)))

    @extend_schema(responses={200: {"type": "array", "items": {"type": "object"}}})
    @action(detail=True, methods=["get"])
    def outputs(self, request, pk=None):
        job = self.get_object()
        # `path`: where the output sits below the job's folder (`ch0/locs.csv`); names alone can repeat. A
        # pipeline answers its steps' outputs, each below its step's name (`drift/drift.png`).
        if job.queue == PIPELINE_QUEUE:
            files = [(f"{name}/{f.output_path}", f) for name, step in pipelines.step_jobs(job).items()
                     for f in step.outputs.all()]
        else:
            files = [(f.output_path, f) for f in job.outputs.all()]
        return Response([
            {**FileSerializer(f).data, "path": path,
             "url": request.build_absolute_uri(f"/api/v1/files/{f.pk}/download/")}
            for path, f in files
        ])

    @extend_schema(responses={(200, "application/zip"): bytes})
    @action(detail=True, methods=["get"])
    def bundle(self, request, pk=None):
        """Provenance bundle: inputs manifest, params, spec, attempts, events, log and every output."""
        job = self.get_object()
        detail = job_detail(job)
        spooled = tempfile.SpooledTemporaryFile(max_size=64 * 1024 * 1024)  # noqa: SIM115 - FileResponse closes it
        with zipfile.ZipFile(spooled, "w", zipfile.ZIP_DEFLATED) as zf:
            outputs = [(f.output_path, f) for f in job.outputs.all()]
            manifest = {"job": str(job.pk), "application": job.application, "version": job.version,
                        "entrypoint": job.entrypoint, "code_version": job.spec.get("code_version"),
                        "inputs": job.spec.get("inputs", []), "params": job.params, "status": job.status,
                        "outputs": [{"name": path, "size": f.size, "sha256": f.sha256} for path, f in outputs]}
            zf.writestr("manifest.json", json.dumps(manifest, indent=2, default=str))
            zf.writestr("params.json", json.dumps(job.params, indent=2))
            zf.writestr("job.json", json.dumps(detail, indent=2, default=str))
            zf.writestr("log.txt", services.read_log(job, 0, settings.LOCUS_MAX_LOG_BYTES + 1024)["text"])
            for path, f in outputs:
                with default_storage.open(f.key, "rb") as src, zf.open(f"outputs/{path}", "w") as dst:
                    while chunk := src.read(storage.CHUNK):
                        dst.write(chunk)
        spooled.seek(0)
        return FileResponse(spooled, as_attachment=True, filename=f"locus-job-{job.pk}.zip",
                            content_type="application/zip")


class ApplicationsView(APIView):
    """The registry without commands: what can be run, with which inputs and parameters."""

    @extend_schema(responses={200: {"type": "array", "items": {"type": "object"}}})
    def get(self, request):
        registry = get_registry()
        apps = []
        for name, versions in registry.applications.items():
            apps.append({"name": name, "default_version": registry.default_versions[name], "versions": [
                {"version": version, "entrypoints": [_describe(e) for e in entries.values()]}
                for version, entries in versions.items()
            ]})
        return Response(apps)


def _describe(entry) -> dict:
    return {
        "name": entry.name, "summary": entry.summary, "description": entry.description,
        "inputs": {s.name: {"suffixes": list(s.suffixes), "min": s.min_count, "max": s.max_count}
                   for s in entry.inputs.values()},
        "params": entry.params_schema, "outputs": list(entry.outputs), "hardware": entry.hardware,
        "timeout_s": entry.timeout_s, "max_attempts": entry.max_attempts,
        # It can also run on a CPU (params device = "cpu"): that route's queue, hardware and time limit.
        "cpu_route": ({"queue": "cpu", "hardware": entry.cpu_route.hardware, "timeout_s": entry.cpu_route.timeout_s,
                       "slowdown": entry.cpu_route.slowdown} if entry.cpu_route else None),
        **({"queue": PIPELINE_QUEUE, "steps": pipelines_plan(entry)["steps"]} if entry.is_pipeline
           else {"queue": entry.queue}),
    }

