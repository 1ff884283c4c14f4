"""Account rules the sign-up page, the approval pages and the Django admin all call.

A self-registered account is inactive until staff, or an admin of the institution it asked to join,
approves it; approval activates it, adds the membership and emails the user (on commit, notify queue).
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from jobs import notifications
from jobs.models import Institution, Membership
from portal.accounts.models import Profile


class NotAllowed(Exception):
    """The acting user may not approve this account (not staff, not an admin of its institution)."""


def profile_of(user) -> Profile:
    profile, _ = Profile.objects.get_or_create(user=user, defaults={"notify": notifications.DEFAULT})
    return profile


@transaction.atomic
def sign_up(*, username: str, email: str, password: str, institution: Institution | None = None,
            note: str = "", first_name: str = "", last_name: str = ""):
    """Create a pending (inactive) account; tell the people who can approve it."""
    user = get_user_model().objects.create_user(username, email, password, is_active=False,
                                                first_name=first_name, last_name=last_name)
    Profile.objects.create(user=user, requested_institution=institution, signup_note=note[:500],
                           notify=notifications.DEFAULT)
    from portal.accounts.tasks import send_approval_request

    transaction.on_commit(lambda: send_approval_request.delay(user.pk))
    return user


def can_approve(actor, user) -> bool:
    if actor.is_staff:
        return True
    institution = profile_of(user).requested_institution
    return institution is not None and Membership.objects.filter(user=actor, institution=institution,
                                                                 is_admin=True).exists()


def pending_for(actor) -> QuerySet:
    """Accounts waiting for approval that `actor` may approve."""
    pending = Profile.objects.select_related("user", "requested_institution").filter(
        user__is_active=False, approved_at__isnull=True).order_by("user__date_joined")
    if actor.is_staff:
        return pending
    admin_of = Membership.objects.filter(user=actor, is_admin=True).values("institution")
    return pending.filter(requested_institution__in=admin_of)


@transaction.atomic
def approve(actor, user) -> bool:
    """Activate a pending account (once); returns False if it was no longer pending."""
    if not can_approve(actor, user):
        raise NotAllowed("only staff or an admin of the requested institution may approve this account")
    profile = profile_of(user)
    updated = Profile.objects.filter(pk=profile.pk, approved_at__isnull=True).update(
        approved_at=timezone.now(), approved_by=actor)
    if not updated:
        return False
    type(user).objects.filter(pk=user.pk).update(is_active=True)
    if profile.requested_institution_id:
        Membership.objects.get_or_create(user=user, institution_id=profile.requested_institution_id)
    from portal.accounts.tasks import send_account_approved

    transaction.on_commit(lambda: send_account_approved.delay(user.pk))
    return True


@transaction.atomic
def reject(actor, user) -> None:
    """Refuse a pending sign-up: the account is deleted (nothing was ever stored for it)."""
    if not can_approve(actor, user):
        raise NotAllowed("only staff or an admin of the requested institution may refuse this account")
    if user.is_active or profile_of(user).approved_at:
        raise NotAllowed("this account is not pending")
    user.delete()


def set_admin(actor, institution: Institution, user, is_admin: bool) -> None:
    if not (actor.is_staff or Membership.objects.filter(user=actor, institution=institution, is_admin=True).exists()):
        raise NotAllowed("only staff or an admin of this institution may change its admins")
    Membership.objects.filter(user=user, institution=institution).update(is_admin=is_admin)


def remove_member(actor, institution: Institution, user) -> None:
    if not (actor.is_staff or Membership.objects.filter(user=actor, institution=institution, is_admin=True).exists()):
        raise NotAllowed("only staff or an admin of this institution may remove members")
    Membership.objects.filter(user=user, institution=institution).delete()
