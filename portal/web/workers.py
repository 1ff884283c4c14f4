"""The workers page (institution admins and staff; an owner sees their own workers), enrollment tokens with
the exact commands to attach a machine, revocation, and the usage page. Business rules are jobs.services'."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from jobs import services, usage

# docs/lab-worker.md, with the portal and the token filled in (tests/unit/test_lab_worker_guide.py keeps the two
# identical).
LAB_PC_COMMANDS = [
    "git clone --depth 1 https://git.example.org/locus/locus.git /opt/locus",
    "python3 -m venv /opt/locus/.venv",
    "/opt/locus/.venv/bin/pip install -r /opt/locus/requirements-gpu.txt",
    "env -C /opt/locus /opt/locus/.venv/bin/python -m workers enroll --portal {portal} --enrollment-token {token} "
    "--config /etc/locus/worker.json",
    "systemctl enable --now /opt/locus/workers/locus-worker.service",
]


class EnrollmentTokenForm(forms.Form):
    """Which institution the new worker belongs to and whether it serves that institution's private pool."""

    institution = forms.ChoiceField(required=False)
    private_pool = forms.BooleanField(required=False, initial=True,
                                      help_text="serve this institution's members first (pool.<slug>.* queues)")
    hours = forms.FloatField(min_value=0.1, max_value=24 * 30, initial=24, help_text="valid for (hours)")
    note = forms.CharField(max_length=200, required=False)

    def __init__(self, user, *args, **kwargs):
        super().__init__(*args, **kwargs)
        choices = [(i.slug, i.name) for i in services.admin_institutions(user)]
        if user.is_staff:
            choices.insert(0, ("", "(none: shared tiers only)"))
        self.fields["institution"].choices = choices


def _can_enroll(user) -> bool:
    return user.is_staff or services.admin_institutions(user).exists()


def _visible_workers(user):
    """Staff and institution admins manage workers; anyone else only the ones they enrolled, if any (404)."""
    workers = services.managed_workers(user).select_related("institution", "owner").order_by("name")
    if not _can_enroll(user) and not workers.exists():
        raise Http404("no workers to manage")
    return workers


def _page(request, form: EnrollmentTokenForm | None = None, status: int = 200):
    workers = list(_visible_workers(request.user))
    facts = services.worker_facts(workers)
    rows = [{"worker": w, **facts[w.pk]} for w in workers]
    can_enroll = _can_enroll(request.user)
    if can_enroll and form is None:
        form = EnrollmentTokenForm(request.user)
    return render(request, "portal/workers/list.html",
                  {"rows": rows, "form": form, "can_enroll": can_enroll,
                   "lease_window_s": 3 * settings.LOCUS_LEASE_SECONDS}, status=status)


@require_GET
@login_required
def worker_list(request):
    return _page(request)


@require_POST
@login_required
def create_enrollment_token(request):
    """Issue a token (shown once, with the commands to use it); errors re-render the form."""
    if not _can_enroll(request.user):
        raise Http404("only staff and institution admins create enrollment tokens")
    form = EnrollmentTokenForm(request.user, request.POST)
    if not form.is_valid():
        return _page(request, form, status=400)
    data = form.cleaned_data
    slug = data["institution"] or None
    try:
        token, raw = services.issue_enrollment_token(
            request.user, institution=slug, pool_slugs=[slug] if slug and data["private_pool"] else [],
            hours=data["hours"], note=data["note"])
    except services.InvalidInput as exc:
        for field, problem in exc.fields.items():
            form.add_error(field if field in form.fields else None, problem)
        return _page(request, form, status=400)
    portal = settings.PUBLIC_URL
    response = render(request, "portal/workers/token_created.html", {
        "token": token, "raw": raw, "portal": portal,
        "commands": [f"python -m workers enroll --portal {portal} --enrollment-token {raw}",
                     "python -m workers start --pull"],
        "lab_pc": [line.format(portal=portal, token=raw) for line in LAB_PC_COMMANDS]})
    response["Cache-Control"] = "no-store"  # the token is shown once; no cache may keep it
    return response


@require_POST
@login_required
def revoke(request, pk):
    worker = get_object_or_404(_visible_workers(request.user), pk=pk)
    services.revoke_worker(worker)
    messages.success(request, f"Worker {worker.name} revoked: its tokens are refused and its running job was "
                              "handed back to the queue.")
    return redirect("workers")


@require_GET
@login_required
def usage_page(request):
    report = usage.report(request.user, managed_workers=services.managed_workers(request.user))
    return render(request, "portal/workers/usage.html", {"report": report})


def shows_workers(user) -> bool:
    """Whether the nav shows the Workers link: staff, institution admins, owners of workers."""
    return _can_enroll(user) or services.managed_workers(user).exists()
