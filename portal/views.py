"""The browser pages of the spine: job list and job page (the full portal grows on these)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, render

from jobs import services
from jobs.models import Job


@login_required
def home(request):
    jobs = Job.objects.filter(owner=request.user).order_by("-created_at")[:100]
    return render(request, "portal/home.html", {"jobs": jobs})


@login_required
def job_detail(request, job_id):
    job = get_object_or_404(Job.objects.prefetch_related("attempts__worker", "events", "outputs"),
                            pk=job_id, owner=request.user)
    log = services.read_log(job, max(0, job.log_size - 64 * 1024), 64 * 1024)["text"]
    return render(request, "portal/job_detail.html", {"job": job, "log": log})


def healthz(request):
    """Liveness/readiness: the database answers."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})
