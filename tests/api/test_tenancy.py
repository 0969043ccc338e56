"""The tenancy walk: every URL pattern under /api/v1/, taken from the URL resolver, filled
with alice's objects and requested by bob (404 or an empty list, never alice's data, and
unsafe methods change nothing), and by staff (who sees alice's objects).

A pattern the walk does not know how to fill fails the test: add it to ROUTES below (and
think about who may see what it serves).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.gis.geos import Point
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone
from knox.models import AuthToken
from rest_framework.test import APIClient

from api.auth import create_token
from api.models import TokenDetails
from geofences.models import (
    AlertDelivery,
    AlertRule,
    Channel,
    DeliveryStatus,
    EventKind,
    FenceKind,
    Geofence,
    GeofenceEvent,
)
from locations import latest
from locations.models import LocationReport
from tests.factories import TrackerFactory
from trackers.models import Tracker

pytestmark = pytest.mark.django_db(transaction=False)

MARK = "ALICEMARK"  # in the name of every object of alice's: it must never reach bob
NOW = timezone.now()
RANGE = (
    f"starts_at={(NOW - dt.timedelta(days=1)):%Y-%m-%dT%H:%M:%SZ}"
    f"&ends_at={(NOW + dt.timedelta(hours=1)):%Y-%m-%dT%H:%M:%SZ}"
)


@dataclass(frozen=True)
class Route:
    """How the walk requests one pattern: the object that fills `{pk}` (a key of the
    `alices` fixture), a query string it needs, and bodies for unsafe methods."""

    fill: str | None = None  # None: a list or a page without ids
    query: str = ""
    body: dict[str, Any] | None = None
    personal: bool = False  # not owner data (schema, docs): everyone authenticated gets it
    shows: str | None = None  # the object whose id staff must see (default: `fill`)


# Patterns as the resolver spells them, normalised: converters and named groups -> {name}.
ROUTES: dict[str, Route] = {
    "trackers": Route(body={"file": "x"}, shows="tracker"),
    "trackers/{pk}": Route(fill="tracker", body={"name": "bob was here"}),
    "trackers/{pk}/locations": Route(fill="tracker", query=RANGE, shows="report"),
    "locations": Route(query=RANGE, shows="report"),
    "latest": Route(shows="tracker"),
    "geofences": Route(
        body={"name": "b", "center": {"latitude": 1, "longitude": 1}, "radius_m": 9},
        shows="geofence",
    ),
    "geofences/{pk}": Route(fill="geofence", body={"name": "bob was here"}),
    "events": Route(shows="event"),
    "events/{pk}": Route(fill="event"),
    "alert-rules": Route(
        body={"name": "b", "event_kinds": ["enter"], "channels": ["redis"]}, shows="rule"
    ),
    "alert-rules/{pk}": Route(fill="rule", body={"name": "bob was here"}),
    "deliveries": Route(shows="delivery"),
    "deliveries/{pk}": Route(fill="delivery"),
    "deliveries/{pk}/retry": Route(fill="delivery"),
    "tokens": Route(body={"name": "bob's"}, shows="token"),
    "tokens/{pk}": Route(fill="token"),
    "me": Route(personal=True),
    "schema": Route(personal=True),
    "docs": Route(personal=True),
    "redoc": Route(personal=True),
    ".*": Route(personal=True),  # the catch-all 404
}
# Foreign ids in bodies that create: bob naming alice's objects gets a 400, never a link.
FOREIGN_BODIES = {
    "geofences": lambda a: {"trackers": [a["tracker"].pk]},
    "alert-rules": lambda a: {"geofences": [a["geofence"].pk], "trackers": [a["tracker"].pk]},
    "trackers/{pk}": lambda a: {"geofences": [a["geofence"].pk]},
}


def _normalise(pattern: str) -> str:
    pattern = pattern.removeprefix("^").removesuffix("$").removesuffix("\\Z")
    pattern = re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", pattern)
    return re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", pattern)


def api_patterns() -> list[tuple[str, Any]]:
    """(normalised route under /api/v1/, callback) of every pattern the resolver has there."""
    found: list[tuple[str, Any]] = []

    def walk(patterns: list[Any], prefix: str) -> None:
        for p in patterns:
            route = prefix + _normalise(str(p.pattern))
            if isinstance(p, URLResolver):
                walk(p.url_patterns, route)
            elif isinstance(p, URLPattern) and route.startswith("api/v1/"):
                found.append((route.removeprefix("api/v1/"), p.callback))

    walk(get_resolver().url_patterns, "")
    return found


def methods_of(callback: Any) -> list[str]:
    """The methods a pattern's view answers (HEAD, OPTIONS aside)."""
    view = callback.cls if hasattr(callback, "cls") else callback.view_class
    offered = set(getattr(callback, "actions", None) or {})
    if not offered:
        offered = {m for m in view.http_method_names if hasattr(view, m)}
    return sorted((offered & set(view.http_method_names)) - {"head", "options", "trace"})


@pytest.fixture
def alices(alice: Any) -> dict[str, Any]:
    tracker = TrackerFactory(owner=alice, name=f"{MARK} bike", last_position=Point(13.4, 52.5))
    fence = Geofence.objects.create(
        owner=alice,
        name=f"{MARK} home",
        kind=FenceKind.CIRCLE,
        center=Point(13.4, 52.5),
        radius_m=300,
    )
    fence.trackers.add(tracker)
    report = LocationReport.objects.create(
        tracker=tracker,
        timestamp=NOW - dt.timedelta(minutes=5),
        point=Point(13.4, 52.5, srid=4326),
        horizontal_accuracy=10,
        confidence=1,
        status=0,
        payload=b"alice-payload",
        fetched_at=NOW,
    )
    event = GeofenceEvent.objects.create(
        tracker=tracker,
        geofence=fence,
        kind=EventKind.ENTER,
        report=report,
        occurred_at=report.timestamp,
        dedupe_key="alice-enter",
    )
    rule = AlertRule.objects.create(
        owner=alice, name=f"{MARK} rule", event_kinds=[EventKind.ENTER], channels=[Channel.REDIS]
    )
    delivery = AlertDelivery.objects.create(
        event=event, rule=rule, channel=Channel.REDIS, status=DeliveryStatus.FAILED
    )
    token, _ = create_token(alice, f"{MARK} token", None)
    latest.maintain(force_refresh=True)
    return {
        "tracker": tracker,
        "geofence": fence,
        "report": report,
        "event": event,
        "rule": rule,
        "delivery": delivery,
        "token": token.details,
    }


def snapshot(alice: Any) -> dict[str, Any]:
    """Everything of alice's, as stored: the walk must leave it exactly so."""
    return {
        "trackers": list(Tracker.objects.filter(owner=alice).values().order_by("pk")),
        "fences": list(Geofence.objects.filter(owner=alice).values("pk", "name", "radius_m")),
        "fence trackers": list(Geofence.trackers.through.objects.values().order_by("pk")),
        "reports": list(LocationReport.objects.values("pk", "tracker_id", "timestamp")),
        "events": list(GeofenceEvent.objects.values().order_by("pk")),
        "rules": list(AlertRule.objects.filter(owner=alice).values("pk", "name", "is_active")),
        "rule links": list(AlertRule.geofences.through.objects.values().order_by("pk")),
        "deliveries": list(AlertDelivery.objects.values().order_by("pk")),
        "tokens": list(AuthToken.objects.filter(user=alice).values("pk")),
        "token details": list(TokenDetails.objects.filter(token__user=alice).values()),
    }


def url_for(route: str, spec: Route, alices: dict[str, Any]) -> str:
    path = route if route != ".*" else "no/such/route"
    if spec.fill:
        path = path.replace("{pk}", str(alices[spec.fill].pk))
    assert "{" not in path, f"the walk cannot fill {route!r}"
    return f"/api/v1/{path}" + (f"?{spec.query}" if spec.query else "")


def request(client: APIClient, method: str, url: str, body: dict[str, Any] | None) -> Any:
    if method == "get":
        return client.get(url)
    return getattr(client, method)(url, body or {}, format="json")


def test_the_walk_knows_every_pattern() -> None:
    found = {route for route, _ in api_patterns()}
    unknown = found - set(ROUTES)
    assert not unknown, f"add these /api/v1/ patterns to the tenancy walk: {sorted(unknown)}"
    assert not set(ROUTES) - found, f"stale entries: {sorted(set(ROUTES) - found)}"


def test_bob_never_gets_alices_data(alice: Any, alices: dict[str, Any], bob_client: APIClient):
    before = snapshot(alice)
    checked = 0
    for route, callback in api_patterns():
        spec = ROUTES[route]
        url = url_for(route, spec, alices)
        for method in methods_of(callback):
            body = spec.body
            if method != "get" and route in FOREIGN_BODIES:
                body = {**(body or {}), **FOREIGN_BODIES[route](alices)}
            response = request(bob_client, method, url, body)
            where = f"{method.upper()} {url} -> {response.status_code}"
            text = response.content.decode(errors="replace")
            assert MARK not in text, where
            assert response.status_code < 500, where
            if spec.fill:
                assert response.status_code == 404, where
            elif method == "get" and not spec.personal:
                assert response.status_code == 200, where
                data = response.json()["data"]
                rows = data["results"] if isinstance(data, dict) else data
                if route == "tokens":  # bob's own token only
                    assert alices["token"].pk not in [r["id"] for r in rows], where
                else:
                    assert rows == [], where
            elif method != "get" and route in FOREIGN_BODIES:
                assert response.status_code == 400, where
            checked += 1
    assert checked >= len(ROUTES)
    assert snapshot(alice) == before


def test_bob_gets_no_geojson_of_alices(alices: dict[str, Any], bob_client: APIClient) -> None:
    for url in ("/api/v1/geofences?format=geojson", "/api/v1/latest?format=geojson"):
        body = bob_client.get(url).json()
        assert body["features"] == [], url


def test_staff_sees_alices_objects(alices: dict[str, Any], staff_client: APIClient) -> None:
    for route, callback in api_patterns():
        spec = ROUTES[route]
        if spec.personal or "get" not in methods_of(callback):
            continue
        url = url_for(route, spec, alices)
        response = staff_client.get(url)
        assert response.status_code == 200, f"GET {url} -> {response.status_code}"
        data = response.json()["data"]
        rows = data.get("results", [data])
        expected = alices[spec.shows or spec.fill].pk  # type: ignore[index]
        key = "tracker" if route == "latest" else "id"
        assert expected in [row[key] for row in rows], url


def test_alice_sees_her_own(alices: dict[str, Any], alice_client: APIClient) -> None:
    for name, route in (
        ("tracker", "trackers"),
        ("geofence", "geofences"),
        ("rule", "alert-rules"),
    ):
        data = alice_client.get(f"/api/v1/{route}").json()["data"]
        assert [r["id"] for r in data["results"]] == [alices[name].pk]
    rows = alice_client.get(f"/api/v1/locations?{RANGE}").json()["data"]["results"]
    assert [r["id"] for r in rows] == [alices["report"].pk]


def test_schema_is_for_any_authenticated_user(bob_client: APIClient, anon_client: APIClient):
    assert anon_client.get("/api/v1/schema").status_code == 401
    response = bob_client.get("/api/v1/schema", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    paths = json.loads(response.content)["paths"]
    assert "/api/v1/trackers" in paths
    assert not any(p.startswith("/fetch") or p.startswith("/queue") for p in paths)
