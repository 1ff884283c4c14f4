"""Dataset pages: list with quota, detail (files, checksums, uploads under way, jobs that used it),
resumable upload widget (it talks to the upload API), delete (refused while a queued/running job uses it)."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Count, Sum
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from jobs import services, states
from jobs.models import Dataset, Job
from portal.web.common import quota


class DatasetForm(forms.ModelForm):
    class Meta:
        model = Dataset
        fields = ["name", "description"]
        widgets = {"description": forms.Textarea(attrs={"rows": 2})}
        help_texts = {"name": "e.g. “2025-03-14 U2OS Nup96 3D”", "description": "Optional: sample, dyes, camera"}


@require_http_methods(["GET", "POST"])
@login_required
def dataset_list(request):
    form = DatasetForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        dataset = form.save(commit=False)
        dataset.owner = request.user
        dataset.save()
        return redirect("dataset-page", dataset_id=dataset.pk)
    datasets = (Dataset.objects.filter(owner=request.user)
                .annotate(n_files=Count("files"), total=Sum("files__size")).order_by("-created_at"))
    return render(request, "portal/datasets/list.html", {"datasets": datasets, "form": form,
                                                         "quota": quota(request.user)},
                  status=400 if form.errors else 200)


def _own(request, dataset_id) -> Dataset:
    return get_object_or_404(Dataset, pk=dataset_id, owner=request.user)


@require_GET
@login_required
def dataset_page(request, dataset_id):
    dataset = _own(request, dataset_id)
    files = list(dataset.files.order_by("name"))
    jobs = (Job.objects.filter(owner=request.user, inputs__dataset=dataset).distinct().order_by("-created_at")[:50])
    busy = any(j.status in (Job.Status.QUEUED, Job.Status.RUNNING) for j in jobs)
    pending = dataset.uploads.filter(file__isnull=True).order_by("created_at")
    return render(request, "portal/datasets/detail.html", {
        "dataset": dataset, "files": files, "jobs": jobs, "busy": busy, "pending": pending,
        "total": sum(f.size for f in files), "quota": quota(request.user),
        "chunk_bytes": settings.LOCUS_UPLOAD_CHUNK_BYTES})


@require_POST
@login_required
def dataset_delete(request, dataset_id):
    dataset = _own(request, dataset_id)
    try:
        services.delete_dataset(dataset)
    except states.Conflict as exc:
        messages.error(request, f"Not deleted: {exc.message}. Cancel the job or wait for it to finish.")
        return redirect("dataset-page", dataset_id=dataset.pk)
    messages.success(request, f"Dataset “{dataset.name}” deleted.")
    return redirect("datasets")
