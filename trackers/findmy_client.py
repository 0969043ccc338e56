"""The thin wrapper around findmy: one saved Apple account, raw report fetches, error classes.

Everything that talks to Apple (or to the simulator standing in for it) goes through
`ReportSource`; tests fake Apple at the network boundary, never here.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from django.db import models
from findmy import AsyncAppleAccount
from findmy.errors import (
    EmptyResponseError,
    InvalidCredentialsError,
    InvalidStateError,
    UnauthorizedError,
    UnhandledProtocolError,
)

from .endpoints import EndpointNotAllowed, check_endpoint

FETCH_PATH = "/findmyservice/v2/fetch"  # Apple's, on a fetch endpoint override
MAX_KEYS_PER_REQUEST = 64  # larger requests were seen to come back with partial data


class FailureCategory(models.TextChoices):
    AUTH = "auth", "Authentication"
    RATE_LIMITED = "rate_limited", "Rate limited"
    UPSTREAM = "upstream", "Upstream error"
    TIMEOUT = "timeout", "Timeout"
    NETWORK = "network", "Network"
    EMPTY = "empty", "Empty answer"
    DECRYPT = "decrypt", "Decryption"
    INVALID_PAYLOAD = "invalid_payload", "Invalid payload"
    INVALID_KEY = "invalid_key", "Invalid key material"
    INVALID_REPORT = "invalid_report", "Invalid report"  # decrypted, but impossible: not stored
    ENDPOINT = "endpoint", "Endpoint not allowed"  # refused before any request was sent
    UNEXPECTED = "unexpected", "Unexpected error"  # a bug or an unknown fault: traceback kept
    # Failures of the processing side (geocoding provider, alert deliveries) share the table.
    GEOCODE = "geocode", "Geocoding"
    DELIVERY = "delivery", "Alert delivery"


# Worth another try soon: the fault is likely gone in seconds.
TRANSIENT_CATEGORIES = frozenset(
    {
        FailureCategory.TIMEOUT,
        FailureCategory.NETWORK,
        FailureCategory.UPSTREAM,
        FailureCategory.EMPTY,
    }
)


class FetchError(Exception):
    """A failed fetch, classified so the caller can decide: retry, back off, or park."""

    def __init__(self, category: str, message: str) -> None:
        super().__init__(f"{category}: {message}")
        self.category = category
        self.message = message

    @property
    def transient(self) -> bool:
        return self.category in TRANSIENT_CATEGORIES


def classify(exc: BaseException) -> FetchError:
    """Map what findmy and aiohttp raise onto our failure categories."""
    if isinstance(exc, FetchError):
        return exc
    if isinstance(exc, UnauthorizedError | InvalidCredentialsError | InvalidStateError):
        return FetchError(FailureCategory.AUTH, str(exc) or type(exc).__name__)
    if isinstance(exc, EmptyResponseError):
        return FetchError(FailureCategory.EMPTY, "Apple answered 200 with an empty body")
    if isinstance(exc, UnhandledProtocolError):
        # findmy: "Failed to fetch reports: <statusCode from the body>".
        message = str(exc)
        if "429" in message:
            return FetchError(FailureCategory.RATE_LIMITED, message)
        return FetchError(FailureCategory.UPSTREAM, message)
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return FetchError(FailureCategory.TIMEOUT, "no answer within findmy's 5 s timeout")
    if isinstance(exc, aiohttp.ClientError | OSError):
        return FetchError(FailureCategory.NETWORK, f"{type(exc).__name__}: {exc}")
    if isinstance(exc, ValueError | KeyError | TypeError):
        # Malformed JSON, or an answer of an unexpected shape.
        return FetchError(
            FailureCategory.UPSTREAM, f"malformed answer: {type(exc).__name__}: {exc}"
        )
    raise exc


class _Account(AsyncAppleAccount):
    """findmy's account, minus the silent re-login.

    On a 401 findmy logs in again with the stored password, which can trigger a 2FA prompt
    on the owner's devices from a headless worker. We stop instead: the account is parked
    as needing login until an operator runs `add_apple_account` again.
    """

    async def _gsa_authenticate(self, *args: Any, **kwargs: Any) -> Any:
        raise UnauthorizedError("Apple rejected the session; log the account in again")


def fetch_url(override: str) -> str:
    """An endpoint override may be a full URL or just the server's base URL."""
    parts = urlsplit(override)
    if parts.path in ("", "/"):
        return override.rstrip("/") + FETCH_PATH
    return override


def check_endpoints(fetch_endpoint: str, anisette_url: str) -> None:
    """FetchError (category endpoint) unless both may receive the account's credentials."""
    try:
        if fetch_endpoint:
            check_endpoint(fetch_url(fetch_endpoint), what="fetch endpoint")
        check_endpoint(anisette_url, what="anisette server")
    except EndpointNotAllowed as exc:
        raise FetchError(FailureCategory.ENDPOINT, str(exc)) from None


class ReportSource:
    """One Apple account, opened from its saved state, that fetches encrypted reports.

    Async, one request at a time (an asyncio lock; across workers the database lease on the
    account row does the same). Use as `async with ReportSource(...) as source`.
    """

    def __init__(
        self, state: dict[str, Any], fetch_endpoint: str = "", anisette_url: str = ""
    ) -> None:
        # Every request goes through here: the account's tokens go to the fetch endpoint and
        # its anisette server only if they may (endpoints.py), whatever a row says.
        check_endpoints(fetch_endpoint, anisette_url)
        # The account row's anisette_url is the one source of the anisette server.
        anisette = {**(state.get("anisette") or {}), "type": "aniRemote", "url": anisette_url}
        try:
            self._account = _Account.from_json({**state, "anisette": anisette})
        except (KeyError, ValueError, TypeError, AssertionError) as exc:
            raise FetchError(FailureCategory.AUTH, f"unusable account state: {exc!r}") from None
        if fetch_endpoint:
            self._account._ENDPOINT_REPORTS_FETCH = fetch_url(fetch_endpoint)
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> ReportSource:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._account.close()

    def state(self) -> dict[str, Any]:
        """The account state after use, to be saved again (findmy may have refreshed it)."""
        return dict(self._account.to_json())

    async def fetch(self, hashed_ids: Sequence[str]) -> list[tuple[str, bytes]]:
        """One request for up to 64 static keys: (hashed id, payload) pairs, or FetchError."""
        return await self.fetch_devices([([i], []) for i in hashed_ids])

    async def fetch_devices(
        self, devices: Sequence[tuple[list[str], list[str]]]
    ) -> list[tuple[str, bytes]]:
        """One request for devices given as (primary ids, secondary ids): a static key is
        ([id], []), an accessory the ids of its rolling keys. At most 64 ids in all."""
        if sum(len(p) + len(s) for p, s in devices) > MAX_KEYS_PER_REQUEST:
            raise ValueError("Apple answers requests for more than 64 keys with partial data")
        async with self._lock:
            try:
                reports = await self._account.fetch_raw_reports(list(devices))
            except Exception as exc:
                raise classify(exc) from exc
        return [(base64.b64encode(r.hashed_adv_key_bytes).decode(), r.payload) for r in reports]
