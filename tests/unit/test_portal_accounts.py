"""Sign-up with approval, password reset by email, and the institution pages (Django test client,
locmem email; the notify tasks run eagerly)."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.core.cache import cache
from django.test import Client

from jobs.models import Institution, Membership
from portal.accounts import services
from portal.accounts.models import Profile
from tests.conftest import _make_user

pytestmark = pytest.mark.django_db
PASSWORD = "Spectral-Lattice-42"


@pytest.fixture(autouse=True)
def _fresh_counters():
    cache.clear()


@pytest.fixture
def lab(db):
    return Institution.objects.create(slug="lab", name="Hell Lab")


def sign_up(client: Client, username="maria", institution=None, **extra):
    data = {"username": username, "email": f"{username}@lab.example.org", "password1": PASSWORD,
            "password2": PASSWORD, "institution": institution.pk if institution else "", **extra}
    return client.post("/accounts/signup/", data)


def test_sign_up_makes_a_pending_account_and_tells_the_approvers(staff, lab, django_capture_on_commit_callbacks):
    admin = _make_user("carol")
    Membership.objects.create(user=admin, institution=lab, is_admin=True)
    with django_capture_on_commit_callbacks(execute=True):
        response = sign_up(Client(), institution=lab, note="Nup96")
    assert response.status_code == 200 and b"waiting for approval" in response.content
    user = get_user_model().objects.get(username="maria")
    assert not user.is_active and user.profile.is_pending and user.profile.requested_institution == lab
    assert sorted(mail.outbox[0].to) == ["carol@example.org", "root@example.org"]
    assert "/manage/accounts/" in mail.outbox[0].body


def test_a_pending_account_cannot_log_in_and_is_told_why_only_with_the_right_password(db):
    sign_up(Client())
    wrong = Client().post("/accounts/login/", {"username": "maria", "password": "nope"})
    assert b"waiting for approval" not in wrong.content
    right = Client().post("/accounts/login/", {"username": "maria", "password": PASSWORD})
    assert right.status_code == 200 and b"waiting for approval" in right.content
    assert "_auth_user_id" not in right.wsgi_request.session


@pytest.mark.parametrize("field, value, message", [
    ("password2", "different-Password-9", b"The two passwords differ"),
    ("password1", "12345678", b"This password is too common"),
    ("username", "bad name!", b"Use only letters"),
])
def test_sign_up_errors_are_shown_at_the_field(db, field, value, message):
    data = {field: value}
    if field == "password1":
        data["password2"] = value
    response = sign_up(Client(), **data)
    assert response.status_code == 400 and message in response.content
    assert not get_user_model().objects.filter(username="maria").exists()


def test_an_institution_admin_approves_its_applicant_and_the_user_is_emailed(lab, django_capture_on_commit_callbacks):
    admin = _make_user("carol")
    Membership.objects.create(user=admin, institution=lab, is_admin=True)
    sign_up(Client(), institution=lab)
    maria = get_user_model().objects.get(username="maria")
    mail.outbox.clear()
    client = Client()
    client.force_login(admin)
    assert b"maria@lab.example.org" in client.get("/manage/accounts/").content
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/manage/accounts/{maria.pk}/", {"action": "approve"})
    assert response.status_code == 302
    maria.refresh_from_db()
    assert maria.is_active and maria.profile.approved_by == admin
    assert Membership.objects.filter(user=maria, institution=lab, is_admin=False).exists()
    assert [m.to for m in mail.outbox] == [["maria@lab.example.org"]]
    assert "approved" in mail.outbox[0].body
    assert Client().login(username="maria", password=PASSWORD)
    # A second approval changes nothing and sends nothing.
    assert services.approve(admin, maria) is False and len(mail.outbox) == 1


def test_an_admin_of_another_institution_cannot_approve_or_see_the_applicant(lab):
    other = Institution.objects.create(slug="other", name="Other Lab")
    stranger = _make_user("dave")
    Membership.objects.create(user=stranger, institution=other, is_admin=True)
    sign_up(Client(), institution=lab)
    maria = get_user_model().objects.get(username="maria")
    client = Client()
    client.force_login(stranger)
    assert b"maria" not in client.get("/manage/accounts/").content
    assert client.post(f"/manage/accounts/{maria.pk}/", {"action": "approve"}).status_code == 404
    maria.refresh_from_db()
    assert not maria.is_active


def test_staff_refuses_a_sign_up_and_the_account_is_gone(staff):
    sign_up(Client())
    maria = get_user_model().objects.get(username="maria")
    client = Client()
    client.force_login(staff)
    client.post(f"/manage/accounts/{maria.pk}/", {"action": "reject"})
    assert not get_user_model().objects.filter(username="maria").exists()


def test_admin_action_approves_through_the_same_rule(staff, django_capture_on_commit_callbacks):
    sign_up(Client())
    client = Client()
    client.force_login(staff)
    profile = Profile.objects.get(user__username="maria")
    with django_capture_on_commit_callbacks(execute=True):
        client.post("/admin/accounts/profile/", {"action": "approve_accounts", "_selected_action": [profile.pk]})
    assert get_user_model().objects.get(username="maria").is_active
    assert any("approved" in m.body for m in mail.outbox)


def test_password_reset_by_email_sets_a_new_password(user):
    client = Client()
    response = client.post("/accounts/password_reset/", {"email": "alice@example.org"})
    assert response.status_code == 302
    assert mail.outbox[0].subject == "Locus: choose a new password"
    link = re.search(r"https?://[^/\s]+(/accounts/reset/\S+)", mail.outbox[0].body)[1]
    form = client.get(link, follow=True)
    assert b"Choose a new password" in form.content
    done = client.post(form.redirect_chain[-1][0], {"new_password1": "Another-Lattice-77",
                                                   "new_password2": "Another-Lattice-77"}, follow=True)
    assert b"Password set" in done.content
    assert Client().login(username="alice", password="Another-Lattice-77")


def test_institution_page_is_for_members_and_admins_manage_roles(user, other_user, lab):
    Membership.objects.create(user=user, institution=lab, is_admin=True)
    Membership.objects.create(user=other_user, institution=lab)
    outsider = _make_user("eve")
    client = Client()
    client.force_login(outsider)
    assert client.get("/institutions/lab/").status_code == 404
    member = Client()
    member.force_login(other_user)
    page = member.get("/institutions/lab/")
    assert page.status_code == 200 and b"alice" in page.content and b"Make admin" not in page.content
    assert member.post(f"/institutions/lab/members/{user.pk}/", {"action": "remove"}).status_code == 404
    admin = Client()
    admin.force_login(user)
    admin.post(f"/institutions/lab/members/{other_user.pk}/", {"action": "make-admin"})
    assert Membership.objects.get(user=other_user, institution=lab).is_admin
    admin.post(f"/institutions/lab/members/{other_user.pk}/", {"action": "remove"})
    assert not Membership.objects.filter(user=other_user, institution=lab).exists()


def test_a_token_is_shown_once_and_revoked_from_the_page(user, api):
    client = Client()
    client.force_login(user)
    created = client.post("/account/tokens/", {"name": "laptop"})
    raw = re.search(rb'id="token-secret">([^<]+)<', created.content)[1].decode()
    usage = re.search(rb'id="token-usage">([^<]+)<', created.content)[1].decode()
    assert f"LOCUS_URL=http://testserver LOCUS_TOKEN={raw}" in usage and "locus run" in usage
    assert client.get("/account/tokens/").content.count(raw.encode()) == 0
    from portal.accounts.models import ApiToken

    token = ApiToken.objects.get(user=user, name="laptop")
    assert Client().get("/api/v1/jobs/", HTTP_AUTHORIZATION=f"Token {raw}").status_code == 200
    client.post(f"/account/tokens/{token.pk}/revoke/")
    assert Client().get("/api/v1/jobs/", HTTP_AUTHORIZATION=f"Token {raw}").status_code == 401


def test_sign_ups_from_one_address_are_limited(db, settings):
    settings.LOCUS_SIGNUP_MAX_PER_HOUR = 2
    assert sign_up(Client(), username="a1").status_code == 200
    assert sign_up(Client(), username="a2").status_code == 200
    refused = sign_up(Client(), username="a3")
    assert refused.status_code == 429 and b"Too many sign-ups" in refused.content
    assert not get_user_model().objects.filter(username="a3").exists()
