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


SQLITE_CHECK = """
import django, os
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from django.contrib.auth import get_user_model
from django.utils import timezone
from jobs.models import hash_token
from portal.accounts.auth import token_with_user
from portal.accounts.models import ApiToken, Profile
user = get_user_model().objects.create_user("ada", "ada@example.org", "pw", is_staff=True)
profile, _ = Profile.objects.get_or_create(user=user)
profile.approved_at = timezone.now()
profile.save()
token, raw = ApiToken.issue(user, "laptop")
ApiToken.objects.filter(pk=token.pk).update(last_used_at=timezone.now())
fields = lambda i: {f.attname: getattr(i, f.attname) for f in type(i)._meta.concrete_fields}
got, expected = token_with_user(hash_token(raw)), ApiToken.objects.select_related("user__profile").get(pk=token.pk)
assert fields(got) == fields(expected), (fields(got), fields(expected))
assert fields(got.user) == fields(expected.user) and fields(got.user.profile) == fields(expected.user.profile)
assert timezone.is_aware(got.last_used_at) and got.user.is_staff is True
print("same as the ORM")
"""


def test_on_the_embedded_sqlite_database_too(tmp_path):
    """SQLite hands back naive datetimes and 0/1 booleans: the statement's columns go through the converters
    the ORM applies (a second API call with one token on `make demo` answered 500 before)."""
    import subprocess
    import sys

    from tests.integration.conftest import ROOT, clean_env

    env = clean_env(LOCUS_VAR_DIR=str(tmp_path / "var"), DJANGO_SETTINGS_MODULE="portal.settings")
    done = subprocess.run([sys.executable, "-c", SQLITE_CHECK], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and "same as the ORM" in done.stdout, done.stderr[-3000:]
