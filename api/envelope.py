"""The `{"data": ..., "error": ...}` envelope of every JSON answer under /api/v1/.

Views return plain data and raise DRF exceptions; `EnvelopeJSONRenderer` wraps a success in
`{"data": ..., "error": null}` and `exception_handler` turns any exception into
`{"data": null, "error": {"code", "message", "fields"}}` with the right status. Format bodies
(GeoJSON, GPX, CSV) are the format itself: only their errors are enveloped JSON.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db import DatabaseError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response
from rest_framework.views import set_rollback

from monitoring.api.exceptions import database_problem

log = logging.getLogger(__name__)

# The error codes of the contract, by HTTP status.
CODES = {
    400: "invalid",
    401: "not_authenticated",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    415: "unsupported_media_type",
    429: "throttled",
    500: "server_error",
    503: "unavailable",
}


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the current state."
    default_code = "conflict"


class Unavailable(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "The service cannot answer now; try again later."
    default_code = "unavailable"


def error_body(
    status_code: int, message: str, fields: dict[str, list[str]] | None = None
) -> dict[str, Any]:
    """The envelope of an error answer."""
    code = CODES.get(status_code, "server_error" if status_code >= 500 else "invalid")
    return {"data": None, "error": {"code": code, "message": message, "fields": fields}}


def _flatten(detail: Any, prefix: str = "") -> dict[str, list[str]]:
    """{"center": {"latitude": [..]}} -> {"center.latitude": [..]}; lists of objects by index."""
    fields: dict[str, list[str]] = {}
    if isinstance(detail, Mapping):
        for key, value in detail.items():
            fields.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(detail, list) and any(isinstance(item, (Mapping, list)) for item in detail):
        for index, item in enumerate(detail):
            if item:
                fields.update(_flatten(item, f"{prefix}.{index}" if prefix else str(index)))
    else:
        items = detail if isinstance(detail, list) else [detail]
        fields[prefix or "non_field_errors"] = [str(item) for item in items]
    return fields


def _validation_error(exc: exceptions.ValidationError) -> dict[str, Any]:
    if isinstance(exc.detail, Mapping):
        fields = _flatten(exc.detail)
        name, messages = next(iter(fields.items()), ("", ["invalid input"]))
        message = messages[0] if name == "non_field_errors" else f"{name}: {messages[0]}"
        return error_body(400, message, fields)
    items = exc.detail if isinstance(exc.detail, list) else [exc.detail]
    return error_body(400, " ".join(str(item) for item in items) or "invalid input")


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    """Every exception of an /api/v1/ view as an enveloped error (never an HTML page)."""
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    if isinstance(exc, exceptions.ValidationError):
        set_rollback()
        return Response(_validation_error(exc), status=400)
    if isinstance(exc, exceptions.APIException):
        set_rollback()
        headers = {}
        if getattr(exc, "auth_header", None):
            headers["WWW-Authenticate"] = exc.auth_header
        if getattr(exc, "wait", None):
            headers["Retry-After"] = str(int(exc.wait))
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return Response(
            error_body(exc.status_code, detail), status=exc.status_code, headers=headers
        )
    request = context.get("request")
    set_rollback()
    if isinstance(exc, DatabaseError):
        log.warning("database error answered 503", exc_info=exc, extra={"path": _path(request)})
        return Response(error_body(503, database_problem(exc)), status=503)
    log.error("unexpected error in the API", exc_info=exc, extra={"path": _path(request)})
    return Response(error_body(500, "Server error."), status=500)


def _path(request: Any) -> str | None:
    return getattr(request, "path", None)


def _is_error(renderer_context: Mapping[str, Any] | None) -> bool:
    response = (renderer_context or {}).get("response")
    return response is not None and response.status_code >= 400


class EnvelopeJSONRenderer(JSONRenderer):
    """JSON wrapped in the envelope; errors arrive already enveloped by the handler."""

    def render(
        self,
        data: Any,
        accepted_media_type: str | None = None,
        renderer_context: Mapping[str, Any] | None = None,
    ) -> bytes:
        response = (renderer_context or {}).get("response")
        if response is not None and response.status_code == status.HTTP_204_NO_CONTENT:
            return b""
        if not _is_error(renderer_context):
            data = {"data": data, "error": None}
        return super().render(data, accepted_media_type, renderer_context)


class FormatRenderer(BaseRenderer):
    """Base of the format bodies (GeoJSON, ...): the view hands them the finished document;
    an error is still the enveloped JSON error, whatever format was asked for."""

    charset = "utf-8"

    def render(
        self,
        data: Any,
        accepted_media_type: str | None = None,
        renderer_context: Mapping[str, Any] | None = None,
    ) -> bytes:
        if _is_error(renderer_context):
            response = renderer_context["response"]  # type: ignore[index]
            response["Content-Type"] = "application/json"
            return JSONRenderer().render(data)
        return self.render_document(data, renderer_context)

    def render_document(self, data: Any, renderer_context: Mapping[str, Any] | None) -> bytes:
        """The document; by default (formats whose views stream their body, so that only
        OPTIONS answers get here) the enveloped JSON."""
        response = (renderer_context or {}).get("response")
        if response is not None:
            response["Content-Type"] = "application/json"
        return EnvelopeJSONRenderer().render(data, None, renderer_context)


class GeoJSONRenderer(FormatRenderer):
    """`?format=geojson`: the view's data is the GeoJSON object itself."""

    media_type = "application/geo+json"
    format = "geojson"

    def render_document(self, data: Any, renderer_context: Mapping[str, Any] | None) -> bytes:
        return JSONRenderer().render(data)
