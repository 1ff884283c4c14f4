"""DRF authentication by personal API token: `Authorization: Token <key>`."""

from __future__ import annotations

import functools

from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import Model
from django.utils import timezone
from rest_framework import authentication, exceptions

from jobs.models import hash_token


class ApiTokenAuthentication(authentication.TokenAuthentication):
    keyword = "Token"

    def authenticate_credentials(self, key: str):
        from portal.accounts.models import ApiToken

        token = token_with_user(hash_token(key))
        if token is None or not token.user.is_active:
            raise exceptions.AuthenticationFailed("invalid or revoked token")
        if not token.last_used_at or (timezone.now() - token.last_used_at).total_seconds() > 60:
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=timezone.now())
        return token.user, token


@functools.cache
def _lookup() -> tuple[str, list[tuple[type[Model], list[str]]]]:
    """The statement behind `token_with_user`, built once from the models' own fields.

    Every API request starts here, and having the ORM compile the equivalent select_related query (27 columns
    over three tables) cost about a third of a list or detail request's CPU."""
    from portal.accounts.models import ApiToken, Profile

    quote = connection.ops.quote_name
    parts = [(ApiToken, "t"), (get_user_model(), "u"), (Profile, "p")]
    columns, models = [], []
    for model, alias in parts:
        fields = model._meta.concrete_fields
        # Raw rows skip the ORM's from_db_value converters: refuse a field that would need one.
        needing = [f.name for f in fields if hasattr(f, "from_db_value")]
        if needing:
            raise TypeError(f"{model.__name__}.{needing[0]} needs a converter: look it up through the ORM")
        columns += [f"{alias}.{quote(f.column)}" for f in fields]
        models.append((model, [f.attname for f in fields]))
    user_model, profile_user = get_user_model(), Profile._meta.get_field("user")
    sql = (f"SELECT {', '.join(columns)} FROM {quote(ApiToken._meta.db_table)} t "
           f"JOIN {quote(user_model._meta.db_table)} u ON u.{quote(user_model._meta.pk.column)} = "
           f"t.{quote(ApiToken._meta.get_field('user').column)} "
           f"LEFT JOIN {quote(Profile._meta.db_table)} p ON p.{quote(profile_user.column)} = "
           f"u.{quote(user_model._meta.pk.column)} "
           f"WHERE t.{quote(ApiToken._meta.get_field('key_hash').column)} = %s "
           f"AND t.{quote(ApiToken._meta.get_field('revoked_at').column)} IS NULL")
    return sql, models


def token_with_user(key_hash: str):
    """The unrevoked ApiToken with this hash, its user and the user's profile (cached on the instances), from
    one hand-built statement; None if there is none."""
    sql, models = _lookup()
    with connection.cursor() as cursor:
        cursor.execute(sql, [key_hash])
        row = cursor.fetchone()
    if row is None:
        return None
    instances, start = [], 0
    for model, attnames in models:
        values = row[start:start + len(attnames)]
        start += len(attnames)
        instances.append(model.from_db(connection.alias, attnames, values) if values[0] is not None else None)
    token, user, profile = instances
    token.user = user
    if profile is not None:
        user.profile = profile
    else:  # known to be missing, as select_related records it: `user.profile` raises without a query
        from portal.accounts.models import Profile

        Profile._meta.get_field("user").remote_field.set_cached_value(user, None)
    return token
