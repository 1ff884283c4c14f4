"""Job pages: the list with live status, the new-job form from the registry, the live job page, cancel,
re-run and output previews. Every decision is `jobs.services` / `jobs.states`; these views translate."""

from __future__ import annotations

import contextlib
import json
import math
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.files.storage import default_storage
from django.http import Http404, JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from algorithms import registry as reg
from algorithms.pipelines import QUEUE as PIPELINE_QUEUE
from jobs import notifications, pipelines, services, siblings, states, trained_models
from jobs.models import File, Job
from jobs.registry import get_registry
from portal.accounts.services import profile_of
from portal.web import inputs as inputs_ui
from portal.web import schema_form
from portal.web.common import job_origin, job_row, quota

PREVIEW_BYTES = 64 * 1024
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".webp"}
TEXT_SUFFIXES = {".json", ".txt", ".csv", ".log", ".yaml", ".yml", ".md", ".tsv"}

# The QC report (algorithms/render/qc.py: qc.json + qc_*.png + qc.html; algorithms/decode_plex/qc.py: qc_*.png)
# is shown from qc.json and the PNGs in our own template. qc.html is user content: it is only downloaded,
# never served as a page of the portal (and its relative <img> links work only beside its PNGs, as in the
# provenance bundle).
QC_SUMMARY = "qc.json"
QC_SUMMARY_MAX_BYTES = 256 * 1024
QC_FIGURES: dict[str, tuple[str, str]] = {  # file → (title, what to look for), in the report's order
    "qc_subpixel.png": ("Sub-pixel positions", "Flat when the fitter is unbiased; peaks at the pixel centre or at "
                                               "the edges mean pixel locking."),
    "qc_photons.png": ("Photons per localization", ""),
    "qc_bg.png": ("Background", ""),
    "qc_sigma.png": ("Localization precision", ""),
    "qc_psf_sigma.png": ("PSF width", ""),
    "qc_sigma_vs_z.png": ("Predicted precision vs z", ""),
    "qc_photon_ratio.png": ("Photon ratios and dye peaks", "One peak per dye, at the dashed lines."),
    "qc_per_frame.png": ("Localizations per frame", "Steady or slowly decaying; steps mean focus loss or changed "
                                                    "illumination."),
    "qc_frc.png": ("Fourier ring correlation", "Resolution where the smoothed curve crosses 1/7."),
    "qc_drift.png": ("Drift", "The table's drift trace in x and y (nm)."),
}
# Rendered images lead the previews: the renderer's outputs and a fit's rendered QC preview.
RENDER_PREVIEWS = {"qc_preview.png"}


def _filtered_jobs(request):
    jobs = Job.objects.filter(owner=request.user)
    status = request.GET.get("status", "")
    application = request.GET.get("application", "")
    if status in Job.Status.values:
        jobs = jobs.filter(status=status)
    elif status == "active":
        jobs = jobs.filter(status__in=[Job.Status.QUEUED, Job.Status.RUNNING])
    if application:
        jobs = jobs.filter(application=application)
    jobs = jobs.select_related("parent").prefetch_related("inputs__dataset", "inputs__job")  # job_origin's reads
    return jobs.order_by("-created_at")[:100], status, application


@require_GET
@login_required
def job_list(request):
    jobs, status, application = _filtered_jobs(request)
    rows = [(job, {**job_row(job), **job_origin(job)}) for job in jobs]
    return render(request, "portal/jobs/list.html", {
        "rows": rows, "status": status, "application": application,
        "statuses": ["active", *Job.Status.values], "applications": sorted(get_registry().applications),
    })


@require_GET
@login_required
def job_list_live(request):
    """The rows of the jobs list as JSON, polled by the page (same filters as the page)."""
    jobs, _, _ = _filtered_jobs(request)
    rows = [(job, {**job_row(job), **job_origin(job)}) for job in jobs]
    html = "".join(render_to_string("portal/jobs/_row.html", {"job": job, "row": row}) for job, row in rows)
    return JsonResponse({"jobs": [row for _, row in rows], "rows_html": html})


def _own_job(request, job_id) -> Job:
    # Another user's job is a 404, as in the API: its existence is not revealed.
    return get_object_or_404(Job.objects.prefetch_related("attempts__worker", "events", "outputs"),
                             pk=job_id, owner=request.user)


def _sections(request, job: Job) -> dict[str, str]:
    """The page's live parts, rendered with the request: their forms ("Re-run from here") need its CSRF token."""
    outputs = _outputs(job)
    context = {"job": job, "outputs": outputs, "previews": _previews(outputs), "qc": _qc(outputs),
               "chain": pipelines.chain(job) if job.queue == PIPELINE_QUEUE else None}
    return {name: render_to_string(f"portal/jobs/_{name}.html", context, request=request)
            for name in ("attempts", "events", "outputs", "qc", "steps")}


def _outputs(job: Job) -> list[dict]:
    # A pipeline shows its steps' outputs: the image, the drift plot and the QC report on one page.
    if job.queue == PIPELINE_QUEUE:
        files = [f for step in pipelines.step_jobs(job).values() for f in step.outputs.all()]
    else:
        files = list(job.outputs.all())
    # "Use as input…": the entrypoints that take the output (a sibling goes with its file instead).
    goes_with = {s.pk: f.name for f, s in siblings.pairs(files)}
    steps: dict[str, list[dict[str, str]]] = {}
    return [{"file": f, "image": f.suffix in IMAGE_SUFFIXES, "text": f.suffix in TEXT_SUFFIXES,
             "goes_with": goes_with.get(f.pk, ""),
             "next": [] if f.pk in goes_with else steps.setdefault(f.suffix, inputs_ui.next_steps(f.suffix))}
            for f in files]


def _is_render(name: str) -> bool:
    return name.startswith("render") or name in RENDER_PREVIEWS


def _is_qc_plot(name: str) -> bool:
    return name.startswith("qc_") and name.endswith(".png") and name not in RENDER_PREVIEWS


def _previews(outputs: list[dict]) -> list[dict]:
    """Images shown inline under the outputs: renders first; QC plots go to the QC section instead."""
    images = [o for o in outputs if o["image"] and not _is_qc_plot(o["file"].name)]
    return sorted(images, key=lambda o: not _is_render(o["file"].name))  # stable: by name within each group


def _qc(outputs: list[dict]) -> dict[str, Any] | None:
    """The QC section: key figures from qc.json and the qc_*.png plots with captions; None without a report."""
    plots = [o["file"] for o in outputs if _is_qc_plot(o["file"].name)]
    summary_file = next((o["file"] for o in outputs if o["file"].name == QC_SUMMARY), None)
    if not plots and summary_file is None:
        return None
    summary, error = _read_qc_summary(summary_file) if summary_file else ({}, "")
    order = list(QC_FIGURES)
    plots.sort(key=lambda f: (order.index(f.name) if f.name in QC_FIGURES else len(order), f.name))
    figures = []
    for f in plots:
        title, hint = QC_FIGURES.get(f.name, (f.name.removeprefix("qc_").removesuffix(".png").replace("_", " ")
                                              .capitalize(), ""))
        figures.append({"file": f, "title": title, "detail": _qc_plot_detail(f.name, summary), "hint": hint})
    return {"figures": _qc_key_figures(summary), "plots": figures, "error": error, "summary_file": summary_file,
            "html_file": next((o["file"] for o in outputs if o["file"].name == "qc.html"), None)}


def _read_qc_summary(file: File) -> tuple[dict[str, Any], str]:
    if file.size > QC_SUMMARY_MAX_BYTES:
        return {}, f"{file.name} is larger than {QC_SUMMARY_MAX_BYTES // 1024} KB: not shown."
    try:
        with default_storage.open(file.key, "rb") as fh:
            summary = json.loads(fh.read(QC_SUMMARY_MAX_BYTES + 1))
    except (OSError, ValueError):
        return {}, f"{file.name} could not be read."
    if not isinstance(summary, dict):
        return {}, f"{file.name} does not hold a QC summary."
    return summary, ""


def _num(value: Any) -> float | None:
    """A finite number from qc.json, or None (qc.json is a job's output: anything may be in it)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return value


def _fmt(value: float) -> str:
    if isinstance(value, int) or abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _per_axis(summary: dict[str, Any], pattern: str, unit: str = "") -> str:
    """Per-axis values of keys such as median_sigma_{axis}_nm as "x 10.2 nm · y 9.8 nm"; "" if none."""
    parts = [f"{axis} {_fmt(v)}{unit}" for axis in ("x", "y", "z")
             if (v := _num(summary.get(pattern.format(axis=axis)))) is not None]
    return " · ".join(parts)


def _qc_key_figures(summary: dict[str, Any]) -> list[dict[str, str]]:
    """Label, value and note of the numbers in qc.json (algorithms/render/qc.py's schema), known ones first."""
    rows: list[dict[str, str]] = []

    def add(label: str, value: str, note: str = "") -> None:
        if value:
            rows.append({"label": label, "value": value, "note": note})

    n, frames = _num(summary.get("localizations")), _num(summary.get("frames"))
    add("Localizations", _fmt(n) if n is not None else "")
    add("Frames", _fmt(frames) if frames is not None else "",
        f"{_fmt(n / frames)} localizations per frame" if n is not None and frames else "")
    frc = summary.get("frc")
    if isinstance(frc, dict):
        res, std = _num(frc.get("resolution_nm")), _num(frc.get("split_std_nm"))
        splits = frc.get("split_resolutions_nm")
        note = [f"± {_fmt(std)} nm over {len(splits)} splits" if std is not None and isinstance(splits, list)
                else "", f"{_fmt(p)} nm pixel" if (p := _num(frc.get("pixel_nm"))) is not None else ""]
        add("FRC resolution", f"{_fmt(res)} nm" if res is not None else "no 1/7 crossing below Nyquist",
            ", ".join(x for x in note if x))
    elif isinstance(summary.get("frc_error"), str):
        add("FRC resolution", "not computed", summary["frc_error"])
    for key, label, unit in (("median_photons", "Median photons", " photons"),
                             ("median_bg", "Median background", " photons/px")):
        add(label, f"{_fmt(v)}{unit}" if (v := _num(summary.get(key))) is not None else "")
    add("Median precision", _per_axis(summary, "median_sigma_{axis}_nm", " nm"))
    add("Median PSF width", _per_axis(summary, "median_psf_sigma_{axis}_nm", " nm"))
    add("Sub-pixel χ²/dof", _per_axis(summary, "subpixel_chi2_dof_{axis}"), "about 1 when flat")
    known = {"localizations", "frames", "frc", "frc_error", "median_photons", "median_bg"}
    known |= {f"{p}_{a}{s}" for a in "xyz" for p, s in (("median_sigma", "_nm"), ("median_psf_sigma", "_nm"),
                                                        ("subpixel_chi2_dof", ""))}
    for key, value in summary.items():  # numbers a newer report adds, under their own names
        if key not in known and (v := _num(value)) is not None:
            add(str(key).replace("_", " "), _fmt(v))
    return rows


def _qc_plot_detail(name: str, summary: dict[str, Any]) -> str:
    """The caption's numbers for one QC plot, from qc.json."""
    n, frames = _num(summary.get("localizations")), _num(summary.get("frames"))
    frc = summary.get("frc") if isinstance(summary.get("frc"), dict) else {}
    details = {
        "qc_subpixel.png": f"χ²/dof against flat: {chi}" if (chi := _per_axis(summary, "subpixel_chi2_dof_{axis}"))
        else "",
        "qc_photons.png": f"median {_fmt(v)} photons" if (v := _num(summary.get("median_photons"))) is not None
        else "",
        "qc_bg.png": f"median {_fmt(v)} photons/px" if (v := _num(summary.get("median_bg"))) is not None else "",
        "qc_sigma.png": f"median {s}" if (s := _per_axis(summary, "median_sigma_{axis}_nm", " nm")) else "",
        "qc_psf_sigma.png": f"median {s}" if (s := _per_axis(summary, "median_psf_sigma_{axis}_nm", " nm")) else "",
        "qc_per_frame.png": f"mean {_fmt(n / frames)} per frame over {_fmt(frames)} frames" if n is not None
        and frames else "",
        "qc_frc.png": (f"resolution {_fmt(res)} nm" if (res := _num(frc.get("resolution_nm"))) is not None
                       else "no 1/7 crossing below Nyquist") if frc else "",
    }
    return details.get(name, "")


@require_GET
@login_required
def job_page(request, job_id):
    job = _own_job(request, job_id)
    entry = _entry_or_none(job)
    return render(request, "portal/jobs/detail.html", {
        "job": job, "row": job_row(job), "entry": entry, "sections": _sections(request, job), "params_json": json.dumps(job.params, indent=2),
        "params_table": json_table(job.params),
        "inputs": job.spec.get("inputs", []), "notify_label": notifications.label(job.notify),
    })


@require_GET
@login_required
def job_log(request, job_id):
    """The job's whole log as the algorithms wrote it (JSON progress lines included), as a text download."""
    job = get_object_or_404(Job, pk=job_id, owner=request.user)

    def parts():
        offset = 0
        while True:
            part = services.read_log(job, offset, 4 * 1024 * 1024)
            if not part["text"]:
                return
            yield part["text"].encode()
            offset = part["next_offset"]

    response = StreamingHttpResponse(parts(), content_type="text/plain; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="locus-job-{job.pk}.log"'
    return response


@require_GET
@login_required
def job_live(request, job_id):
    """Polled by the job page: status, progress and the timeline sections, rendered by the same templates."""
    job = _own_job(request, job_id)
    return JsonResponse({**job_row(job), "log_size": job.log_size, "sections": _sections(request, job),
                         "cancellable": not job.is_terminal})


@require_POST
@login_required
def job_cancel(request, job_id):
    job = _own_job(request, job_id)
    try:
        states.cancel(job, by=request.user)
        messages.success(request, "Job cancelled.")
    except states.Conflict as exc:
        messages.error(request, f"Not cancelled: {exc.message}.")
    return redirect("job-page", job_id=job.pk)


@require_POST
@login_required
def job_rerun(request, job_id):
    """The same entrypoint, params, inputs and notification as an earlier job, as a new job."""
    job = _own_job(request, job_id)
    if (step := request.POST.get("from_step")) and job.queue == PIPELINE_QUEUE:
        try:
            new = pipelines.rerun_from(job, step, request.user)
        except (services.InvalidInput, services.QuotaExceeded) as exc:
            messages.error(request, f"Could not re-run: {exc}.")
            return redirect("job-page", job_id=job.pk)
        messages.success(request, f"Running again from step {step}; the steps before it are reused.")
        return redirect("job-page", job_id=new.pk)
    try:
        # Re-running a train means training again, not being answered with the model it made.
        new, _ = services.submit(request.user, application=job.application, version=job.version,
                                 entrypoint=job.entrypoint, params=job.params,
                                 inputs=services.picked_inputs(job.spec), notify=job.notify,
                                 retrain=trained_models.is_train(job.spec))
    except (services.InvalidInput, services.QuotaExceeded) as exc:
        messages.error(request, f"Could not re-run: {exc}. Use “Clone and edit” to fix it.")
        return redirect("job-page", job_id=job.pk)
    messages.success(request, "Submitted again as a new job.")
    return redirect("job-page", job_id=new.pk)


def _entry_or_none(job: Job):
    try:
        return get_registry().get(job.application, job.version, job.entrypoint)
    except reg.UnknownEntrypoint:
        return None


# --- new job ---------------------------------------------------------------------------------------------

@require_http_methods(["GET", "POST"])
@login_required
def job_new(request):
    registry = get_registry()
    source = request.GET.get("clone") or request.POST.get("clone")
    clone = None
    if source:
        clone = Job.objects.filter(pk=services.parse_uuid(source), owner=request.user).first()
        if clone is None:
            raise Http404("no such job")
    app = request.GET.get("application") or request.POST.get("application") or (clone.application if clone else "")
    if app and app not in registry.applications:
        raise Http404("no such application")
    version = (request.GET.get("version") or request.POST.get("version") or (clone.version if clone else "")
               or (registry.default_versions.get(app, "") if app else ""))
    if app and version not in registry.applications[app]:
        raise Http404("no such version")
    name = request.GET.get("entrypoint") or request.POST.get("entrypoint") or (clone.entrypoint if clone else "")
    context = {"registry": registry, "application": app, "version": version, "entrypoint": name,
               "applications": [(a, registry.applications[a][registry.default_versions[a]]) for a in
                                sorted(registry.applications)], "clone": clone}
    # Files a link offers ("New job with these files", "Use as input…"): kept across the steps below.
    offered = [] if clone else inputs_ui.offered_files(request.user, request.GET)
    context.update({"offered": offered, "carry": inputs_ui.carry_query(request.GET) if offered else "",
                    "fitting_apps": {a for a, entries in context["applications"]
                                     if any(inputs_ui.fits_any(e, offered) for e in entries.values())}})
    if app:
        context["versions"] = sorted(registry.applications[app], key=lambda v: [int(p) for p in v.split(".")])
        context["entries"] = list(registry.applications[app][version].values())
        context["fitting_entries"] = {e.name for e in context["entries"] if inputs_ui.fits_any(e, offered)}
    if not (app and name):
        return render(request, "portal/jobs/new.html", context)
    try:
        entry = registry.get(app, version, name)
    except reg.UnknownEntrypoint:
        raise Http404("no such entrypoint") from None
    fields = schema_form.build(entry.params_schema, clone.params if clone else None)
    notify = clone.notify if clone else profile_of(request.user).notify
    placement = inputs_ui.place(entry, offered)
    selected = placement.selected
    if clone:  # its picks; the siblings that went with them are found again on submit
        selected = {slot: set(ids) for slot, ids in services.picked_inputs(clone.spec).items()}
    slot_errors: dict[str, str] = {}
    general: dict[str, str] = {}
    if request.method == "POST":
        params, errors = schema_form.parse(entry.params_schema, request.POST, fields)
        inputs = {slot: request.POST.getlist(f"input.{slot}") for slot in entry.inputs}
        selected, placement = {slot: set(ids) for slot, ids in inputs.items()}, inputs_ui.Placement()
        notify = request.POST.get("notify") or notify
        if not errors:
            try:
                job, _ = services.submit(request.user, application=app, version=version, entrypoint=name,
                                         params=params, inputs=inputs, notify=notify,
                                         retrain=bool(request.POST.get("retrain")))
            except services.InvalidInput as exc:
                errors = {k.removeprefix("params."): v for k, v in exc.fields.items()}
            except services.QuotaExceeded as exc:
                general["quota"] = str(exc)
            else:
                messages.success(request, "Job submitted.")
                return redirect("job-page", job_id=job.pk)
        for key in list(errors):
            if key.startswith("inputs."):
                slot = key.split(".")[1]
                if slot in entry.inputs:
                    slot_errors[slot] = errors.pop(key)
        general.update(schema_form.attach_errors(fields, errors))
    slots = inputs_ui.build_slots(request.user, entry, selected, slot_errors, placement)
    context.update({"entry": entry, "fields": fields, "slots": slots, "notify": notify, "errors": general,
                    "notify_choices": notifications.job_choices(), "quota": quota(request.user), "placement": placement,
                    "cpu_route_after": settings.LOCUS_CPU_ROUTE_AFTER_SECONDS})
    return render(request, "portal/jobs/new.html", context, status=400 if general or any(
        f.error for f in schema_form.leaves(fields)) or any(s.error for s in slots) else 200)


# --- files -----------------------------------------------------------------------------------------------

@require_GET
@login_required
def file_page(request, file_id):
    """A preview of one of the user's files (image, or the first 64 KB of text) with its checksum."""
    file = get_object_or_404(File.objects.select_related("dataset", "job"), pk=file_id, owner=request.user)
    text, table = None, None
    if file.suffix in TEXT_SUFFIXES:
        with default_storage.open(file.key, "rb") as fh:
            data = fh.read(PREVIEW_BYTES + 1)
        text = data[:PREVIEW_BYTES].decode("utf-8", errors="replace")
        if file.suffix == ".json" and len(data) <= PREVIEW_BYTES:
            with contextlib.suppress(ValueError):
                parsed = json.loads(text)
                text = json.dumps(parsed, indent=2)
                table = json_table(parsed)
        if len(data) > PREVIEW_BYTES:
            text += "\n… (preview cut at 64 KB: download the file for the rest)"
    back = (reverse("job-page", kwargs={"job_id": file.job_id}) if file.job_id
            else reverse("dataset-page", kwargs={"dataset_id": file.dataset_id}) if file.dataset_id else None)
    return render(request, "portal/files/detail.html", {
        "file": file, "text": text, "table": table, "image": file.suffix in IMAGE_SUFFIXES, "back": back,
        "used_by": file.used_by_jobs.order_by("-created_at")[:50]})


# --- JSON outputs as tables ----------------------------------------------------------------------------------

JSON_TABLE_ROWS = 500
JSON_TABLE_COLUMNS = 40


def _cell(value: Any) -> str:
    """One value of a JSON output as a person reads it: numbers to 4 significant digits, short lists inline."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    if isinstance(value, list):
        if len(value) <= 8 and all(not isinstance(v, list | dict) for v in value):
            return ", ".join(_cell(v) for v in value) or "none"
        return f"{len(value)} values"
    if isinstance(value, dict):
        return f"{len(value)} entries"
    return str(value)


def _flatten(obj: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested objects' keys joined with " · " (`val · jaccard`), in the file's order."""
    rows: list[tuple[str, Any]] = []
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            rows += _flatten(value, name + " · ")
        else:
            rows.append((name, value))
    return rows


def json_table(data: Any) -> dict[str, Any] | None:
    """A JSON output (metrics.json, fit_report.json, train_history.json, …) as a table: an object as
    key/value rows, a list of objects (one per epoch, say) as one row each; None for anything else."""
    if isinstance(data, dict) and data:
        rows = _flatten(data)
        return {"columns": ["", ""], "rows": [[k.replace("_", " "), _cell(v)] for k, v in rows[:JSON_TABLE_ROWS]],
                "kv": True, "more": max(len(rows) - JSON_TABLE_ROWS, 0)}
    if isinstance(data, list) and data and all(isinstance(r, dict) for r in data):
        records = [dict(_flatten(r)) for r in data]
        columns = list(dict.fromkeys(k for r in records for k in r))[:JSON_TABLE_COLUMNS]
        return {"columns": [c.replace("_", " ") for c in columns], "kv": False,
                "rows": [[_cell(r.get(c)) for c in columns] for r in records[:JSON_TABLE_ROWS]],
                "more": max(len(records) - JSON_TABLE_ROWS, 0)}
    return None
