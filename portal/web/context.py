"""Template context for the navigation bar: which links to show (approvals with how many wait, workers)."""

from __future__ import annotations

from jobs.models import Membership
from portal.web.workers import shows_workers


def nav(request) -> dict:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    is_inst_admin = Membership.objects.filter(user=user, is_admin=True).exists()
    context = {"nav_approver": user.is_staff or is_inst_admin,
               "nav_member": user.is_staff or Membership.objects.filter(user=user).exists(),
               "shows_workers": shows_workers(user)}
    if context["nav_approver"]:
        from portal.accounts.services import pending_for

        context["nav_pending"] = pending_for(user).count()
    return context
