"""The Models page: the trained models you may fit with, where they come from and how good they are; share or
delete your own. The rules (who sees what) are jobs.trained_models'."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from jobs import trained_models
from jobs.models import TrainedModel

SHOWN_PARAMS = ("mode", "channels", "three_d", "camera", "px_size_nm", "psf_sigma_px", "photons", "background",
                "density_per_um2", "features", "epochs", "steps_per_epoch")


# The validation figures a scientist looks at first, with their names; a training history's val_* and loss next.
KEY_METRICS = (("jaccard", "JI"), ("rmse_lat", "lateral RMSE (nm)"), ("rmse_lat_over_crlb", "RMSE / √CRLB"),
               ("precision", "precision"), ("recall", "recall"), ("prob_threshold", "detection threshold"))


def _value(value) -> str:
    """A parameter as a person reads it: ranges as 500–8000, booleans as yes/no."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, int | float) for v in value):
        return f"{value[0]:g}–{value[1]:g}"
    return str(value)


def _metrics(metrics: dict) -> list[tuple[str, float]]:
    shown = [(label, metrics[key]) for key, label in KEY_METRICS if key in metrics]
    shown += [(key.replace("_", " "), value) for key, value in sorted(metrics.items())
              if key.startswith("val_") or key == "loss"]
    return shown[:6]


@require_GET
@login_required
def model_list(request):
    models = list(trained_models.visible(request.user).select_related("owner", "file", "train_job"))
    rows = [{"model": m, "mine": m.owner_id == request.user.pk,
             "params": [(k.replace("_", " "), _value(m.params[k])) for k in SHOWN_PARAMS if k in m.params],
             "metrics": _metrics(m.metrics)} for m in models]
    return render(request, "portal/models/list.html", {"rows": rows, "visibility": TrainedModel.Visibility.choices})


def _own(request, model_id) -> TrainedModel:
    return get_object_or_404(TrainedModel, pk=model_id, owner=request.user)


@require_POST
@login_required
def model_share(request, model_id):
    model = _own(request, model_id)
    visibility = request.POST.get("visibility", "")
    if visibility not in TrainedModel.Visibility.values:
        messages.error(request, "Choose who may use the model.")
    else:
        TrainedModel.objects.filter(pk=model.pk).update(visibility=visibility)
        messages.success(request, f"{model.name}: {TrainedModel.Visibility(visibility).label.lower()} may use it.")
    return redirect("models")


@require_POST
@login_required
def model_delete(request, model_id):
    model = _own(request, model_id)
    model.delete()  # the file stays an output of the job that trained it
    messages.success(request, f"{model.name} removed from your models (its training job keeps the file).")
    return redirect("models")
