"""Workers and enrollment tokens as their managers see them: staff (all), institution admins (their
institution's), owners (the workers they enrolled). Everyone else sees none — a 404, not a 403."""

from __future__ import annotations

from django.db.models import Q
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from jobs.api.serializers import WorkerSerializer
from jobs.models import EnrollmentToken, Institution, Worker, WorkerToken


def managed_workers(user):
    if user.is_staff:
        return Worker.objects.all()
    admin_of = Institution.objects.filter(membership__user=user, membership__is_admin=True)
    return Worker.objects.filter(Q(owner=user) | Q(institution__in=admin_of)).distinct()


class WorkerViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    serializer_class = WorkerSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Worker.objects.none()
        return managed_workers(self.request.user).select_related("institution").order_by("name")

    @extend_schema(request=None, responses={200: WorkerSerializer})
    @action(detail=True, methods=["post"])
    def revoke(self, request, pk=None):
        """Disable the worker and revoke its tokens: its next call is refused (401) and it stops."""
        worker = self.get_object()
        now = timezone.now()
        WorkerToken.objects.filter(worker=worker, revoked_at__isnull=True).update(revoked_at=now)
        Worker.objects.filter(pk=worker.pk).update(enabled=False)
        worker.refresh_from_db()
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
        institution = None
        if data.get("institution"):
            institution = Institution.objects.filter(slug=data["institution"]).first()
            if institution is None:
                raise serializers.ValidationError({"institution": f"no institution {data['institution']!r}"})
        allowed = request.user.is_staff or (institution is not None and institution.membership_set.filter(
            user=request.user, is_admin=True).exists())
        if not allowed:
            raise serializers.ValidationError(
                {"institution": "only staff, or an admin of this institution, may enroll workers"})
        if data["pools"] and not request.user.is_staff and data["pools"] != [institution.slug]:
            raise serializers.ValidationError({"pools": f"an institution admin may only use pool {institution.slug!r}"})
        token, raw = EnrollmentToken.issue(request.user, hours=data["hours"], institution=institution,
                                           pools=data["pools"], note=data["note"])
        return Response({"token": raw, "expires_at": token.expires_at, "institution": data.get("institution"),
                         "pools": data["pools"]}, status=status.HTTP_201_CREATED)
