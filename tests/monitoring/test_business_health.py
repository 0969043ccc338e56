"""Business health: the latest-location view (and its self-repair), the processing backlog,
geocoding, deliveries and quiet trackers in /health, /metrics and the processor's heartbeat."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import psycopg
import pytest
from django.conf import settings as django_settings
from django.contrib.gis.geos import Point
from django.db import connection
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from geofences import worker as geofence_worker
from geofences.models import (
    AlertDelivery,
    AlertRule,
    DeliveryStatus,
    FenceKind,
    Geofence,
    GeofenceEvent,
    GeofenceState,
)
from locations import geocoding, latest
from locations.latest_tasks import refresh_latest
from locations.models import Address, LatestLocation, LocationReport, QueuedReport
from monitoring import health
from monitoring.models import ServiceInstance
from trackers.models import Tracker

from ..factories import AppleAccountFactory, TrackerFactory, UserFactory

pytestmark = pytest.mark.django_db


def ago(**kwargs: float) -> dt.datetime:
    return timezone.now() - dt.timedelta(**kwargs)


def report(tracker: Tracker, queued: bool = False, **fields: Any) -> LocationReport:
    values = {
        "timestamp": ago(hours=1),
        "point": Point(13.405, 52.52, srid=4326),
        "horizontal_accuracy": 12,
        "confidence": 2,
        "status": 0,
        "payload": uuid.uuid4().bytes,
        "fetched_at": timezone.now(),
        **fields,
    }
    stored = LocationReport.objects.create(tracker=tracker, **values)
    if queued:
        QueuedReport.objects.create(report=stored, tracker=tracker, stored_at=stored.fetched_at)
    return stored


def fence(owner: Any, name: str = "depot", **fields: Any) -> Geofence:
    values = {"kind": FenceKind.CIRCLE, "center": Point(13.405, 52.52), "radius_m": 300}
    return Geofence.objects.create(owner=owner, name=name, **{**values, **fields})


def event(
    tracker: Tracker, geofence: Geofence | None, occurred_at: dt.datetime, kind: str = "enter"
):
    return GeofenceEvent.objects.create(
        tracker=tracker,
        geofence=geofence,
        kind=kind,
        occurred_at=occurred_at,
        dedupe_key=f"test:{uuid.uuid4()}",
    )


@pytest.fixture
def alive() -> None:
    """A live worker and a usable account: what /health needs to answer 200."""
    now = timezone.now()
    ServiceInstance.objects.create(
        service_name="fetch_trackers",
        instance_id=f"fetch_trackers:host:1:{uuid.uuid4().hex[:6]}",
        hostname="host",
        pid=1,
        started_at=now - dt.timedelta(hours=1),
        last_heartbeat=now,
        heartbeat_count=60,
    )
    AppleAccountFactory()


def get_health(client: Client) -> tuple[int, dict[str, Any]]:
    response = client.get("/health")
    return response.status_code, response.json()


def execute(sql: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql)


def view_rows() -> dict[int, int]:
    return dict(LatestLocation.objects.values_list("tracker_id", "report_id"))


# --- the latest-location view -----------------------------------------------------------
def test_migrated_view_is_the_one_the_code_expects():
    state = latest.inspect()
    assert (state.kind, state.invalid_reason()) == ("m", "")


def test_a_new_report_shows_after_a_refresh():
    tracker = TrackerFactory()
    new = report(tracker)
    assert view_rows() == {}

    latest.maintain(force_refresh=True)

    assert view_rows() == {tracker.pk: new.pk}


def test_the_row_is_the_newest_report_with_address_and_active_fences_inside():
    owner = UserFactory()
    tracker = TrackerFactory(owner=owner)
    address = Address.objects.create(
        cell="c1", provider="test", label="1 Main St", point=Point(13.405, 52.52)
    )
    newest = report(tracker, timestamp=ago(minutes=5), address=address)
    report(tracker, timestamp=ago(hours=2))  # created later, older: not the latest
    inside, outside, retired = fence(owner, "a"), fence(owner, "b"), fence(owner, "c")
    Geofence.objects.filter(pk=retired.pk).update(is_active=False)
    for f, side in [(inside, "inside"), (outside, "outside"), (retired, "inside")]:
        GeofenceState.objects.create(tracker=tracker, geofence=f, side=side)

    latest.maintain(force_refresh=True)

    row = LatestLocation.objects.get(tracker=tracker)
    assert (row.report_id, row.address, row.fence_ids) == (newest.pk, "1 Main St", [inside.pk])
    assert row.horizontal_accuracy == 12
    assert row.point.coords == pytest.approx((13.405, 52.52))


def test_the_schedule_task_refreshes_the_view():
    tracker = TrackerFactory()
    new = report(tracker)
    result = refresh_latest()
    assert (result["action"], result["rows"]) == ("refreshed", 1)
    assert view_rows() == {tracker.pk: new.pk}


def test_health_recreates_a_dropped_view(client: Client, alive: None):
    tracker = TrackerFactory()
    new = report(tracker)
    execute(f"DROP MATERIALIZED VIEW {latest.VIEW}")

    code, body = get_health(client)

    check = body["checks"]["latest_view"]
    assert (code, check["status"], check["problem"], check["action"]) == (
        200,
        "degraded",
        "missing",
        "recreated",
    )
    assert view_rows() == {tracker.pk: new.pk}
    assert latest.inspect().invalid_reason() == ""


# Ways to break the view, and the reason the check gives.
OTHER_DEFINITION = latest.DEFINITION.replace('"timestamp" DESC', '"timestamp" ASC')
CORRUPTIONS = {
    "other columns": (
        [
            f"DROP MATERIALIZED VIEW {latest.VIEW}",
            f"CREATE MATERIALIZED VIEW {latest.VIEW} AS SELECT 1::bigint AS tracker_id",
        ],
        "columns differ",
    ),
    "other definition, same columns": (
        [
            f"DROP MATERIALIZED VIEW {latest.VIEW}",
            *latest.create_statements(OTHER_DEFINITION)[:2],  # no fingerprint comment
        ],
        "another definition",
    ),
    "unique index dropped": ([f"DROP INDEX {latest.UNIQUE_INDEX}"], "unique index"),
    "with no data": (
        [
            f"DROP MATERIALIZED VIEW {latest.VIEW}",
            *[s.replace("WITH DATA", "WITH NO DATA") for s in latest.create_statements()],
        ],
        "not populated",
    ),
    "a plain view": (
        [
            f"DROP MATERIALIZED VIEW {latest.VIEW}",
            f"CREATE VIEW {latest.VIEW} AS {latest.DEFINITION}",
        ],
        "a plain view",
    ),
}


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_health_detects_and_repairs_a_corrupted_view(client: Client, alive: None, corruption: str):
    tracker = TrackerFactory()
    new = report(tracker)
    statements, reason = CORRUPTIONS[corruption]
    for statement in statements:
        execute(statement)
    assert reason in latest.inspect().invalid_reason()

    code, body = get_health(client)

    check = body["checks"]["latest_view"]
    assert (code, check["status"], check["problem"], check["action"]) == (
        200,
        "degraded",
        "invalid",
        "recreated",
    )
    assert reason in check["reason"]
    assert latest.inspect().invalid_reason() == ""
    assert view_rows() == {tracker.pk: new.pk}
    # And it refreshes concurrently again (which needs the unique index and data).
    assert latest.maintain(force_refresh=True).action == "refreshed"


def test_health_refreshes_a_stale_view(client: Client, alive: None, settings: Any):
    tracker = TrackerFactory()
    latest.maintain(force_refresh=True)
    new = report(tracker)
    settings.LATEST_VIEW_MAX_AGE_SECONDS = 0  # anything refreshed before now is too old

    code, body = get_health(client)

    check = body["checks"]["latest_view"]
    assert (code, check["status"], check["problem"], check["action"]) == (
        200,
        "degraded",
        "stale",
        "refreshed",
    )
    assert view_rows() == {tracker.pk: new.pk}


def test_a_fresh_view_is_left_alone(client: Client, alive: None):
    tracker = TrackerFactory()
    first = report(tracker)
    latest.maintain(force_refresh=True)
    report(TrackerFactory())  # not in the view until the next refresh
    code, body = get_health(client)
    check = body["checks"]["latest_view"]
    assert (code, check["status"], check["action"]) == (200, "ok", "none")
    assert view_rows() == {tracker.pk: first.pk}


def test_an_empty_view_while_reports_exist_is_stale():
    tracker = TrackerFactory()
    new = report(tracker)
    outcome = latest.maintain()
    assert (outcome.problem, outcome.action) == ("stale", "refreshed")
    assert view_rows() == {tracker.pk: new.pk}


def test_a_repair_under_way_elsewhere_is_not_waited_for(client: Client, alive: None):
    execute(f"DROP MATERIALIZED VIEW {latest.VIEW}")
    db = django_settings.DATABASES["default"]
    other = psycopg.connect(
        dbname=connection.settings_dict["NAME"],
        user=db["USER"],
        password=db["PASSWORD"],
        host=db["HOST"] or "127.0.0.1",
        port=db["PORT"] or 5432,
        autocommit=True,
    )
    try:
        other.execute("SELECT pg_advisory_lock(%s)", [latest.LOCK_KEY])
        code, body = get_health(client)
    finally:
        other.close()
    check = body["checks"]["latest_view"]
    assert (code, check["status"], check["action"]) == (200, "degraded", "busy")


def test_a_table_in_the_views_place_is_never_dropped(client: Client, alive: None):
    execute(f"DROP MATERIALIZED VIEW {latest.VIEW}")
    execute(f"CREATE TABLE {latest.VIEW} (x int)")

    code, body = get_health(client)

    check = body["checks"]["latest_view"]
    assert (code, body["failing"], check["action"]) == (503, ["latest_view"], "failed")
    assert latest.inspect().kind == "r"


# --- processing backlog -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("stored", "status", "code"),
    [(None, "ok", 200), (60, "ok", 200), (600, "degraded", 200), (7200, "failing", 503)],
)
def test_processing_backlog_by_the_age_of_its_oldest_report(
    client: Client, alive: None, stored: int | None, status: str, code: int
):
    tracker = TrackerFactory()
    report(tracker)  # processed
    if stored is not None:
        report(tracker, queued=True, fetched_at=ago(seconds=stored))
        report(tracker, queued=True, fetched_at=ago(seconds=10))

    response_code, body = get_health(client)

    check = body["checks"]["processing"]
    assert (response_code, check["status"]) == (code, status)
    assert check["pending_reports"] == (0 if stored is None else 2)
    if stored is not None:
        assert check["oldest_pending_age_seconds"] == pytest.approx(stored, abs=30)


# --- geocoding --------------------------------------------------------------------------
STATS = {
    "cache_size": 40,
    "cache_hits": 900,
    "reuses": 50,
    "provider_requests": 50,
    "provider_failures": 2,
    "hit_rate": 0.95,
    "ungeocoded": 7,
    "pending_requests": 3,
}


@pytest.fixture
def geocoder(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Known figures from locations.geocoding.cache_stats()."""
    stats = dict(STATS)
    monkeypatch.setattr(geocoding, "cache_stats", lambda: stats)
    return stats


def test_health_shows_the_geocoders_figures(client: Client, alive: None, geocoder: dict):
    code, body = get_health(client)
    check = body["checks"]["geocoding"]
    assert (code, check["status"]) == (200, "ok")
    assert {k: check[k] for k in STATS} == STATS
    assert "7 report(s) without an address; cache hit rate 95%" in check["detail"]


def test_a_geocoder_that_raises_degrades_and_never_fails_health(
    client: Client, alive: None, monkeypatch: pytest.MonkeyPatch
):
    def broken() -> dict:
        raise RuntimeError("boom")

    monkeypatch.setattr(geocoding, "cache_stats", broken)
    code, body = get_health(client)
    assert (code, body["checks"]["geocoding"]["status"]) == (200, "degraded")
    assert "trackerfleet_processing_backlog" in client.get("/metrics").text


# --- deliveries -------------------------------------------------------------------------
def delivery(status: str, created: dt.datetime | None = None) -> AlertDelivery:
    owner = UserFactory()
    tracker = TrackerFactory(owner=owner)
    rule = AlertRule.objects.create(
        owner=owner, name="r", event_kinds=["enter"], channels=["redis"]
    )
    d = AlertDelivery.objects.create(
        event=event(tracker, fence(owner), ago(minutes=5)),
        rule=rule,
        channel="redis",
        status=status,
    )
    if created is not None:
        AlertDelivery.objects.filter(pk=d.pk).update(created_at=created)
    return d


@pytest.mark.parametrize(
    ("status", "created", "expected"),
    [
        (DeliveryStatus.DELIVERED, None, "ok"),
        (DeliveryStatus.PENDING, None, "ok"),
        (DeliveryStatus.PENDING, 3600, "degraded"),
        (DeliveryStatus.FAILED, None, "degraded"),
    ],
)
def test_failed_or_late_deliveries_degrade(
    client: Client, alive: None, status: str, created: int | None, expected: str
):
    delivery(status, ago(seconds=created) if created else None)
    code, body = get_health(client)
    check = body["checks"]["deliveries"]
    assert (code, check["status"], check[status]) == (200, expected, 1)


# --- trackers without geofence events ---------------------------------------------------
def test_quiet_trackers_are_those_of_fenced_owners_without_a_recent_fence_event(settings: Any):
    settings.GEOFENCE_EVENT_QUIET_DAYS = 7
    fenced, unfenced, retired = UserFactory(), UserFactory(), UserFactory()
    depot = fence(fenced)
    fence(retired, is_active=False)
    _quiet, busy, long_ago, tracker_events_only = (TrackerFactory(owner=fenced) for _ in range(4))
    TrackerFactory(owner=unfenced)
    TrackerFactory(owner=retired)
    Tracker.objects.update(created_at=ago(days=30))
    TrackerFactory(owner=fenced)  # a week old at most: not judged yet
    event(busy, depot, ago(days=1))
    event(long_ago, depot, ago(days=9))
    event(tracker_events_only, None, ago(days=1), kind="first_seen")

    assert health.quiet_trackers() == 3  # quiet, long_ago, tracker_events_only


def test_quiet_trackers_are_informational(client: Client, alive: None):
    owner = UserFactory()
    fence(owner)
    TrackerFactory(owner=owner)
    Tracker.objects.update(created_at=ago(days=30))
    code, body = get_health(client)
    check = body["checks"]["geofence_events"]
    assert (code, check["status"], check["trackers_without_events"], check["days"]) == (
        200,
        "ok",
        1,
        7,
    )


def test_an_empty_fleet_is_healthy(client: Client, alive: None):
    code, body = get_health(client)
    assert (code, body["failing"], body["degraded"]) == (200, [], [])


# --- /metrics ---------------------------------------------------------------------------
def scrape(client: Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.content.decode())
        for s in family.samples
    }


def test_metrics_show_the_business_figures(client: Client, geocoder: dict):
    tracker = TrackerFactory()
    report(tracker, queued=True, fetched_at=ago(seconds=120))
    delivery(DeliveryStatus.FAILED)
    latest.maintain(force_refresh=True)

    samples = scrape(client)

    assert samples[("trackerfleet_processing_backlog", ())] == 1
    assert samples[("trackerfleet_processing_oldest_age_seconds", ())] == pytest.approx(120, abs=30)
    assert samples[("trackerfleet_ungeocoded_reports", ())] == 7
    assert samples[("trackerfleet_geocode_cache_hit_ratio", ())] == 0.95
    assert samples[("trackerfleet_geocode_requests_total", ())] == 50
    assert samples[("trackerfleet_geocode_failures_total", ())] == 2
    assert samples[("trackerfleet_geocode_cache_size", ())] == 40
    assert samples[("trackerfleet_deliveries", (("status", "failed"),))] == 1
    assert samples[("trackerfleet_deliveries", (("status", "pending"),))] == 0
    assert samples[("trackerfleet_trackers_without_events", ())] == 0
    assert samples[("trackerfleet_latest_view_valid", ())] == 1
    assert 0 <= samples[("trackerfleet_latest_view_age_seconds", ())] < 60


def test_metrics_never_repair_the_view(client: Client):
    execute(f"DROP MATERIALIZED VIEW {latest.VIEW}")
    samples = scrape(client)
    assert samples[("trackerfleet_latest_view_valid", ())] == 0
    assert ("trackerfleet_latest_view_age_seconds", ()) not in samples
    assert latest.inspect().kind is None


# --- the processor's heartbeat ----------------------------------------------------------
def test_the_processor_heartbeat_reports_fences_backlog_and_pending_events():
    owner = UserFactory()
    fence(owner)
    fence(owner, "retired", is_active=False)
    tracker = TrackerFactory(owner=owner)
    report(tracker, queued=True, fetched_at=ago(seconds=90))
    delivery(DeliveryStatus.PENDING)
    delivery(DeliveryStatus.FAILED)

    figures = geofence_worker.figures()

    # delivery() makes a fence of its own for each event.
    assert figures["active_geofences"] == 3
    assert (figures["pending_reports"], figures["pending_events"]) == (1, 1)
    assert figures["failed_deliveries"] == 1
    assert figures["oldest_pending_report_age_seconds"] == pytest.approx(90, abs=30)
