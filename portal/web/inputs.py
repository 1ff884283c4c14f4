"""Files as job inputs in the browser: the input pickers of the new-job form (uploads grouped by dataset,
job outputs grouped by job, trained models from the model registry), placing offered files in the slots that take them ("New job with these files",
"Use as input…"), and the entrypoints an output can go to next.

Outputs are files like any other (design §9): a picker offers every ready file of the user's whose suffix the
slot takes; `jobs.services.submit` checks them as it checks uploads, and adds the siblings their format needs
(`jobs.siblings`), which the pickers therefore show beside their file instead of as a choice of their own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from jobs import services, siblings, trained_models
from jobs.models import File, Job
from jobs.registry import get_registry

# Job groups a picker lists: the newest jobs with outputs, plus any job one of whose outputs is selected.
OUTPUT_JOBS = 50
# A slot offering at most this many files shows every group open; beyond it, only groups with a selection.
OPEN_ALL_BELOW = 12


def job_label(job: Job) -> str:
    """How an output's job is named wherever outputs are offered: application · entrypoint · short id · date."""
    when = timezone.localtime(job.created_at).strftime("%Y-%m-%d %H:%M")
    return f"{job.application} · {job.entrypoint} · {str(job.pk)[:8]} · {when}"


@dataclass
class Choice:
    file: File
    checked: bool
    with_sibling: str = ""  # name of the file that travels with it
    label: str = ""  # what the picker shows, when not the file's name (a model's name)


@dataclass
class Group:
    key: str  # "dataset-<id>" | "job-<id>" | "models"
    label: str
    choices: list[Choice]
    link: str = ""
    open: bool = False


@dataclass
class Slot:
    """One input slot of the form: its groups of fitting files, the selection and any error."""

    slot: Any
    count: str
    suffixes: str
    uploads: list[Group] = field(default_factory=list)
    outputs: list[Group] = field(default_factory=list)
    models: list[Group] = field(default_factory=list)
    more_outputs: bool = False
    error: str = ""
    ambiguous: list[File] = field(default_factory=list)  # offered files that fit, more than it takes

    @property
    def total(self) -> int:
        return sum(len(g.choices) for g in self.groups)

    @property
    def groups(self) -> tuple[Group, ...]:
        return (*self.models, *self.uploads, *self.outputs)


def _fits(slot, f: File) -> bool:
    return not slot.suffixes or f.suffix in slot.suffixes


def candidate_files(user, selected_ids: set[str]) -> tuple[list[File], list[File], bool]:
    """(uploads, outputs, more): the user's ready uploads, and the outputs of their newest OUTPUT_JOBS jobs with
    outputs plus of any job whose output is selected; `more` when older jobs with outputs were left out."""
    uploads = list(File.objects.filter(owner=user, status=File.Status.READY, dataset__isnull=False)
                   .select_related("dataset").order_by("dataset__name", "dataset_id", "name"))
    jobs = list(Job.objects.filter(owner=user, outputs__status=File.Status.READY).distinct()
                .order_by("-created_at", "-id").values_list("id", flat=True)[:OUTPUT_JOBS + 1])
    more = len(jobs) > OUTPUT_JOBS
    wanted = Q(job_id__in=jobs[:OUTPUT_JOBS])
    ids = [i for i in (services.parse_uuid(s) for s in selected_ids) if i]
    if ids:
        wanted |= Q(pk__in=ids, job__isnull=False)
    outputs = list(File.objects.filter(wanted, owner=user, status=File.Status.READY)
                   .select_related("job").order_by("-job__created_at", "-job_id", "key"))
    return uploads, outputs, more


def model_choices(user, slot, chosen: set[str]) -> list[Choice]:
    """The registry's models `user` may fit with (theirs, shared, bundled) for a slot that takes their file;
    the only one is ticked when the slot needs one and has none (a first user localizes with the bundled
    model without looking for it)."""
    models = [m for m in trained_models.visible(user).select_related("file")
              if m.file.status == File.Status.READY and _fits(slot, m.file)]
    choices = [Choice(m.file, str(m.file_id) in chosen, label=m.name) for m in models]
    if len(choices) == 1 and not chosen and slot.min_count >= 1:
        choices[0].checked = True
    return choices


def build_slots(user, entry, selected: dict[str, set[str]], errors: dict[str, str] | None = None,
                placement: Placement | None = None) -> list[Slot]:
    """The pickers of `entry`'s input slots, with `selected` ({slot: {file ids}}) checked; a slot that more
    offered files fit than it takes (`placement.ambiguous`) names them and opens their groups."""
    ambiguous = placement.ambiguous if placement else {}
    uploads, outputs, more = candidate_files(user, set().union(*selected.values()) if selected else set())
    models = {m.file_id for m in trained_models.visible(user)}
    outputs = [f for f in outputs if f.pk not in models]  # offered under Models, by name
    pairs = siblings.pairs(uploads) + siblings.pairs(outputs)
    sibling_name = {f.pk: s.name for f, s in pairs}
    travelling = {s.pk: f for f, s in pairs}
    by_dataset: dict[Any, list[File]] = {}
    for f in uploads:
        by_dataset.setdefault(f.dataset_id, []).append(f)
    by_job: dict[Any, list[File]] = {}
    for f in outputs:
        by_job.setdefault(f.job_id, []).append(f)
    slots = []
    for slot in entry.inputs.values():
        chosen = selected.get(slot.name, set())
        s = Slot(slot=slot, count=slot.describe_count(), suffixes=" ".join(slot.suffixes) or "any file",
                 more_outputs=more, error=(errors or {}).get(slot.name, ""),
                 ambiguous=ambiguous.get(slot.name, []))
        offered_here = {f.pk for f in s.ambiguous}
        if slot.suffixes and (choices := model_choices(user, slot, chosen)):
            s.models.append(Group("models", "Models", choices, link=reverse("models")))
        for files in by_dataset.values():
            if group := _choices(slot, files, chosen, travelling, sibling_name):
                d = files[0].dataset
                s.uploads.append(Group(f"dataset-{d.pk}", d.name, group,
                                       link=reverse("dataset-page", kwargs={"dataset_id": d.pk})))
        for files in by_job.values():
            if group := _choices(slot, files, chosen, travelling, sibling_name):
                job = files[0].job
                s.outputs.append(Group(f"job-{job.pk}", job_label(job), group,
                                       link=reverse("job-page", kwargs={"job_id": job.pk})))
        small = s.total <= OPEN_ALL_BELOW
        for g in s.groups:
            g.open = small or any(c.checked or c.file.pk in offered_here for c in g.choices)
        slots.append(s)
    return slots


def _choices(slot, files: list[File], chosen: set[str], travelling: dict, sibling_name: dict) -> list[Choice]:
    out = []
    for f in files:
        if not _fits(slot, f):
            continue
        # In a slot that names its file's format, a sibling travels with that file: not offered on its own.
        table = travelling.get(f.pk)
        if slot.suffixes and table is not None and _fits(slot, table) and str(f.pk) not in chosen:
            continue
        out.append(Choice(f, str(f.pk) in chosen, sibling_name.get(f.pk, "") if slot.suffixes else ""))
    return out


# --- files offered by a link ("New job with these files", "Use as input…") -------------------------------

def offered_files(user, query) -> list[File]:
    """The user's ready files a link offers: `file=<id>` (repeatable; also a model the user may fit with),
    `job=<id>` (its outputs; a pipeline's, its steps' outputs) or `dataset=<id>` (its files), in that order;
    other ids are ignored."""
    ids = [i for i in (services.parse_uuid(v) for v in query.getlist("file")) if i]
    usable = Q(owner=user) | Q(trained_model__in=trained_models.visible(user))
    found = {f.pk: f for f in File.objects.filter(usable, pk__in=ids, status=File.Status.READY)}
    files = [found[i] for i in dict.fromkeys(ids) if i in found]
    ready = File.objects.filter(owner=user, status=File.Status.READY)
    if job := services.parse_uuid(query.get("job")):
        # A pipeline's own job has no outputs: its steps have them.
        files += list(ready.filter(Q(job_id=job) | Q(job__parent_id=job)).order_by("job__created_at", "key"))
    if dataset := services.parse_uuid(query.get("dataset")):
        files += list(ready.filter(dataset_id=dataset).order_by("name"))
    return list({f.pk: f for f in files}.values())


def carry_query(query) -> str:
    """The `file`/`job`/`dataset` parameters again, for the links between the form's steps (`&…` or "")."""
    pairs = [(k, v) for k in ("file", "job", "dataset") for v in query.getlist(k)][:200]
    return "&" + urlencode(pairs) if pairs else ""


@dataclass
class Placement:
    """Where offered files go: `selected` ({slot: {file ids}}); `unplaced`, the files no slot takes; and
    `ambiguous` ({slot: files}), slots that more files fit than they take, left for the user to choose."""

    selected: dict[str, set[str]] = field(default_factory=dict)
    unplaced: list[File] = field(default_factory=list)
    ambiguous: dict[str, list[File]] = field(default_factory=dict)


def place(entry, files: list[File]) -> Placement:
    """Put each offered file in the first slot that names its suffix and has room (else in an "any file" slot);
    a sibling whose file some slot names travels with that file and is not placed. Where more files fit a
    slot than it takes (COMET's one table among a job's drift.csv and locs.hdf5), nothing is guessed: none
    of them is picked there and the slot is named."""
    placed: dict[str, list[File]] = {name: [] for name in entry.inputs}
    slots = list(entry.inputs.values())

    def room(slot) -> bool:
        return slot.max_count is None or len(placed[slot.name]) < slot.max_count

    sibling_of = {s.pk: f for f, s in siblings.pairs(files)}
    left = []
    for f in files:
        table = sibling_of.get(f.pk)
        if table is not None and any(table.suffix in s.suffixes for s in slots):
            continue  # it goes with its table (once that is picked)
        slot = next((s for s in slots if s.suffixes and f.suffix in s.suffixes and room(s)), None)
        slot = slot or next((s for s in slots if not s.suffixes and room(s)), None)
        if slot is None:
            left.append(f)
        else:
            placed[slot.name].append(f)
    result = Placement()
    for f in left:
        full = [s.name for s in slots if (f.suffix in s.suffixes if s.suffixes else True)]
        if not full:
            result.unplaced.append(f)
        for name in full:
            result.ambiguous.setdefault(name, list(placed[name])).append(f)
    for name in result.ambiguous:
        placed[name] = []
    result.selected = {name: {str(f.pk) for f in fs} for name, fs in placed.items() if fs}
    return result


def fits_any(entry, files: list[File]) -> int:
    """How many of `files` some slot of `entry` names the suffix of (for the entrypoint cards)."""
    suffixes = {s for slot in entry.inputs.values() for s in slot.suffixes}
    return sum(1 for f in files if f.suffix in suffixes)


# --- where an output can go next -------------------------------------------------------------------------

def next_steps(suffix: str) -> list[dict[str, str]]:
    """The entrypoints (default versions) with a slot that names `suffix`: label and new-job query."""
    registry = get_registry()
    steps = []
    for app in sorted(registry.applications):
        version = registry.default_versions[app]
        for entry in registry.applications[app][version].values():
            slots = [s.name for s in entry.inputs.values() if suffix and suffix in s.suffixes]
            if slots:
                steps.append({"label": f"{app} · {entry.name}", "slot": slots[0], "summary": entry.summary,
                              "query": urlencode({"application": app, "version": version,
                                                  "entrypoint": entry.name})})
    return steps
