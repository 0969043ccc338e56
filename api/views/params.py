"""Query parameters of list views: parsed strictly, a 400 naming the parameter otherwise."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from django.utils.dateparse import parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request


def _fail(name: str, message: str) -> ValidationError:
    return ValidationError({name: [message]})


def aware_datetime(request: Request, name: str) -> dt.datetime | None:
    """`?name=` as an ISO 8601 time with a time zone (a naive time is a 400, not a guess)."""
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        value = parse_datetime(raw.strip())
    except ValueError:
        value = None
    if value is None:
        raise _fail(name, "an ISO 8601 time such as 2026-01-31T12:00:00Z")
    if value.tzinfo is None:
        raise _fail(name, "a time zone is required (Z or +01:00)")
    return value


def time_range(request: Request) -> tuple[dt.datetime | None, dt.datetime | None]:
    """(`starts_at`, `ends_at`); a range that ends before it starts is a 400 on `ends_at`."""
    starts_at = aware_datetime(request, "starts_at")
    ends_at = aware_datetime(request, "ends_at")
    if starts_at and ends_at and ends_at < starts_at:
        raise _fail("ends_at", "ends before starts_at")
    return starts_at, ends_at


def positive_int(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    if not raw.isdigit() or not 0 < int(raw) < 2**63:
        raise _fail(name, "a positive integer id")
    return int(raw)


def choice(request: Request, name: str, choices: Iterable[str]) -> str | None:
    raw = request.query_params.get(name)
    allowed = list(choices)
    if raw is not None and raw not in allowed:
        raise _fail(name, f"one of {', '.join(allowed)}")
    return raw


TIME_RANGE_PARAMETERS = [
    OpenApiParameter(
        "starts_at", OpenApiTypes.DATETIME, description="from this time on (ISO 8601 with a zone)"
    ),
    OpenApiParameter(
        "ends_at", OpenApiTypes.DATETIME, description="up to this time (ISO 8601 with a zone)"
    ),
]
