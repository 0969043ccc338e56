"""OpenAPI: the envelope and the error answers of /api/v1/ in the schema (drf-spectacular).

`envelope_hook` (a postprocessing hook in SPECTACULAR_SETTINGS) rewrites every operation under
/api/v1/: each 2xx JSON answer becomes `{"data": <what the view returns>, "error": null}`,
and the error answers every endpoint can give (400, 401, 404, 429; 403, 409, 503 where they
apply) are added as the shared `ErrorEnvelope` component. Format bodies (GeoJSON, GPX, CSV)
are left as they are: they are not enveloped.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.contrib.knox_auth_token import KnoxTokenScheme

from api.envelope import CODES

PREFIX = "/api/v1/"
NOT_ENVELOPED = {"/api/v1/schema", "/api/v1/docs", "/api/v1/redoc"}
JSON = "application/json"
GEOJSON = "application/geo+json"

API_ERROR = {
    "type": "object",
    "required": ["code", "message", "fields"],
    "properties": {
        "code": {"type": "string", "enum": sorted(set(CODES.values()))},
        "message": {"type": "string", "description": "what went wrong, for people"},
        "fields": {
            "type": "object",
            "nullable": True,
            "additionalProperties": {"type": "array", "items": {"type": "string"}},
            "description": "the messages per field or query parameter at fault (400 only)",
        },
    },
}
ERROR_ENVELOPE = {
    "type": "object",
    "required": ["data", "error"],
    "properties": {
        "data": {"type": "object", "nullable": True, "description": "always null"},
        "error": {"$ref": "#/components/schemas/ApiError"},
    },
}
FEATURE_COLLECTION = {
    "type": "object",
    "description": "a GeoJSON FeatureCollection (RFC 7946), not enveloped",
    "required": ["type", "features"],
    "properties": {
        "type": {"type": "string", "enum": ["FeatureCollection"]},
        "features": {"type": "array", "items": {"type": "object"}},
    },
}
ERRORS = {
    "400": "invalid input; `error.fields` names the fields or query parameters",
    "401": "no valid credentials (`WWW-Authenticate: Bearer`)",
    "404": "no such object among the requester's (another user's objects are not found)",
    "429": "too many requests (`Retry-After` says how long to wait)",
}


def _wrap(schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["data", "error"],
        "properties": {
            "data": schema,
            "error": {"type": "object", "nullable": True, "description": "always null"},
        },
    }


def _envelope_operation(operation: dict[str, Any]) -> None:
    responses = operation.setdefault("responses", {})
    for code, response in responses.items():
        content = response.get("content", {})
        if code.startswith("2") and JSON in content:
            content[JSON]["schema"] = _wrap(content[JSON].get("schema", {}))
        if GEOJSON in content:
            content[GEOJSON]["schema"] = FEATURE_COLLECTION
    ref = {"$ref": "#/components/schemas/ErrorEnvelope"}
    errors = dict(ERRORS)
    if any(code == "409" for code in responses):
        errors["409"] = responses["409"].get("description", "conflict")
    for code, description in errors.items():
        responses[code] = {"description": description, "content": {JSON: {"schema": ref}}}


def envelope_hook(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict:
    """Wrap the /api/v1/ operations' answers in the envelope and document their errors."""
    enveloped = False
    for path, item in result.get("paths", {}).items():
        if not path.startswith(PREFIX) or path in NOT_ENVELOPED:
            continue
        for method, operation in item.items():
            if method in {"get", "post", "put", "patch", "delete"}:
                _envelope_operation(operation)
                enveloped = True
    if enveloped:
        schemas = result.setdefault("components", {}).setdefault("schemas", {})
        schemas["ApiError"] = API_ERROR
        schemas["ErrorEnvelope"] = ERROR_ENVELOPE
    return result


def only_api_v1(endpoints: list[tuple[str, str, str, Any]]) -> list[tuple[str, str, str, Any]]:
    """Preprocessing hook of /api/v1/schema: only the API's own endpoints (the control
    endpoints' schema stays staff-only at /api/schema/)."""
    return [e for e in endpoints if e[0].startswith(PREFIX)]


class BearerTokenScheme(KnoxTokenScheme):
    """Our knox authentication (it records last use) in the schema: knox's bearer token."""

    target_class = "api.auth.TokenAuthentication"
