"""Account emails (notify queue): approval requests to approvers, and the approval itself to the user."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.template.loader import render_to_string


@shared_task(name="portal.accounts.tasks.send_account_approved", acks_late=True, max_retries=5,
             default_retry_delay=30, autoretry_for=(OSError,))
def send_account_approved(user_id: int) -> bool:
    user = get_user_model().objects.filter(pk=user_id, is_active=True).first()
    if user is None or not user.email:
        return False
    context = {"user": user, "url": f"{settings.PUBLIC_URL}/accounts/login/"}
    send_mail(render_to_string("accounts/email/approved_subject.txt", context).strip(),
              render_to_string("accounts/email/approved.txt", context), settings.DEFAULT_FROM_EMAIL, [user.email])
    return True


@shared_task(name="portal.accounts.tasks.send_approval_request", acks_late=True, max_retries=5,
             default_retry_delay=30, autoretry_for=(OSError,))
def send_approval_request(user_id: int) -> int:
    """Tell staff (and admins of the requested institution) that an account waits for them."""
    from jobs.models import Membership
    from portal.accounts.services import profile_of

    user = get_user_model().objects.filter(pk=user_id, is_active=False).first()
    if user is None:
        return 0
    institution = profile_of(user).requested_institution
    approvers = get_user_model().objects.filter(is_staff=True, is_active=True)
    if institution is not None:
        admins = Membership.objects.filter(institution=institution, is_admin=True).values("user")
        approvers = approvers | get_user_model().objects.filter(pk__in=admins, is_active=True)
    emails = sorted({u.email for u in approvers if u.email})
    if not emails:
        return 0
    context = {"user": user, "institution": institution, "url": f"{settings.PUBLIC_URL}/manage/accounts/"}
    send_mail(f"Locus: {user.username} asks for an account", render_to_string("accounts/email/approval_request.txt",
              context), settings.DEFAULT_FROM_EMAIL, emails)
    return len(emails)
