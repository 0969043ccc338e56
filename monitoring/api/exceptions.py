"""JSON answers when the database cannot serve: down, or not migrated.

Every API view (health, status, metrics, fetch control, the schema) goes through DRF, whose
exception handler this is; authentication runs inside DRF too, so a session or token lookup
that fails on the database ends here as well. Django's handler500 (tracker_project.urls)
covers anything outside DRF when DEBUG is off.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import DatabaseError
from psycopg import errors
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

log = logging.getLogger(__name__)

# What PostgreSQL says when a migration is missing: the table, or a column, is not there.
NOT_MIGRATED = (errors.UndefinedTable, errors.UndefinedColumn)


def database_problem(exc: DatabaseError) -> str:
    """The trouble in an operator's words: the class only, never the message (it may name
    hosts, users or connection strings)."""
    cause = exc.__cause__
    if isinstance(cause, NOT_MIGRATED):
        return f"database not migrated ({type(cause).__name__}): run manage.py migrate"
    return f"database unavailable ({type(exc).__name__})"


def database_unavailable(exc: DatabaseError) -> dict[str, Any]:
    """The body of a 503 for a database error: what failed, and which part."""
    return {"detail": database_problem(exc), "failing": ["database"]}


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's handler, plus a 503 JSON answer for database errors (instead of an HTML 500)."""
    response = drf_exception_handler(exc, context)
    if response is not None or not isinstance(exc, DatabaseError):
        return response
    request = context.get("request")
    log.warning(
        "database error answered 503",
        exc_info=True,
        extra={"path": getattr(request, "path", None)},
    )
    return Response(database_unavailable(exc), status=status.HTTP_503_SERVICE_UNAVAILABLE)
