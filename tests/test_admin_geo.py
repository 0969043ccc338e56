"""The geofence pages of the admin: fences drawn on the map, events, rules, deliveries, latest
locations. (Every page of every model, secrets never decrypted: tests/test_admin.py.)"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from django.contrib.gis.geos import Point, Polygon
from django.db import connection
from django.db.models import Model
from django.test import Client
from django.urls import reverse

from geofences.models import (
    AlertDelivery,
    AlertRule,
    DeliveryStatus,
    FenceKind,
    Geofence,
    GeofenceEvent,
    GeofenceState,
)
from locations import latest
from locations.models import LatestLocation, LocationReport
from monitoring.admin import geo
from trackers import fields

from .factories import TrackerFactory, UserFactory

pytestmark = pytest.mark.django_db

NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)
# A square of about 700 x 1100 m in Berlin, in longitude/latitude.
SQUARE = [(13.40, 52.51), (13.41, 52.51), (13.41, 52.52), (13.40, 52.52), (13.40, 52.51)]
BOW_TIE = [(13.40, 52.51), (13.41, 52.52), (13.41, 52.51), (13.40, 52.52), (13.40, 52.51)]


def url(model: type[Model], view: str, *args: Any) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


def drawn(coords: list[tuple[float, float]]) -> str:
    """What the map widget writes into its hidden textarea: GeoJSON in the map's projection."""
    polygon = Polygon(coords, srid=4326)
    polygon.transform(3857)
    return polygon.json


def fence_form(owner: Any, **fields: Any) -> dict[str, Any]:
    return {
        "name": "yard",
        "owner": owner.pk,
        "kind": FenceKind.POLYGON,
        "is_active": "on",
        "center": "",
        "radius_m": "",
        "area": "",
        "trackers": [],
        "schedule": "{}",
        "time_zone": "UTC",
        "_save": "Save",
        **fields,
    }


def form_errors(response: Any) -> dict[str, list[str]]:
    assert response.status_code == 200, "the form was accepted"
    return dict(response.context["adminform"].form.errors)


# --- fences on the map ------------------------------------------------------------------
def test_a_polygon_drawn_on_the_map_makes_a_fence(admin_client: Client):
    owner = UserFactory()
    tracker = TrackerFactory(owner=owner)

    response = admin_client.post(
        url(Geofence, "add"), fence_form(owner, area=drawn(SQUARE), trackers=[tracker.pk])
    )

    assert response.status_code == 302
    fence = Geofence.objects.get(name="yard")
    assert fence.area.srid == 4326
    for corner, expected in zip(fence.area[0], SQUARE, strict=True):
        assert corner == pytest.approx(expected, abs=1e-9)
    assert fence.shape is not None
    assert list(fence.trackers.all()) == [tracker]


def test_a_polygon_typed_as_ewkt_makes_a_fence(admin_client: Client):
    owner = UserFactory()
    ewkt = f"SRID=4326;{Polygon(SQUARE).wkt}"
    response = admin_client.post(url(Geofence, "add"), fence_form(owner, area=ewkt))
    assert response.status_code == 302
    assert Geofence.objects.get(name="yard").area.equals_exact(Polygon(SQUARE), 1e-9)


def test_a_circle_is_a_centre_on_the_map_and_a_radius(admin_client: Client):
    owner = UserFactory()
    centre = Point(13.405, 52.52, srid=4326)
    centre.transform(3857)
    data = fence_form(owner, kind=FenceKind.CIRCLE, center=centre.json, radius_m="300")

    response = admin_client.post(url(Geofence, "add"), data)

    assert response.status_code == 302
    fence = Geofence.objects.get(name="yard")
    assert fence.center.coords == pytest.approx((13.405, 52.52))
    assert fence.radius_m == 300


def test_a_self_intersecting_polygon_is_an_error_on_the_area(admin_client: Client):
    owner = UserFactory()
    response = admin_client.post(url(Geofence, "add"), fence_form(owner, area=drawn(BOW_TIE)))
    errors = form_errors(response)
    assert list(errors) == ["area"]
    assert "not simple" in errors["area"][0]
    assert not Geofence.objects.exists()


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"kind": FenceKind.CIRCLE, "radius_m": "300"}, "center", "needs a centre"),
        ({"kind": FenceKind.POLYGON}, "area", "needs its area"),
    ],
)
def test_a_missing_shape_is_an_error_on_its_field(
    admin_client: Client, fields: dict, field: str, words: str
):
    errors = form_errors(
        admin_client.post(url(Geofence, "add"), fence_form(UserFactory(), **fields))
    )
    assert words in errors[field][0]


def test_a_circle_too_large_is_an_error_on_the_radius(admin_client: Client, settings: Any):
    settings.GEOFENCE_MAX_RADIUS_M = 1000
    centre = Point(13.405, 52.52, srid=4326)
    data = fence_form(
        UserFactory(), kind=FenceKind.CIRCLE, center=f"SRID=4326;{centre.wkt}", radius_m="5000"
    )
    errors = form_errors(admin_client.post(url(Geofence, "add"), data))
    assert list(errors) == ["radius_m"]


def test_the_fence_page_has_both_maps(admin_client: Client):
    fence = Geofence.objects.create(
        owner=UserFactory(), name="yard", kind=FenceKind.POLYGON, area=Polygon(SQUARE, srid=4326)
    )
    page = admin_client.get(url(Geofence, "change", fence.pk)).text
    assert 'id="id_center"' in page
    assert 'id="id_area"' in page
    assert "gis/js/OLMapWidget.js" in page


# --- events, states, deliveries ---------------------------------------------------------
@pytest.fixture
def happenings() -> dict[str, Any]:
    """Two trackers of one owner, a fence, events and deliveries of both."""
    owner = UserFactory()
    depot = Geofence.objects.create(
        owner=owner, name="depot", kind=FenceKind.CIRCLE, center=Point(13.405, 52.52), radius_m=300
    )
    alpha, beta = (
        TrackerFactory(name="alpha", owner=owner),
        TrackerFactory(name="beta", owner=owner),
    )
    rule = AlertRule.objects.create(
        owner=owner, name="depot alerts", event_kinds=["enter", "exit"], channels=["redis"]
    )
    events = {}
    for tracker, kind, when in [
        (alpha, "enter", NOW - dt.timedelta(days=40)),
        (alpha, "exit", NOW),
        (beta, "enter", NOW),
    ]:
        events[(tracker.name, kind)] = GeofenceEvent.objects.create(
            tracker=tracker,
            geofence=depot,
            kind=kind,
            occurred_at=when,
            dedupe_key=f"test:{uuid.uuid4()}",
        )
    failed = AlertDelivery.objects.create(
        event=events[("alpha", "exit")], rule=rule, channel="redis", status="failed", attempts=8
    )
    delivered = AlertDelivery.objects.create(
        event=events[("beta", "enter")], rule=rule, channel="redis", status="delivered"
    )
    GeofenceState.objects.create(tracker=alpha, geofence=depot, side="outside")
    return {
        "owner": owner,
        "depot": depot,
        "alpha": alpha,
        "beta": beta,
        "rule": rule,
        "events": events,
        "failed": failed,
        "delivered": delivered,
    }


def listed(response: Any) -> list[Any]:
    assert response.status_code == 200
    return list(response.context["cl"].result_list)


def test_events_filter_by_kind_tracker_fence_and_date(admin_client: Client, happenings: dict):
    events, changelist = happenings["events"], url(GeofenceEvent, "changelist")
    by_kind = listed(admin_client.get(changelist, {"kind": "enter"}))
    by_tracker = listed(admin_client.get(changelist, {"tracker": happenings["beta"].pk}))
    by_fence = listed(admin_client.get(changelist, {"geofence": happenings["depot"].pk}))
    by_month = listed(
        admin_client.get(changelist, {"occurred_at__year": 2025, "occurred_at__month": 6})
    )
    assert set(by_kind) == {events[("alpha", "enter")], events[("beta", "enter")]}
    assert by_tracker == [events[("beta", "enter")]]
    assert len(by_fence) == 3
    assert set(by_month) == {events[("alpha", "exit")], events[("beta", "enter")]}


def test_a_big_fleet_filters_by_a_tracker_clicked_in_the_list(
    admin_client: Client, happenings: dict, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(geo, "FILTER_CHOICES_LIMIT", 1)  # two trackers: "too many" to list
    changelist = url(GeofenceEvent, "changelist")
    page = admin_client.get(changelist)
    assert f'href="?tracker={happenings["beta"].pk}"' in page.text
    filtered = listed(admin_client.get(changelist, {"tracker": happenings["beta"].pk}))
    assert filtered == [happenings["events"][("beta", "enter")]]


def test_events_cannot_be_added_or_edited(admin_client: Client, happenings: dict):
    event = happenings["events"][("beta", "enter")]
    assert admin_client.get(url(GeofenceEvent, "add")).status_code == 403
    response = admin_client.post(url(GeofenceEvent, "change", event.pk), {"kind": "exit"})
    assert response.status_code == 403


def test_states_list_read_only(admin_client: Client, happenings: dict):
    rows = listed(admin_client.get(url(GeofenceState, "changelist"), {"side__exact": "outside"}))
    assert [r.tracker for r in rows] == [happenings["alpha"]]
    assert admin_client.get(url(GeofenceState, "add")).status_code == 403


def test_deliveries_filter_by_status_and_event(admin_client: Client, happenings: dict):
    changelist = url(AlertDelivery, "changelist")
    failed = listed(admin_client.get(changelist, {"status__exact": "failed"}))
    of_event = listed(admin_client.get(changelist, {"event": happenings["delivered"].event_id}))
    assert failed == [happenings["failed"]]
    assert of_event == [happenings["delivered"]]


def test_retry_sends_failed_deliveries_again_and_leaves_delivered_ones(
    admin_client: Client, happenings: dict
):
    failed, delivered = happenings["failed"], happenings["delivered"]

    response = admin_client.post(
        url(AlertDelivery, "changelist"),
        {"action": "retry", "_selected_action": [failed.pk, delivered.pk]},
        follow=True,
    )

    failed.refresh_from_db()
    delivered.refresh_from_db()
    assert failed.status == DeliveryStatus.PENDING
    assert failed.next_attempt_at is not None
    assert delivered.status == DeliveryStatus.DELIVERED
    assert "1 delivery(ies) queued to be sent again" in response.text
    assert "1 delivered or suppressed delivery(ies) left alone" in response.text


# --- alert rules ------------------------------------------------------------------------
def rule_form(owner: Any, **fields: Any) -> dict[str, Any]:
    return {
        "name": "gate",
        "owner": owner.pk,
        "is_active": "on",
        "event_kinds": ["enter", "exit"],
        "geofences": [],
        "trackers": [],
        "channels": ["webhook", "redis"],
        "webhook_url": "https://hooks.example.com/gate",
        "email_to": "",
        "schedule": "{}",
        "time_zone": "UTC",
        "_save": "Save",
        **fields,
    }


def stored_secret(rule: AlertRule) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT webhook_secret FROM geofences_alertrule WHERE id = %s", [rule.pk])
        return cursor.fetchone()[0]


def test_a_webhook_rule_shows_its_secret_once(admin_client: Client):
    owner = UserFactory()

    response = admin_client.post(url(AlertRule, "add"), rule_form(owner), follow=True)

    rule = AlertRule.objects.get(name="gate")
    secret = rule.webhook_secret
    assert (rule.event_kinds, rule.channels) == (["enter", "exit"], ["webhook", "redis"])
    assert secret
    assert secret in response.text
    assert secret not in stored_secret(rule)  # encrypted at rest
    page = admin_client.get(url(AlertRule, "change", rule.pk)).text
    assert secret not in page
    assert "set (never shown again)" in page
    # Saving it again keeps the secret and does not show it.
    again = admin_client.post(
        url(AlertRule, "change", rule.pk), rule_form(owner, name="gate 2"), follow=True
    )
    rule.refresh_from_db()
    assert rule.webhook_secret == secret
    assert secret not in again.text


def test_the_rule_form_offers_kinds_and_channels_as_checkboxes(admin_client: Client):
    page = admin_client.get(url(AlertRule, "add")).text
    assert 'type="checkbox" name="event_kinds" value="enter"' in page
    assert 'type="checkbox" name="channels" value="webhook"' in page


def test_a_webhook_rule_without_url_is_an_error_on_the_url(admin_client: Client):
    response = admin_client.post(url(AlertRule, "add"), rule_form(UserFactory(), webhook_url=""))
    assert "webhook_url" in form_errors(response)


def test_a_redis_only_rule_has_no_secret(admin_client: Client):
    data = rule_form(UserFactory(), channels=["redis"], webhook_url="")
    response = admin_client.post(url(AlertRule, "add"), data, follow=True)
    assert "Webhook secret of" not in response.text
    assert stored_secret(AlertRule.objects.get(name="gate")) is None


def test_a_new_webhook_secret_is_shown_once(admin_client: Client):
    rule = AlertRule.objects.create(
        owner=UserFactory(),
        name="gate",
        event_kinds=["enter"],
        channels=["webhook"],
        webhook_url="https://hooks.example.com/gate",
    )
    old = rule.webhook_secret
    response = admin_client.post(
        url(AlertRule, "changelist"),
        {"action": "new_webhook_secret", "_selected_action": [rule.pk]},
        follow=True,
    )
    rule.refresh_from_db()
    assert rule.webhook_secret != old
    assert rule.webhook_secret in response.text
    assert old not in response.text


# --- latest locations -------------------------------------------------------------------
def test_latest_locations_list_on_a_map_with_the_fences_they_are_in(
    admin_client: Client, happenings: dict
):
    alpha = happenings["alpha"]
    LocationReport.objects.create(
        tracker=alpha,
        timestamp=NOW,
        point=Point(13.405, 52.52, srid=4326),
        horizontal_accuracy=10,
        confidence=2,
        status=0,
        payload=uuid.uuid4().bytes,
        fetched_at=NOW,
    )
    GeofenceState.objects.filter(tracker=alpha).update(side="inside")
    latest.maintain(force_refresh=True)

    response = admin_client.get(url(LatestLocation, "changelist"), {"inside": "yes"})

    assert [row.tracker for row in listed(response)] == [alpha]
    assert 'id="id_positions"' in response.text
    assert "gis/js/OLMapWidget.js" in response.text
    assert '<td class="field-fences">depot</td>' in response.text
    page = admin_client.get(url(LatestLocation, "change", alpha.pk))
    assert 'id="id_point"' in page.text
    assert admin_client.get(url(LatestLocation, "delete", alpha.pk)).status_code == 403
    none_inside = admin_client.get(url(LatestLocation, "changelist"), {"inside": "no"})
    assert listed(none_inside) == []


def test_deleting_a_user_lists_their_rules_without_decrypting_a_secret(
    admin_client: Client, happenings: dict, monkeypatch: pytest.MonkeyPatch
):
    owner = happenings["owner"]
    AlertRule.objects.create(
        owner=owner,
        name="webhook alerts",
        event_kinds=["enter"],
        channels=["webhook"],
        webhook_url="https://hooks.example.com/a",
    )

    def refuse(token: str) -> str:
        raise AssertionError("the page decrypted a secret")

    monkeypatch.setattr(fields, "decrypt_text", refuse)
    page = admin_client.get(reverse("admin:auth_user_delete", args=[owner.pk]))
    rule_page = admin_client.get(url(AlertRule, "delete", happenings["rule"].pk))

    assert page.status_code == rule_page.status_code == 200
    assert "webhook alerts" in page.text
    assert "Alert deliverys: 2" in rule_page.text or "Alert deliveries: 2" in rule_page.text
