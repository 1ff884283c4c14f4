"""One normal form for usernames: NFKC, then case folding (and NFKC again, which folding can undo).

Django normalises a username with NFKC when it stores one and when the log-in form reads one, but compared
the raw text elsewhere: with `carol` locked out, `ｃarol` (fullwidth c) or `ᶜarol` logged in as carol with a
failure budget of its own, and signing up as `ｃarol` was a 500. Sign-up, log-in and the lock-out counters
all compare `canonical(name)` now.
"""

from __future__ import annotations

import unicodedata

from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.db.models import Q


def canonical(name: str) -> str:
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", str(name or "")).casefold())


def find_user(name: str):
    """The account `name` designates in the normal form, or None.

    Should two old accounts differ only in case, the exact spelling decides, and without one neither is taken.
    """
    if not name:
        return None
    nfkc, key = unicodedata.normalize("NFKC", str(name)), canonical(name)
    candidates = get_user_model().objects.filter(Q(username__iexact=nfkc) | Q(username__iexact=key))
    matches = [u for u in candidates if canonical(u.username) == key]
    exact = [u for u in matches if u.username == nfkc]
    if exact:
        return exact[0]
    return matches[0] if len(matches) == 1 else None


class CanonicalUsernameBackend(ModelBackend):
    """Django's model backend, finding the account by the username's normal form."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        username = username if username is not None else kwargs.get(get_user_model().USERNAME_FIELD)
        if username is None or password is None:
            return None
        user = find_user(username)
        if user is None:
            get_user_model()().set_password(password)  # as long as a real check: no timing hint of existence
            return None
        if user.check_password(password) and self.user_can_authenticate(user):
            return user
        return None
