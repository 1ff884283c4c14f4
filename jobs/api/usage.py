"""GET /api/v1/usage/: compute used and donated (CPU- and GPU-seconds), as `jobs.usage.report` scopes it."""

from __future__ import annotations

from datetime import UTC, datetime

from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from jobs import services, usage


def _totals(name: str) -> serializers.Serializer:
    return inline_serializer(name, {
        "attempts": serializers.IntegerField(help_text="finished attempts counted"),
        "cpu_seconds": serializers.FloatField(help_text="user + system CPU time of the job processes"),
        "gpu_seconds": serializers.FloatField(help_text="wall time × GPUs allocated to the job"),
        "cpu_hours": serializers.FloatField(), "gpu_hours": serializers.FloatField(),
    })


UsageReport = inline_serializer("UsageReport", {
    "since": serializers.DateTimeField(allow_null=True), "until": serializers.DateTimeField(allow_null=True),
    "user": inline_serializer("UsageUser", {"username": serializers.CharField(), "used": _totals("UsedTotals"),
                                            "donated": _totals("DonatedTotals")}),
    "institutions": inline_serializer("UsageInstitution", {
        "slug": serializers.CharField(), "name": serializers.CharField(), "is_admin": serializers.BooleanField(),
        "used": _totals("InstitutionUsed"), "donated": _totals("InstitutionDonated")}, many=True),
    "workers": inline_serializer("UsageWorker", {
        "id": serializers.UUIDField(), "name": serializers.CharField(),
        "owner": serializers.CharField(allow_null=True), "institution": serializers.CharField(allow_null=True),
        "donated": _totals("WorkerDonated")}, many=True),
    "users": inline_serializer("UsageOfUser", {"username": serializers.CharField(), "used": _totals("UserUsed")},
                               many=True),
})


def parse_moment(value: str | None, field: str):
    """An ISO date or date-time from a query parameter (naive means UTC); 400 naming the field otherwise."""
    if not value:
        return None
    try:
        moment = parse_datetime(value)
        if moment is None and (day := parse_date(value)):
            moment = datetime(day.year, day.month, day.day)
    except ValueError:
        moment = None
    if moment is None:
        raise services.InvalidInput({field: f"not an ISO date or date-time: {value[:40]!r}"})
    return moment if timezone.is_aware(moment) else timezone.make_aware(moment, UTC)


class UsageView(APIView):
    @extend_schema(
        parameters=[OpenApiParameter("since", str, description="count attempts that ended at or after (ISO)"),
                    OpenApiParameter("until", str, description="count attempts that ended before (ISO)")],
        responses={200: UsageReport},
    )
    def get(self, request):
        """Your use and donations, your institutions' totals and the workers you manage. Staff see every
        institution and user; an institution admin sees its members. Units: seconds (and hours)."""
        since = parse_moment(request.query_params.get("since"), "since")
        until = parse_moment(request.query_params.get("until"), "until")
        if since and until and since >= until:
            raise services.InvalidInput({"until": "must be after since"})
        return Response(usage.report(request.user, since=since, until=until,
                                     managed_workers=services.managed_workers(request.user)))
