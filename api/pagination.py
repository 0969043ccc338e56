"""Keyset (cursor) pagination by (a time column, id), for any list view of the API.

`data` is `{"results": [...], "next": <absolute URL or null>}`. The cursor is opaque to
clients (URL-safe base64 of the last row's key) and names a position, not an offset, so a
page never repeats or skips rows while new ones arrive. A view chooses its key with
`pagination_key` ("created_at", "timestamp", "occurred_at", or "id" alone) and its direction
with `pagination_descending`.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from typing import Any

from django.db.models import Q, QuerySet
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import BasePagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
QUERY_PARAMS = ("limit", "cursor")


def parse_limit(request: Request) -> int:
    """`?limit=`: 1..MAX_LIMIT, DEFAULT_LIMIT when absent; 400 naming `limit` otherwise."""
    raw = request.query_params.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise ValidationError({"limit": [f"an integer from 1 to {MAX_LIMIT}"]})
    return int(raw)


def encode_cursor(values: list[Any]) -> str:
    raw = json.dumps([v.isoformat() if isinstance(v, dt.datetime) else v for v in values])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, time_key: bool) -> tuple[dt.datetime | None, int]:
    """(time, id) of the row a cursor names; 400 naming `cursor` for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = json.loads(raw)
        if time_key:
            moment, pk = values
            moment = dt.datetime.fromisoformat(moment)
            if moment.tzinfo is None:
                raise ValueError
        else:
            moment, (pk,) = None, values
        if not isinstance(pk, int) or isinstance(pk, bool):
            raise ValueError
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise ValidationError({"cursor": ["not a cursor this API gave out"]}) from None
    return moment, pk


class KeysetPagination(BasePagination):
    """Pages ordered by (`view.pagination_key`, id); `?limit=` and `?cursor=`."""

    def paginate_queryset(
        self, queryset: QuerySet, request: Request, view: Any = None
    ) -> list[Any]:
        key = getattr(view, "pagination_key", "id")
        descending = getattr(view, "pagination_descending", False)
        self.request = request
        self.limit = parse_limit(request)
        cursor = request.query_params.get("cursor")
        sign = "-" if descending else ""
        queryset = queryset.order_by(*[f"{sign}{key}" for key in dict.fromkeys([key, "id"])])
        if cursor:
            moment, pk = decode_cursor(cursor, time_key=key != "id")
            after = "lt" if descending else "gt"
            if key == "id":
                queryset = queryset.filter(**{f"id__{after}": pk})
            else:
                queryset = queryset.filter(
                    Q(**{f"{key}__{after}": moment}) | Q(**{key: moment, f"id__{after}": pk})
                )
        rows = list(queryset[: self.limit + 1])
        self.next_cursor = None
        if len(rows) > self.limit:
            rows = rows[: self.limit]
            last = rows[-1]
            values = [last.pk] if key == "id" else [getattr(last, key), last.pk]
            self.next_cursor = encode_cursor(values)
        return rows

    def get_next_link(self) -> str | None:
        if self.next_cursor is None:
            return None
        url = self.request.build_absolute_uri()
        return replace_query_param(url, "cursor", self.next_cursor)

    def get_paginated_response(self, data: Any) -> Response:
        return Response({"results": data, "next": self.get_next_link()})

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "object",
            "required": ["results", "next"],
            "properties": {
                "results": schema,
                "next": {"type": "string", "format": "uri", "nullable": True},
            },
        }

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        return [
            {
                "name": "limit",
                "in": "query",
                "required": False,
                "description": f"rows per page, 1 to {MAX_LIMIT} (default {DEFAULT_LIMIT})",
                "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
            },
            {
                "name": "cursor",
                "in": "query",
                "required": False,
                "description": "the position given in the previous page's `next`",
                "schema": {"type": "string"},
            },
        ]
