"""GET /schema (OpenAPI 3 of /api/v1/, any authenticated user), /docs (Swagger UI) and
/redoc (ReDoc), both from drf-spectacular-sidecar's static files, never a CDN."""

from __future__ import annotations

from typing import Any

from drf_spectacular.views import (
    SpectacularAPIView,
    SpectacularRedocView,
    SpectacularSwaggerView,
)
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response

from api.envelope import exception_handler
from api.throttling import AnonIPThrottle, TokenRateThrottle

V1_SETTINGS = {
    "PREPROCESSING_HOOKS": ["api.schema.only_api_v1"],
    "TITLE": "Tracker fleet API v1",
    "DESCRIPTION": (
        "The owners' API: trackers, locations, geofences, events, alert rules, deliveries and "
        'tokens. Every JSON answer is an envelope, `{"data": ..., "error": null}` or '
        '`{"data": null, "error": {"code", "message", "fields"}}`; format bodies '
        "(GeoJSON, GPX, CSV) are not. Authenticate with `Authorization: Bearer <token>` "
        "(POST /api/v1/tokens, or manage.py create_api_token) or a browser session."
    ),
}


class SchemaView(SpectacularAPIView):
    permission_classes = [IsAuthenticated]
    throttle_classes = [TokenRateThrottle, AnonIPThrottle]
    custom_settings = V1_SETTINGS

    def get_exception_handler(self) -> Any:
        return exception_handler

    def handle_exception(self, exc: Exception) -> Response:
        # The refusal is the enveloped JSON error, not a YAML document.
        response = super().handle_exception(exc)
        self.request.accepted_renderer = JSONRenderer()
        self.request.accepted_media_type = JSONRenderer.media_type
        return response


class SwaggerView(SpectacularSwaggerView):
    """An HTML page that loads the schema with the visitor's session."""

    permission_classes = [AllowAny]
    url_name = "api:schema"


class RedocView(SpectacularRedocView):
    permission_classes = [AllowAny]
    url_name = "api:schema"
