"""Workers and enrollment tokens as their managers see them: staff (all), institution admins (their
institution's), owners (the workers they enrolled). Everyone else sees none — a 404, not a 403."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from jobs import services
from jobs.api.serializers import WorkerSerializer
from jobs.models import Worker


class WorkerViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    serializer_class = WorkerSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Worker.objects.none()
        return services.managed_workers(self.request.user).select_related("institution").order_by("name")

    def list(self, request, *args, **kwargs):
        workers = list(self.filter_queryset(self.get_queryset()))
        context = {**self.get_serializer_context(), "facts": services.worker_facts(workers)}
        return Response(WorkerSerializer(workers, many=True, context=context).data)

    @extend_schema(request=None, responses={200: WorkerSerializer})
    @action(detail=True, methods=["post"])
    def revoke(self, request, pk=None):
        """Revoke the worker: its tokens are refused (401), its running attempt is handed back (requeued)."""
        worker = services.revoke_worker(self.get_object())
        return Response(WorkerSerializer(worker).data)


class EnrollmentTokenSerializer(serializers.Serializer):
    institution = serializers.SlugField(required=False, allow_null=True)
    pools = serializers.ListField(child=serializers.SlugField(), required=False, default=list)
    hours = serializers.FloatField(min_value=0.1, max_value=24 * 30, default=24)
    note = serializers.CharField(max_length=200, required=False, default="")


class EnrollmentTokenViewSet(viewsets.GenericViewSet):
    serializer_class = EnrollmentTokenSerializer

    @extend_schema(responses={201: {"type": "object"}})
    def create(self, request):
        """A one-time token for a new worker (shown once). Staff, or an admin of the named institution."""
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        token, raw = services.issue_enrollment_token(request.user, institution=data.get("institution"),
                                                     pool_slugs=data["pools"], hours=data["hours"], note=data["note"])
        return Response({"token": raw, "expires_at": token.expires_at, "institution": data.get("institution"),
                         "pools": data["pools"]}, status=status.HTTP_201_CREATED)
