"""Resumable uploads over the API (the browser's upload widget uses these too):

    POST /api/v1/datasets/<id>/uploads/    {name, size, sha256?} → {id, received, chunk_bytes, ...}
    GET  /api/v1/uploads/<id>/                                    → where to continue (`received`)
    PUT  /api/v1/uploads/<id>/chunk/?offset=N   raw bytes         → the new `received` (409 if N is stale)
    POST /api/v1/uploads/<id>/complete/    {sha256?}             → the verified File

The sha256 is declared at the start or at completion (a browser hashes while it sends).
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.parsers import BaseParser
from rest_framework.response import Response

from jobs import uploads
from jobs.api.serializers import FileSerializer
from jobs.models import Upload


class UploadSerializer(serializers.ModelSerializer):
    chunk_bytes = serializers.SerializerMethodField()
    complete = serializers.BooleanField(source="is_complete", read_only=True)

    class Meta:
        model = Upload
        fields = ["id", "dataset", "name", "size", "sha256", "received", "complete", "file", "chunk_bytes",
                  "created_at"]
        read_only_fields = fields

    def get_chunk_bytes(self, upload: Upload) -> int:
        return uploads.chunk_bytes(upload)


class StartUploadSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=1000)
    size = serializers.IntegerField(min_value=0)
    sha256 = serializers.RegexField(r"^[0-9a-fA-F]{64}$", required=False,
                                    error_messages={"invalid": "64 hex characters"})


class CompleteUploadSerializer(serializers.Serializer):
    sha256 = serializers.RegexField(r"^[0-9a-fA-F]{64}$", required=False,
                                    error_messages={"invalid": "64 hex characters"})


class RawBytesParser(BaseParser):
    """Chunks are sent as the raw request body; the view streams it, nothing is parsed."""

    media_type = "application/octet-stream"

    def parse(self, stream, media_type=None, parser_context=None):
        return stream


class UploadViewSet(mixins.RetrieveModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet):
    serializer_class = UploadSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Upload.objects.none()
        return Upload.objects.filter(owner=self.request.user)

    def perform_destroy(self, instance):
        uploads.abandon(instance)

    @extend_schema(request={"application/octet-stream": {"type": "string", "format": "binary"}},
                   parameters=[OpenApiParameter("offset", int, required=True)], responses={200: UploadSerializer})
    @action(detail=True, methods=["put"], parser_classes=[RawBytesParser])
    def chunk(self, request, pk=None):
        """Append the body at byte `offset` (which must equal `received`; else 409 naming where it is)."""
        upload = self.get_object()
        try:
            offset = int(request.query_params.get("offset", ""))
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            raise ValidationError({"offset": "an integer byte offset is required"}) from None
        if length > uploads.chunk_bytes(upload):
            raise ValidationError({"chunk": f"at most {uploads.chunk_bytes(upload)} bytes per chunk"})
        upload = uploads.write_chunk(upload, offset, request._request, length)
        return Response(UploadSerializer(upload).data)

    @extend_schema(request=CompleteUploadSerializer, responses={200: FileSerializer})
    @action(detail=True, methods=["post"])
    def complete(self, request, pk=None):
        """Check that every byte arrived and hashes to the declared sha256; the upload becomes a File."""
        upload = self.get_object()
        serializer = CompleteUploadSerializer(data=request.data if isinstance(request.data, dict) else {})
        serializer.is_valid(raise_exception=True)
        return Response(FileSerializer(uploads.complete(upload, serializer.validated_data.get("sha256"))).data)


def start_upload(request, dataset) -> Response:
    """The body of POST /api/v1/datasets/<id>/uploads/ (an action of the dataset viewset)."""
    serializer = StartUploadSerializer(data=request.data)
    serializer.is_valid(raise_exception=True)
    upload, created = uploads.start(dataset, **serializer.validated_data)
    return Response(UploadSerializer(upload).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)
