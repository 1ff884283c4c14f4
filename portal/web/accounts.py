"""Account pages: sign-up, profile (notification preference), personal API tokens, institutions, and the
approval queue for staff and institution admins. Rules live in `portal.accounts.services`."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.db import IntegrityError
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from jobs.models import Institution, Membership
from portal.accounts import services
from portal.accounts.forms import ProfileForm, SignUpForm
from portal.accounts.models import ApiToken
from portal.accounts.views import client_address
from portal.cache import UNAVAILABLE, counters_unavailable


def _signup_budget_spent(request) -> bool:
    """At most LOCUS_SIGNUP_MAX_PER_HOUR sign-ups from one address an hour: each one emails the approvers."""
    key = f"locus:signup:ip:{client_address(request)}"
    try:
        if cache.add(key, 1, timeout=3600):
            return False
        try:
            return cache.incr(key) > settings.LOCUS_SIGNUP_MAX_PER_HOUR
        except ValueError:  # expired between add() and incr()
            return not cache.add(key, 1, timeout=3600)
    except UNAVAILABLE as exc:  # fail open: sign-ups still wait for approval
        counters_unavailable(exc, "sign-ups")
        return False


@require_http_methods(["GET", "POST"])
def signup(request):
    form = SignUpForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        if _signup_budget_spent(request):
            form.add_error(None, "Too many sign-ups from your network in the last hour; try again later.")
            return render(request, "portal/accounts/signup.html", {"form": form}, status=429)
        data = form.cleaned_data
        try:
            user = services.sign_up(username=data["username"], email=data["email"], password=data["password1"],
                                    institution=data["institution"], note=data["note"],
                                    first_name=data["first_name"], last_name=data["last_name"])
        except IntegrityError:  # the same name, signed up for by someone else since the form was checked
            form.add_error("username", "This username is taken.")
            return render(request, "portal/accounts/signup.html", {"form": form}, status=400)
        return render(request, "portal/accounts/signup_done.html", {"new_user": user,
                                                                    "institution": data["institution"]})
    return render(request, "portal/accounts/signup.html", {"form": form}, status=400 if form.errors else 200)


@require_http_methods(["GET", "POST"])
@login_required
def profile(request):
    prof = services.profile_of(request.user)
    user = request.user
    initial = {"first_name": user.first_name, "last_name": user.last_name, "email": user.email,
               "notify": prof.notify}
    form = ProfileForm(request.POST if request.method == "POST" else None, initial=initial)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        get_user_model().objects.filter(pk=user.pk).update(
            first_name=data["first_name"], last_name=data["last_name"], email=data["email"])
        type(prof).objects.filter(pk=prof.pk).update(notify=data["notify"])
        messages.success(request, "Profile saved.")
        return redirect("profile")
    memberships = Membership.objects.filter(user=user).select_related("institution")
    return render(request, "portal/accounts/profile.html", {"form": form, "memberships": memberships},
                  status=400 if form.errors else 200)


@require_http_methods(["GET", "POST"])
@login_required
def tokens(request):
    """List and create personal API tokens; a new token's secret is shown on this response only."""
    created = None
    error = ""
    if request.method == "POST":
        name = request.POST.get("name", "").strip()
        if not name:
            error = "Give the token a name (e.g. the script or machine that will use it)."
        elif len(name) > 100:
            error = "At most 100 characters."
        else:
            created = ApiToken.issue(request.user, name)
    return render(request, "portal/accounts/tokens.html", {
        "tokens": ApiToken.objects.filter(user=request.user), "created": created, "error": error},
        status=400 if error else 200)


@require_POST
@login_required
def token_revoke(request, pk):
    token = get_object_or_404(ApiToken, pk=pk, user=request.user)
    ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    messages.success(request, f"Token “{token.name}” revoked: it no longer works.")
    return redirect("tokens")


@require_GET
@login_required
def institutions(request):
    memberships = Membership.objects.filter(user=request.user).select_related("institution")
    listed = Institution.objects.order_by("name") if request.user.is_staff else None
    return render(request, "portal/accounts/institutions.html", {"memberships": memberships, "all": listed})


def _institution_for(request, slug) -> tuple[Institution, bool]:
    institution = get_object_or_404(Institution, slug=slug)
    mine = Membership.objects.filter(user=request.user, institution=institution).first()
    if mine is None and not request.user.is_staff:
        raise Http404("not a member")
    return institution, request.user.is_staff or bool(mine and mine.is_admin)


@require_GET
@login_required
def institution_page(request, slug):
    institution, is_admin = _institution_for(request, slug)
    members = (Membership.objects.filter(institution=institution).select_related("user")
               .order_by("-is_admin", "user__username"))
    pending = services.pending_for(request.user).filter(requested_institution=institution) if is_admin else []
    return render(request, "portal/accounts/institution.html", {
        "institution": institution, "members": members, "is_admin": is_admin, "pending": pending})


@require_POST
@login_required
def institution_member(request, slug, user_id):
    institution, is_admin = _institution_for(request, slug)
    if not is_admin:
        raise Http404("not an admin")
    member = get_object_or_404(get_user_model(), pk=user_id, membership__institution=institution)
    action = request.POST.get("action")
    if action in ("make-admin", "remove-admin"):
        services.set_admin(request.user, institution, member, action == "make-admin")
        messages.success(request, f"{member.username} is {'now' if action == 'make-admin' else 'no longer'} an admin.")
    elif action == "remove" and member != request.user:
        services.remove_member(request.user, institution, member)
        messages.success(request, f"{member.username} removed from {institution.name}.")
    else:
        messages.error(request, "Unknown action.")
    return redirect("institution-page", slug=institution.slug)


@require_GET
@login_required
def approvals(request):
    return render(request, "portal/accounts/approvals.html", {"pending": services.pending_for(request.user)})


@require_POST
@login_required
def approval_decide(request, user_id):
    user = get_object_or_404(get_user_model(), pk=user_id)
    if not services.can_approve(request.user, user):
        raise Http404("not yours to approve")
    action = request.POST.get("action")
    try:
        if action == "approve":
            if services.approve(request.user, user):
                messages.success(request, f"{user.username} approved; they have been emailed.")
        elif action == "reject":
            services.reject(request.user, user)
            messages.success(request, f"Sign-up of {user.username} refused.")
        else:
            messages.error(request, "Unknown action.")
    except services.NotAllowed as exc:
        messages.error(request, str(exc))
    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        return redirect(target)
    return redirect("approvals")
