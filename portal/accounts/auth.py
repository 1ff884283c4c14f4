"""DRF authentication by personal API token: `Authorization: Token <key>`."""

from __future__ import annotations

import functools
from typing import Any

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
def _lookup() -> tuple[str, list[tuple[type[Model], list[str]]], list[tuple[int, Any, list]]]:
    """The statement behind `token_with_user`, built once from the models' own fields, and the converters the
    ORM would apply to its columns: (column index, column expression, converters).

    Every API request starts here, and having the ORM compile the equivalent select_related query (27 columns
    over three tables) cost about a third of a list or detail request's CPU."""
    from portal.accounts.models import ApiToken, Profile

    quote = connection.ops.quote_name
    parts = [(ApiToken, "t"), (get_user_model(), "u"), (Profile, "p")]
    columns, models, converters = [], [], []
    for model, alias in parts:
        fields = model._meta.concrete_fields
        for f in fields:
            # As the ORM's compiler does: the backend's converters (SQLite hands back naive datetimes and
            # 0/1 booleans) and then the field's own from_db_value.
            col = f.get_col(alias)
            found = connection.ops.get_db_converters(col) + col.get_db_converters(connection)
            if found:
                converters.append((len(columns), col, found))
            columns.append(f"{alias}.{quote(f.column)}")
        models.append((model, [f.attname for f in fields]))
    user_model, profile_user = get_user_model(), Profile._meta.get_field("user")
    sql = (f"SELECT {', '.join(columns)} FROM {quote(ApiToken._meta.db_table)} t "
           f"JOIN {quote(user_model._meta.db_table)} u ON u.{quote(user_model._meta.pk.column)} = "
           f"t.{quote(ApiToken._meta.get_field('user').column)} "
           f"LEFT JOIN {quote(Profile._meta.db_table)} p ON p.{quote(profile_user.column)} = "
           f"u.{quote(user_model._meta.pk.column)} "
           f"WHERE t.{quote(ApiToken._meta.get_field('key_hash').column)} = %s "
           f"AND t.{quote(ApiToken._meta.get_field('revoked_at').column)} IS NULL")
    return sql, models, converters


def token_with_user(key_hash: str):
    """The unrevoked ApiToken with this hash, its user and the user's profile (cached on the instances), from
    one hand-built statement; None if there is none."""
    sql, models, converters = _lookup()
    with connection.cursor() as cursor:
        cursor.execute(sql, [key_hash])
        row = cursor.fetchone()
    if row is None:
        return None
    row = list(row)
    for index, col, funcs in converters:
        for func in funcs:
            row[index] = func(row[index], col, connection)
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
