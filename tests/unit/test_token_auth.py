"""Token authentication reads the token, its user and the profile in one hand-built statement
(portal/accounts/auth.py); it must give exactly what the ORM's select_related query gives."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from jobs.models import hash_token
from portal.accounts.auth import token_with_user
from portal.accounts.models import ApiToken, Profile


def _fields(instance) -> dict:
    return {f.attname: getattr(instance, f.attname) for f in type(instance)._meta.concrete_fields}


@pytest.mark.django_db
def test_the_same_token_user_and_profile_as_the_orm_in_one_query():
    user = get_user_model().objects.create_user("ada", "ada@example.org", "pw", first_name="Ada", is_staff=True)
    profile, _ = Profile.objects.get_or_create(user=user)
    profile.quota_bytes, profile.approved_at = 123, timezone.now()
    profile.save()
    token, raw = ApiToken.issue(user, "laptop")
    expected = ApiToken.objects.select_related("user__profile").get(pk=token.pk)
    with CaptureQueriesContext(connection) as queries:
        got = token_with_user(hash_token(raw))
        assert _fields(got) == _fields(expected)
        assert _fields(got.user) == _fields(expected.user)
        assert _fields(got.user.profile) == _fields(expected.user.profile)
        assert got.user.check_password("pw")
    assert len(queries) == 1


@pytest.mark.django_db
def test_revoked_or_unknown_tokens_are_not_found_and_a_missing_profile_stays_missing():
    user = get_user_model().objects.create_user("bo", "bo@example.org", None)
    Profile.objects.filter(user=user).delete()
    token, raw = ApiToken.issue(user, "t")
    got = token_with_user(hash_token(raw))
    assert got.user.pk == user.pk
    with CaptureQueriesContext(connection) as queries, pytest.raises(Profile.DoesNotExist):
        got.user.profile  # noqa: B018 - the attribute access is the check
    assert len(queries) == 0  # known missing, as select_related would have recorded it
    assert token_with_user(hash_token("lus_not-a-token")) is None
    token.revoked_at = timezone.now()
    token.save()
    assert token_with_user(hash_token(raw)) is None
