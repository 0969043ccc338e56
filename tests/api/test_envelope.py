"""The {data, error} envelope on success and on every kind of error; strict parameters;
keyset pages."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from django.core.management import call_command
from django.db import DatabaseError
from rest_framework.test import APIClient

from api.envelope import exception_handler
from tests.factories import TrackerFactory

pytestmark = pytest.mark.django_db


def error_of(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["data"] is None
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    return body["error"]


def test_success_is_wrapped_in_data(alice: Any, alice_client: APIClient) -> None:
    tracker = TrackerFactory(owner=alice, name="bike")
    body = alice_client.get("/api/v1/trackers").json()
    assert body["error"] is None
    assert body["data"]["next"] is None
    assert [t["name"] for t in body["data"]["results"]] == ["bike"]
    assert body["data"]["results"][0]["id"] == tracker.pk


def test_unknown_query_parameter_is_400_naming_it(alice_client: APIClient) -> None:
    error = error_of(alice_client.get("/api/v1/trackers?colour=red"), 400, "invalid")
    assert error["fields"] == {"colour": ["unknown query parameter"]}
    assert "colour" in error["message"]


def test_unknown_body_field_is_400_naming_it(alice_client: APIClient) -> None:
    body = {"name": "home", "center": {"latitude": 1, "longitude": 2}, "radius_m": 100, "x": 1}
    error = error_of(alice_client.post("/api/v1/geofences", body, format="json"), 400, "invalid")
    assert error["fields"] == {"x": ["unknown field"]}


def test_malformed_json_is_400(alice_client: APIClient) -> None:
    response = alice_client.post("/api/v1/geofences", "{not json", content_type="application/json")
    error_of(response, 400, "invalid")


def test_no_credentials_is_401_with_bearer_challenge(anon_client: APIClient) -> None:
    response = anon_client.get("/api/v1/trackers")
    error_of(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"] == "Bearer"


def test_wrong_token_is_401(anon_client: APIClient) -> None:
    anon_client.credentials(HTTP_AUTHORIZATION="Bearer " + "0" * 64)
    error_of(anon_client.get("/api/v1/trackers"), 401, "not_authenticated")


def test_session_post_without_csrf_is_403(alice: Any) -> None:
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(alice)
    assert client.get("/api/v1/tokens").status_code == 200  # the session works for reads
    error_of(client.post("/api/v1/tokens", {"name": "x"}, format="json"), 403, "permission_denied")


def test_unknown_path_is_enveloped_404(alice_client: APIClient, anon_client: APIClient) -> None:
    error_of(alice_client.get("/api/v1/no/such/thing"), 404, "not_found")
    error_of(anon_client.post("/api/v1/nothing"), 404, "not_found")


def test_unknown_id_is_404(alice_client: APIClient) -> None:
    error_of(alice_client.get("/api/v1/trackers/999999999"), 404, "not_found")
    error_of(alice_client.get("/api/v1/trackers/abc"), 404, "not_found")


def test_method_not_allowed_is_405(alice: Any, alice_client: APIClient) -> None:
    tracker = TrackerFactory(owner=alice)
    error_of(alice_client.delete(f"/api/v1/trackers/{tracker.pk}"), 405, "method_not_allowed")


def test_throttled_is_429_with_retry_after(alice_client: APIClient, settings: Any) -> None:
    settings.API_THROTTLE_USER_RATE = "2/min"
    assert alice_client.get("/api/v1/trackers").status_code == 200
    assert alice_client.get("/api/v1/trackers").status_code == 200
    response = alice_client.get("/api/v1/trackers")
    error_of(response, 429, "throttled")
    assert 0 < int(response["Retry-After"]) <= 60


def test_anonymous_requests_and_bad_tokens_are_throttled_per_ip(
    anon_client: APIClient, settings: Any
) -> None:
    settings.API_THROTTLE_ANON_RATE = "2/min"
    ip = f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}"
    assert anon_client.get("/api/v1/trackers", REMOTE_ADDR=ip).status_code == 401
    anon_client.credentials(HTTP_AUTHORIZATION="Bearer " + "1" * 64)
    assert anon_client.get("/api/v1/trackers", REMOTE_ADDR=ip).status_code == 401
    error_of(anon_client.get("/api/v1/trackers", REMOTE_ADDR=ip), 429, "throttled")


def test_unknown_format_is_400_naming_format(alice_client: APIClient) -> None:
    error = error_of(alice_client.get("/api/v1/trackers?format=gpx"), 400, "invalid")
    assert list(error["fields"]) == ["format"]


def test_database_error_is_503_unavailable() -> None:
    response = exception_handler(DatabaseError("connection refused"), {})
    assert response.status_code == 503
    assert response.data["error"]["code"] == "unavailable"
    assert "connection refused" not in response.data["error"]["message"]


def test_unexpected_error_is_500_without_details() -> None:
    response = exception_handler(RuntimeError("secret detail"), {})
    assert response.status_code == 500
    assert response.data == {
        "data": None,
        "error": {"code": "server_error", "message": "Server error.", "fields": None},
    }


def test_nested_field_errors_are_named_with_dots(alice_client: APIClient) -> None:
    body = {"name": "x", "center": {"latitude": 95, "longitude": 2}, "radius_m": 100}
    error = error_of(alice_client.post("/api/v1/geofences", body, format="json"), 400, "invalid")
    assert list(error["fields"]) == ["center.latitude"]


def test_delete_answers_204_without_body(alice_client: APIClient) -> None:
    created = alice_client.post("/api/v1/tokens", {"name": "temp"}, format="json").json()
    response = alice_client.delete(f"/api/v1/tokens/{created['data']['id']}")
    assert response.status_code == 204
    assert response.content == b""


def test_options_of_a_streamed_format_answers_enveloped_json(alice_client: APIClient) -> None:
    # The CSV renderer has no document of its own (the view streams it): OPTIONS falls back.
    response = alice_client.options("/api/v1/locations", HTTP_ACCEPT="text/csv")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    assert response.json()["data"]["name"]


# --- keyset pages ------------------------------------------------------------------------
def test_pages_follow_next_until_the_end(alice: Any, alice_client: APIClient) -> None:
    ids = [TrackerFactory(owner=alice).pk for _ in range(5)]
    seen, url = [], "/api/v1/trackers?limit=2"
    while url:
        data = alice_client.get(url).json()["data"]
        seen += [t["id"] for t in data["results"]]
        url = data["next"]
        assert url is None or url.startswith("http://testserver/api/v1/trackers?")
    assert seen == sorted(ids)


def test_a_page_is_stable_when_rows_arrive(alice: Any, alice_client: APIClient) -> None:
    first = [TrackerFactory(owner=alice).pk for _ in range(2)]
    page = alice_client.get("/api/v1/trackers?limit=1").json()["data"]
    TrackerFactory(owner=alice)
    rest = alice_client.get(page["next"]).json()["data"]
    assert rest["results"][0]["id"] == first[1]


@pytest.mark.parametrize("limit", ["0", "1001", "ten", "-1"])
def test_bad_limit_is_400(alice_client: APIClient, limit: str) -> None:
    error = error_of(alice_client.get(f"/api/v1/trackers?limit={limit}"), 400, "invalid")
    assert list(error["fields"]) == ["limit"]


@pytest.mark.parametrize("cursor", ["garbage", "W10", "WyJ4Il0", "eyJhIjoxfQ"])
def test_bad_cursor_is_400(alice_client: APIClient, cursor: str) -> None:
    error = error_of(alice_client.get(f"/api/v1/events?cursor={cursor}"), 400, "invalid")
    assert list(error["fields"]) == ["cursor"]


# --- the OpenAPI schema and its pages ------------------------------------------------------
def test_schema_validates_without_warnings(tmp_path: Any) -> None:
    out = tmp_path / "schema.json"
    call_command(
        "spectacular",
        "--validate",
        "--fail-on-warn",
        "--format",
        "openapi-json",
        "--file",
        str(out),
    )
    schema = json.loads(out.read_text())
    listing = schema["paths"]["/api/v1/trackers"]["get"]["responses"]
    envelope = listing["200"]["content"]["application/json"]["schema"]
    assert envelope["required"] == ["data", "error"]
    assert envelope["properties"]["data"]["$ref"].endswith("/PaginatedTrackerList")
    for status in ("400", "401", "404", "429"):
        ref = listing[status]["content"]["application/json"]["schema"]["$ref"]
        assert ref == "#/components/schemas/ErrorEnvelope"
    assert "409" in schema["paths"]["/api/v1/deliveries/{id}/retry"]["post"]["responses"]
    assert set(schema["components"]["schemas"]["ApiError"]["properties"]) == {
        "code",
        "message",
        "fields",
    }
    # The control endpoints are not enveloped.
    control = schema["paths"]["/queue/initialize"]["post"]["responses"]["200"]
    assert "data" not in json.dumps(control)


@pytest.mark.parametrize("page", ["docs", "redoc"])
def test_docs_pages_use_local_static_files(page: str, settings: Any, anon_client: APIClient):
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    response = anon_client.get(f"/api/v1/{page}")
    assert response.status_code == 200
    html = response.content.decode()
    assert "/static/drf_spectacular_sidecar/" in html
    assert "cdn" not in html.lower()
    assert "/api/v1/schema" in html


def test_me_names_the_authenticated_user(alice, alice_client, anon_client):
    response = alice_client.get("/api/v1/me")
    assert response.status_code == 200
    assert response.json() == {
        "data": {"id": alice.pk, "username": "alice", "is_staff": False},
        "error": None,
    }
    assert anon_client.get("/api/v1/me").json()["error"]["code"] == "not_authenticated"
