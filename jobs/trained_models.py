"""The model registry (design §9): trained DECODE-Plex models as rows, shared by visibility, reused by key.

A train job that succeeds registers its `model.pt` here, with the training parameters, the calibration's
sha256, the code version and the last epoch's validation metrics. A later train asking for the same model
(the same calibration and transform files, parameters and code version; where it runs does not count) is
answered at once with a copy of the existing model instead of hours of training, and says so in its
timeline; `retrain` forces a new training.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from typing import Any

from django.db.models import Q, QuerySet
from django.utils import timezone

from jobs import states, storage
from jobs.models import File, Institution, Job, TrainedModel

TRAIN = ("decode-plex", "train")
MODEL_FILE = "model.pt"
HISTORY_FILE = "train_history.json"
DETECTION_FILE = "detection.json"  # the detection threshold training chose, and its curve
NOT_IN_KEY = ("device", "threads")  # where and on how many cores a model trains does not change what it learns
MAX_HISTORY_BYTES = 4 * 1024 * 1024


def is_train(spec: dict[str, Any]) -> bool:
    return (spec.get("application"), spec.get("entrypoint")) == TRAIN


def reuse_key(spec: dict[str, Any]) -> str:
    """What determines a trained model, digested: entrypoint, input files by content, parameters, code."""
    document = {
        "run": [spec.get("application"), spec.get("version"), spec.get("entrypoint")],
        "inputs": sorted([item["slot"], item["sha256"]] for item in spec.get("inputs", [])),
        "params": {k: v for k, v in (spec.get("params") or {}).items() if k not in NOT_IN_KEY},
        "code": spec.get("code_version", ""),
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()


def visible(user) -> QuerySet[TrainedModel]:
    """Models `user` may fit with: their own, those shared with an institution of theirs, and public ones."""
    mine = Institution.objects.filter(membership__user=user)
    shared = Q(visibility=TrainedModel.Visibility.INSTITUTION, owner__membership__institution__in=mine)
    return TrainedModel.objects.filter(
        Q(owner=user) | Q(visibility=TrainedModel.Visibility.PUBLIC) | shared).distinct()


def find_reusable(user, spec: dict[str, Any]) -> TrainedModel | None:
    return visible(user).filter(reuse_key=reuse_key(spec)).select_related("file", "train_job").first()


def _numbers(data: Any) -> dict[str, float]:
    """The finite numbers of a JSON object (anything may be in a job's output)."""
    if not isinstance(data, dict):
        return {}
    return {str(k): float(v) for k, v in data.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)}


def _output_json(job: Job, name: str) -> Any:
    found = job.outputs.filter(key__endswith=f"/{name}").first()
    if found is None or found.size > MAX_HISTORY_BYTES:
        return None
    try:
        with storage.open_file(found.key) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def _last_metrics(job: Job) -> dict[str, float]:
    """The last epoch's numbers from the train job's history, and the detection threshold it chose."""
    data = _output_json(job, HISTORY_FILE)
    last = data[-1] if isinstance(data, list) and data else data
    metrics = _numbers(last)
    metrics.update({k: v for k, v in _numbers(_output_json(job, DETECTION_FILE)).items() if k == "prob_threshold"})
    return metrics


def register(job: Job) -> TrainedModel | None:
    """Called in the transaction that ends a train job successfully: its model.pt becomes a registry row."""
    if job.status != Job.Status.SUCCEEDED or not is_train(job.spec):
        return None
    model_file = job.outputs.filter(key__endswith=f"/{MODEL_FILE}").first()
    if model_file is None or hasattr(model_file, "trained_model"):
        return None
    calibration = next((i["sha256"] for i in job.spec.get("inputs", []) if i["slot"] == "calibration"), "")
    params = job.spec.get("params", {})
    name = f"{params.get('mode', 'single')} {params.get('camera', '') if isinstance(params.get('camera'), str) else 'custom camera'}"
    model = TrainedModel.objects.create(
        name=f"{name} · {timezone.localtime(job.finished_at or timezone.now()):%Y-%m-%d %H:%M}",
        owner=job.owner, file=model_file, train_job=job, params=params, calibration_sha256=calibration,
        code_version=job.spec.get("code_version", ""), reuse_key=reuse_key(job.spec), metrics=_last_metrics(job))
    states.event(job, "model_registered", f"model {model.name} added to your models", model=str(model.pk))
    return model


def answer_with(job: Job, model: TrainedModel) -> None:
    """In the submitting transaction: end a new train job at once with a copy of `model` as its model.pt."""
    key = storage.output_key(job.owner_id, job.pk, 0, MODEL_FILE)
    with storage.open_file(model.file.key) as fh:
        key, size, sha = storage.save_stream(key, fh)
    File.objects.create(owner_id=job.owner_id, job=job, key=key, name=MODEL_FILE, size=size, sha256=sha)
    trained = f" (trained by job {model.train_job_id})" if model.train_job_id else " (bundled with Locus)"
    states.event(job, "model_reused", f"reused model {model.name}{trained}: same calibration, parameters and "
                                      "code version, so it was not trained again; submit with “Train again” "
                                      "(retrain) to train anyway", model=str(model.pk))
    states.finish_reused(job)


def register_bundled() -> list[TrainedModel]:
    """The models shipped with Locus (algorithms/decode_plex/models/*.pt with their `.params.json`), as public
    models of nobody's; idempotent (a model already registered with the same bytes is left as it is). Run after
    every `migrate`, so a new install and the demo have them."""
    from algorithms.decode_plex import bundled
    from jobs.selftest import system_user

    found = []
    for path in sorted(bundled.MODELS_DIR.glob("*.pt")):
        params_file = bundled.params_path(path)
        if not params_file.exists():
            continue
        data = path.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        existing = TrainedModel.objects.filter(owner=None, file__sha256=sha).first()
        if existing is not None:
            found.append(existing)
            continue
        sidecar = bundled.sidecar_path(path)
        info = json.loads(sidecar.read_text()) if sidecar.exists() else {}
        name = f"{path.stem} (bundled)"
        key, size, digest = storage.save_stream(f"bundled/models/{sha[:12]}/{path.name}", io.BytesIO(data))
        file = File.objects.create(owner=system_user(), key=key, name=path.name, size=size, sha256=digest)
        params = json.loads(params_file.read_text())
        metrics = _numbers(info.get("validation"))
        metrics.update({k: v for k, v in _numbers(info.get("detection")).items() if k == "prob_threshold"})
        # A newer copy of a bundled model replaces the row of the older one (its file stays, for the jobs
        # that fitted with it): two rows of one name would leave the fit picker without its default.
        TrainedModel.objects.filter(owner=None, name=name).delete()
        found.append(TrainedModel.objects.create(
            name=name, owner=None, visibility=TrainedModel.Visibility.PUBLIC, file=file,
            # Its key is the file's digest, never a train's: it was trained by another code version.
            params=params, code_version=str(info.get("code_version", "")), reuse_key=sha, metrics=metrics))
    return found
