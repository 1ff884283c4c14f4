"""DRF authentication by personal API token: `Authorization: Token <key>`."""

from __future__ import annotations

from django.utils import timezone
from rest_framework import authentication, exceptions

from jobs.models import hash_token


class ApiTokenAuthentication(authentication.TokenAuthentication):
    keyword = "Token"

    def authenticate_credentials(self, key: str):
        from portal.accounts.models import ApiToken

        # The profile comes along: submit reads the user's default `notify` from it (one query fewer).
        token = (ApiToken.objects.select_related("user__profile")
                 .filter(key_hash=hash_token(key), revoked_at__isnull=True).first())
        if token is None or not token.user.is_active:
            raise exceptions.AuthenticationFailed("invalid or revoked token")
        if not token.last_used_at or (timezone.now() - token.last_used_at).total_seconds() > 60:
            type(token).objects.filter(pk=token.pk).update(last_used_at=timezone.now())
        return token.user, token
