"""API tokens: knox tokens (only a SHA-512 hash is stored) with a name and a last use.

`create_token()` is the one way tokens are made (API, admin, `create_api_token`);
`TokenAuthentication` is knox's, plus the last-use stamp, written at most once a minute per
token: a cache key (Redis, shared by every process) gates the write, and the UPDATE itself
is conditional, so a cache outage costs at most one cheap statement, never a write per request.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.core.cache import cache
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from knox.auth import TokenAuthentication as KnoxTokenAuthentication
from knox.models import AuthToken

from api.models import TOKEN_NAME_MAX_LENGTH, TokenDetails

LAST_USE_RESOLUTION = dt.timedelta(minutes=1)
MAX_EXPIRY_HOURS = 24 * 366 * 10
DEFAULT_EXPIRY_HOURS = 30 * 24


def check_token_name(name: str) -> str:
    """The name stripped; ValueError for an empty or too long one."""
    name = (name or "").strip()
    if not name:
        raise ValueError("a token needs a name")
    if len(name) > TOKEN_NAME_MAX_LENGTH:
        raise ValueError(f"a token name has at most {TOKEN_NAME_MAX_LENGTH} characters")
    return name


def create_token(user: Any, name: str, expiry_hours: int | None) -> tuple[AuthToken, str]:
    """A new named token for `user`: (the row, the token, which is never stored or shown
    again). `expiry_hours` None or 0: never expires."""
    name = check_token_name(name)
    expiry = dt.timedelta(hours=expiry_hours) if expiry_hours else None
    with transaction.atomic():
        instance, token = AuthToken.objects.create(user=user, expiry=expiry)
        TokenDetails.objects.create(token=instance, name=name)
    return instance, token


def record_use(token: AuthToken, now: dt.datetime | None = None) -> bool:
    """Stamp the token's last use unless it was stamped less than a minute ago; whether a
    write happened."""
    now = now or timezone.now()
    added = cache.add(f"api:token-used:{token.digest[:32]}", 1, LAST_USE_RESOLUTION.seconds)
    if added is False:  # None: the cache is down, and the conditional UPDATE decides alone
        return False
    stale = Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USE_RESOLUTION)
    written = TokenDetails.objects.filter(stale, token=token).update(last_used_at=now)
    if not written and not TokenDetails.objects.filter(token=token).exists():
        # A token made by knox directly (before the API existed): give it its details row.
        TokenDetails.objects.bulk_create(
            [TokenDetails(token=token, name="unnamed", last_used_at=now)], ignore_conflicts=True
        )
        return True
    return bool(written)


class TokenAuthentication(KnoxTokenAuthentication):
    """knox's `Authorization: Bearer <token>`, recording the token's last use."""

    def _cleanup_token(self, auth_token: AuthToken) -> bool:
        """The presented token only: True (and deleted) when it has expired. knox's own also
        reads every other token of the user on every request to delete the expired ones (a
        query per request); those are refused when presented and deleted then."""
        if auth_token.expiry is not None and auth_token.expiry < timezone.now():
            auth_token.delete()
            return True
        return False

    def authenticate_credentials(self, token: bytes) -> tuple[Any, AuthToken]:
        user, auth_token = super().authenticate_credentials(token)
        record_use(auth_token)
        return user, auth_token
