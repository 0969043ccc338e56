"""API tokens: knox tokens (only a SHA-512 hash is stored) with a name and a last use.

`create_token()` is the one way tokens are made (API, admin, `create_api_token`);
`TokenAuthentication` is knox's, plus the last-use stamp, written at most once a minute per
token: this process's memory and a cache key (Redis, shared by every process) gate the write,
and the UPDATE itself is conditional, so a cache outage costs at most one cheap statement, never
a write per request.
"""

from __future__ import annotations

import binascii
import datetime as dt
from hmac import compare_digest
from typing import Any

from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db import connection, connections, router, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from knox.auth import TokenAuthentication as KnoxTokenAuthentication
from knox.crypto import hash_token
from knox.models import AuthToken
from knox.settings import CONSTANTS, knox_settings
from rest_framework import exceptions

from api.models import TOKEN_NAME_MAX_LENGTH, TokenDetails
from trackers.models import FleetVersion

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


# Per process: when this process last knew a token's use to be stamped (digest -> time), so
# that a busy token costs no round trip at all for the rest of that minute.
_recently_stamped: dict[str, dt.datetime] = {}
_RECENT_MAX = 10_000


def forget_recent_uses() -> None:
    """Empty this process's memory of stamped tokens (tests)."""
    _recently_stamped.clear()


def record_use(token: AuthToken, now: dt.datetime | None = None) -> bool:
    """Stamp the token's last use unless it was stamped less than a minute ago; whether a
    write happened.

    Three gates, cheapest first: this process's memory, a cache key shared by every process,
    and the conditional UPDATE."""
    now = now or timezone.now()
    known = _recently_stamped.get(token.digest)
    if known is not None and dt.timedelta(0) <= now - known < LAST_USE_RESOLUTION:
        return False
    if len(_recently_stamped) >= _RECENT_MAX:
        _recently_stamped.clear()
    _recently_stamped[token.digest] = now
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


def _token_query() -> tuple[str, list[str], list[str]]:
    """One SELECT of the token rows with a prefix and their users (what knox's queryset with
    `select_related("user")` reads) and each user's fleet version (trackers.FleetVersion, which
    the location searches' cache needs: read here, it costs no round trip of its own), and the
    two models' column names in its order."""
    user_model = get_user_model()
    token_fields = [f.attname for f in AuthToken._meta.concrete_fields]
    user_fields = [f.attname for f in user_model._meta.concrete_fields]
    quote = connection.ops.quote_name
    columns = [f"t.{quote(f.column)}" for f in AuthToken._meta.concrete_fields] + [
        f"u.{quote(f.column)}" for f in user_model._meta.concrete_fields
    ]
    columns.append("COALESCE(v.version, 0)")
    user_column = quote(AuthToken._meta.get_field("user").column)
    key_column = quote(AuthToken._meta.get_field("token_key").column)
    # Identifiers from the models' metadata, quoted; the key is a parameter.
    sql = (
        f"SELECT {', '.join(columns)} FROM {quote(AuthToken._meta.db_table)} AS t "  # noqa: S608
        f"JOIN {quote(user_model._meta.db_table)} AS u "
        f"ON u.{quote(user_model._meta.pk.column)} = t.{user_column} "
        f"LEFT JOIN {quote(FleetVersion._meta.db_table)} AS v "
        f"ON v.owner_id = u.{quote(user_model._meta.pk.column)} "
        f"WHERE t.{key_column} = %s"
    )
    return sql, token_fields, user_fields


class TokenAuthentication(KnoxTokenAuthentication):
    """knox's `Authorization: Bearer <token>`, recording the token's last use.

    The token rows are read with one SQL statement instead of knox's queryset: the same
    columns and checks, without building the query again on every request (half of the
    cost of authenticating, measured in-process: 1.3 -> 0.7 ms)."""

    _query: tuple[str, list[str], list[str]] | None = None

    def _token_rows(self, token_key: str) -> list[AuthToken]:
        if TokenAuthentication._query is None:
            TokenAuthentication._query = _token_query()
        sql, token_fields, user_fields = TokenAuthentication._query
        using = router.db_for_read(AuthToken)
        with connections[using].cursor() as cursor:
            cursor.execute(sql, [token_key])
            rows = cursor.fetchall()
        tokens = []
        split = len(token_fields)
        for row in rows:
            token = AuthToken.from_db(using, token_fields, row[:split])
            token.user = get_user_model().from_db(using, user_fields, row[split:-1])
            token.user.fleet_version = row[-1]
            tokens.append(token)
        return tokens

    def _cleanup_token(self, auth_token: AuthToken) -> bool:
        """The presented token only: True (and deleted) when it has expired. knox's own also
        reads every other token of the user on every request to delete the expired ones (a
        query per request); those are refused when presented and deleted then."""
        if auth_token.expiry is not None and auth_token.expiry < timezone.now():
            auth_token.delete()
            return True
        return False

    def authenticate_credentials(self, token: bytes) -> tuple[Any, AuthToken]:
        """knox's checks (expiry, digest in constant time, an active user) on our read."""
        message = _("Invalid token.")
        text = token.decode("utf-8")
        for auth_token in self._token_rows(text[: CONSTANTS.TOKEN_KEY_LENGTH]):
            if self._cleanup_token(auth_token):
                continue
            try:
                digest = hash_token(text)
            except (TypeError, binascii.Error) as exc:
                raise exceptions.AuthenticationFailed(message) from exc
            if compare_digest(digest, auth_token.digest):
                if knox_settings.AUTO_REFRESH and auth_token.expiry:
                    self.renew_token(auth_token)
                user, auth_token = self.validate_user(auth_token)
                record_use(auth_token)
                return user, auth_token
        raise exceptions.AuthenticationFailed(message)
