"""/api/v1/events (filters), /alert-rules (CRUD, validation), /deliveries (read, retry)."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

import pytest
from django.contrib.gis.geos import Point
from rest_framework.test import APIClient

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
from tests.factories import TrackerFactory
from trackers.models import Tracker

pytestmark = pytest.mark.django_db
T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
_keys = itertools.count()


def fence(owner: Any, name: str = "home") -> Geofence:
    return Geofence.objects.create(
        owner=owner, name=name, kind=FenceKind.CIRCLE, center=Point(13.4, 52.5), radius_m=300
    )


def event(tracker: Tracker, kind: str, minutes: int, geofence: Geofence | None = None) -> Any:
    return GeofenceEvent.objects.create(
        tracker=tracker,
        geofence=geofence,
        kind=kind,
        occurred_at=T0 + dt.timedelta(minutes=minutes),
        dedupe_key=f"test-{next(_keys)}",
    )


def rule(owner: Any, **fields: Any) -> AlertRule:
    return AlertRule.objects.create(
        owner=owner,
        name=fields.pop("name", "rule"),
        event_kinds=[EventKind.ENTER],
        channels=[Channel.REDIS],
        **fields,
    )


def ids(response: Any) -> list[int]:
    assert response.status_code == 200, response.content
    return [row["id"] for row in response.json()["data"]["results"]]


# --- events -------------------------------------------------------------------------------
@pytest.fixture
def story(alice: Any) -> dict[str, Any]:
    bike, car = TrackerFactory(owner=alice), TrackerFactory(owner=alice)
    home = fence(alice)
    return {
        "bike": bike,
        "car": car,
        "home": home,
        "enter": event(bike, EventKind.ENTER, 0, home),
        "exit": event(bike, EventKind.EXIT, 30, home),
        "first": event(car, EventKind.FIRST_SEEN, 60),
    }


def test_events_newest_first(story: dict[str, Any], alice_client: APIClient) -> None:
    rows = alice_client.get("/api/v1/events").json()["data"]["results"]
    assert [r["id"] for r in rows] == [story["first"].pk, story["exit"].pk, story["enter"].pk]
    assert rows[1]["geofence_name"] == "home"
    assert rows[0]["geofence"] is None
    assert rows[0]["kind"] == "first_seen"


def test_events_pages_are_newest_first_too(story: dict[str, Any], alice_client: APIClient):
    page = alice_client.get("/api/v1/events?limit=2").json()["data"]
    rest = alice_client.get(page["next"]).json()["data"]
    assert [r["id"] for r in rest["results"]] == [story["enter"].pk]
    assert rest["next"] is None


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("kind=enter", ["enter"]),
        ("tracker={car}", ["first"]),
        ("geofence={home}", ["exit", "enter"]),
        ("starts_at=2026-03-01T12:10:00Z", ["first", "exit"]),
        ("ends_at=2026-03-01T13:40:00%2B01:00", ["exit", "enter"]),
        ("starts_at=2026-03-01T12:10:00Z&ends_at=2026-03-01T12:40:00Z&kind=exit", ["exit"]),
    ],
)
def test_event_filters(
    story: dict[str, Any], alice_client: APIClient, query: str, expected: list[str]
) -> None:
    query = query.format(car=story["car"].pk, home=story["home"].pk)
    assert ids(alice_client.get(f"/api/v1/events?{query}")) == [story[n].pk for n in expected]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("starts_at=2026-03-01T12:10:00", "starts_at"),
        ("ends_at=yesterday", "ends_at"),
        ("starts_at=2026-03-02T00:00:00Z&ends_at=2026-03-01T00:00:00Z", "ends_at"),
        ("kind=teleported", "kind"),
        ("tracker=abc", "tracker"),
        ("geofence=-1", "geofence"),
        ("trackr=1", "trackr"),
    ],
)
def test_bad_event_filters_are_400(alice_client: APIClient, query: str, field: str) -> None:
    response = alice_client.get(f"/api/v1/events?{query}")
    assert response.status_code == 400
    assert list(response.json()["error"]["fields"]) == [field]


def test_filtering_by_another_users_tracker_finds_nothing(
    story: dict[str, Any], bob_client: APIClient
) -> None:
    assert ids(bob_client.get(f"/api/v1/events?tracker={story['bike'].pk}")) == []


# --- alert rules --------------------------------------------------------------------------
WEBHOOK_RULE = {
    "name": "arrivals",
    "event_kinds": ["enter", "exit"],
    "channels": ["webhook", "redis"],
    "webhook_url": "https://hooks.example.com/tracker",
}


def test_create_a_webhook_rule_shows_its_secret_once(alice: Any, alice_client: APIClient):
    home = fence(alice)
    response = alice_client.post(
        "/api/v1/alert-rules", {**WEBHOOK_RULE, "geofences": [home.pk]}, format="json"
    )
    assert response.status_code == 201, response.content
    data = response.json()["data"]
    stored = AlertRule.objects.get(pk=data["id"])
    assert data["webhook_secret"] == stored.webhook_secret
    assert len(stored.webhook_secret) > 20
    assert data["geofences"] == [home.pk]
    again = alice_client.get(f"/api/v1/alert-rules/{data['id']}").json()["data"]
    assert "webhook_secret" not in again
    patched = alice_client.patch(
        f"/api/v1/alert-rules/{data['id']}", {"name": "renamed"}, format="json"
    ).json()["data"]
    assert "webhook_secret" not in patched
    assert AlertRule.objects.get().webhook_secret == data["webhook_secret"]


def test_quiet_hours_and_time_zone(alice_client: APIClient) -> None:
    body = {
        "name": "nights off",
        "event_kinds": ["exit"],
        "channels": ["email"],
        "email_to": "me@example.com",
        "schedule": {"mon": [["22:00", "24:00"]]},
        "time_zone": "Europe/Berlin",
    }
    response = alice_client.post("/api/v1/alert-rules", body, format="json")
    assert response.status_code == 201
    assert AlertRule.objects.get().in_quiet_hours(dt.datetime(2026, 3, 2, 22, 30, tzinfo=dt.UTC))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"channels": ["pigeon"]}, "channels"),
        ({"channels": ["redis", "redis"]}, "channels"),
        ({"channels": ["webhook"], "webhook_url": ""}, "webhook_url"),
        ({"channels": ["email"]}, "email_to"),
        ({"webhook_url": "ftp://example.com/x"}, "webhook_url"),
        ({"event_kinds": ["teleport"]}, "event_kinds"),
        ({"schedule": {"mon": [["18:00", "08:00"]]}}, "schedule"),
        ({"time_zone": "Nowhere/City"}, "time_zone"),
        ({"secret": "mine"}, "secret"),
        ({"webhook_secret": "mine"}, "webhook_secret"),
    ],
)
def test_bad_rules_are_400_naming_the_field(
    alice_client: APIClient, change: dict[str, Any], field: str
) -> None:
    response = alice_client.post("/api/v1/alert-rules", {**WEBHOOK_RULE, **change}, format="json")
    assert response.status_code == 400, response.content
    # A list item's error names it: "channels.0".
    assert field in {name.split(".")[0] for name in response.json()["error"]["fields"]}
    assert not AlertRule.objects.exists()


@pytest.mark.parametrize("field", ["geofences", "trackers"])
def test_rule_refuses_another_users_fences_and_trackers(
    bob: Any, alice_client: APIClient, field: str
) -> None:
    foreign = fence(bob) if field == "geofences" else TrackerFactory(owner=bob)
    response = alice_client.post(
        "/api/v1/alert-rules", {**WEBHOOK_RULE, field: [foreign.pk]}, format="json"
    )
    assert response.status_code == 400
    assert list(response.json()["error"]["fields"]) == [field]


def test_delete_a_rule(alice: Any, alice_client: APIClient) -> None:
    mine = rule(alice)
    assert alice_client.delete(f"/api/v1/alert-rules/{mine.pk}").status_code == 204
    assert not AlertRule.objects.exists()


# --- deliveries ---------------------------------------------------------------------------
def delivery(owner: Any, status: str) -> AlertDelivery:
    tracker = TrackerFactory(owner=owner)
    return AlertDelivery.objects.create(
        event=event(tracker, EventKind.ENTER, 0, fence(owner)),
        rule=rule(owner),
        channel=Channel.REDIS,
        status=status,
        attempts=8,
        last_error="timeout",
    )


def test_list_and_retrieve_deliveries(alice: Any, alice_client: APIClient) -> None:
    failed = delivery(alice, DeliveryStatus.FAILED)
    assert ids(alice_client.get("/api/v1/deliveries")) == [failed.pk]
    data = alice_client.get(f"/api/v1/deliveries/{failed.pk}").json()["data"]
    assert (data["status"], data["attempts"], data["last_error"]) == ("failed", 8, "timeout")


def test_retry_a_failed_delivery(alice: Any, alice_client: APIClient) -> None:
    failed = delivery(alice, DeliveryStatus.FAILED)
    response = alice_client.post(f"/api/v1/deliveries/{failed.pk}/retry")
    assert response.status_code == 200
    assert response.json()["data"]["status"] == "pending"
    failed.refresh_from_db()
    assert failed.status == DeliveryStatus.PENDING
    assert failed.next_attempt_at is not None


def test_retry_a_delivered_one_is_409(alice: Any, alice_client: APIClient) -> None:
    done = delivery(alice, DeliveryStatus.DELIVERED)
    response = alice_client.post(f"/api/v1/deliveries/{done.pk}/retry")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "conflict"
    done.refresh_from_db()
    assert done.status == DeliveryStatus.DELIVERED


def test_retry_another_users_delivery_is_404(alice: Any, bob_client: APIClient) -> None:
    failed = delivery(alice, DeliveryStatus.FAILED)
    assert bob_client.post(f"/api/v1/deliveries/{failed.pk}/retry").status_code == 404
    failed.refresh_from_db()
    assert failed.status == DeliveryStatus.FAILED
