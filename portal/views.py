"""The browser pages of the spine: job list and job page (the full portal grows on these)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, render
from django.views import defaults
from django.views.decorators.http import require_GET

from jobs import services
from jobs.models import Job


@require_GET
@login_required
def home(request):
    jobs = Job.objects.filter(owner=request.user).order_by("-created_at")[:100]
    return render(request, "portal/home.html", {"jobs": jobs})


@require_GET
@login_required
def job_detail(request, job_id):
    job = get_object_or_404(Job.objects.prefetch_related("attempts__worker", "events", "outputs"),
                            pk=job_id, owner=request.user)
    log = services.read_log(job, max(0, job.log_size - 64 * 1024), 64 * 1024)["text"]
    return render(request, "portal/job_detail.html", {"job": job, "log": log})


@require_GET
def healthz(request):
    """Liveness/readiness: the database answers."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})


def _api_error(code: str, message: str, status: int) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message}}, status=status)


def not_found(request, exception=None):
    """handler404: the API's one JSON error shape under /api/, the usual page elsewhere."""
    if request.path.startswith("/api/"):
        return _api_error("not_found", "no such endpoint or object", 404)
    return defaults.page_not_found(request, exception)


def server_error(request):
    """handler500: a JSON error under /api/ (clients parse it), the usual page elsewhere."""
    if request.path.startswith("/api/"):
        return _api_error("server_error", "internal error; it has been logged", 500)
    return defaults.server_error(request)


def bad_request(request, exception=None):
    if request.path.startswith("/api/"):
        return _api_error("bad_request", "bad request", 400)
    return defaults.bad_request(request, exception)


def permission_denied(request, exception=None):
    if request.path.startswith("/api/"):
        return _api_error("forbidden", str(exception or "") or "forbidden", 403)
    return defaults.permission_denied(request, exception)
