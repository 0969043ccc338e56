"""The operators' admin: every page renders, no secret ever does, actions change the queue."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import time_machine
from django.contrib.admin.models import LogEntry
from django.contrib.gis.geos import Point, Polygon
from django.db import connection
from django.db.models import Model
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from findmy import KeyPair

from geofences.models import (
    AlertDelivery,
    AlertRule,
    FenceKind,
    Geofence,
    GeofenceEvent,
    GeofenceState,
)
from locations import latest
from locations.models import LatestLocation, LocationReport
from monitoring.admin import base as monitoring_admin
from monitoring.admin.fleet import AppleAccountAdmin, TrackerAdmin
from monitoring.models import FailureRecord, FetchAttempt, ServiceInstance
from trackers import fields
from trackers.models import AccountStatus, AppleAccount, Tracker

from .factories import AppleAccountFactory, ProductionRunFactory, TrackerFactory, UserFactory

pytestmark = pytest.mark.django_db

NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)


# --- helpers ----------------------------------------------------------------------------
def url(model: type[Model], view: str, *args: Any) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


def object_pages(obj: Model) -> list[str]:
    model = type(obj)
    return [
        url(model, "changelist"),
        url(model, "change", obj.pk),
        url(model, "history", obj.pk),
        url(model, "delete", obj.pk),
    ]


def post_action(client: Client, model: type[Model], action: str, *objs: Model, query: str = ""):
    return client.post(
        url(model, "changelist") + query,
        {"action": action, "_selected_action": [o.pk for o in objs]},
    )


def ciphertext(model: type[Model], column: str, pk: int) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {column} FROM {model._meta.db_table} WHERE id = %s", [pk])  # noqa: S608
        return cursor.fetchone()[0]


def make_report(tracker: Tracker, **fields: Any) -> LocationReport:
    values = {
        "timestamp": NOW - dt.timedelta(hours=1),
        "point": Point(13.405, 52.52, srid=4326),
        "horizontal_accuracy": 12,
        "confidence": 2,
        "status": 0,
        "payload": uuid.uuid4().bytes * 5,
        "fetched_at": NOW,
        **fields,
    }
    return LocationReport.objects.create(tracker=tracker, **values)


def make_failure(**fields: Any) -> FailureRecord:
    values = {"category": "upstream", "fingerprint": f"x:{uuid.uuid4()}", "last_error": "boom"}
    return FailureRecord.objects.create(**{**values, **fields})


def make_instance(last_heartbeat: dt.datetime, **fields: Any) -> ServiceInstance:
    values = {
        "service_name": "fetch_trackers",
        "instance_id": f"host-1:{uuid.uuid4()}",
        "hostname": "host-1",
        "pid": 4242,
        "started_at": last_heartbeat - dt.timedelta(hours=2),
        "last_heartbeat": last_heartbeat,
        "heartbeat_count": 120,
        "payload": {"memory_usage_mb": 88.4, "cpu_usage_percent": 3.25, "uptime_seconds": 7260},
    }
    return ServiceInstance.objects.create(**{**values, **fields})


@pytest.fixture
def key() -> KeyPair:
    return KeyPair.new()


@pytest.fixture
def fleet(key: KeyPair) -> dict[str, Model]:
    """One of everything the admin shows, linked together."""
    run = ProductionRunFactory()
    account = AppleAccountFactory(last_error="HTTP 503 from Apple")
    tracker = TrackerFactory(
        key=key,
        production_run=run,
        last_position=Point(13.405, 52.52, srid=4326),
        last_seen_at=NOW,
        last_accuracy=12,
    )
    report = make_report(tracker)
    failure = make_failure(
        fingerprint=f"tracker:{tracker.pk}", tracker=tracker, account=account, attempts=5
    )
    attempt = FetchAttempt.objects.create(
        account=account,
        worker="worker-1",
        started_at=NOW,
        finished_at=NOW + dt.timedelta(seconds=2),
        trackers=64,
        outcome="ok",
        new_reports=10,
    )
    instance = make_instance(timezone.now())
    owner = UserFactory()
    Tracker.objects.filter(pk=tracker.pk).update(owner=owner)
    fence = Geofence.objects.create(
        owner=owner, name="depot", kind=FenceKind.CIRCLE, center=Point(13.405, 52.52), radius_m=300
    )
    fence.trackers.add(tracker)
    square = [(13.40, 52.51), (13.41, 52.51), (13.41, 52.52), (13.40, 52.52), (13.40, 52.51)]
    polygon = Geofence.objects.create(
        owner=owner, name="yard", kind=FenceKind.POLYGON, area=Polygon(square, srid=4326)
    )
    state = GeofenceState.objects.create(tracker=tracker, geofence=fence, side="inside")
    event = GeofenceEvent.objects.create(
        tracker=tracker,
        geofence=fence,
        kind="enter",
        report=report,
        occurred_at=NOW,
        dedupe_key=f"fence:{fence.pk}:{tracker.pk}:enter:{report.pk}",
    )
    # A webhook rule: its secret is encrypted at rest, and no admin page may decrypt it.
    rule = AlertRule.objects.create(
        owner=owner,
        name="depot alerts",
        event_kinds=["enter", "exit"],
        channels=["webhook", "redis"],
        webhook_url="https://hooks.example.com/alerts",
        webhook_secret="fixture-webhook-secret",
    )
    rule.geofences.add(fence)
    rule.trackers.add(tracker)
    delivery = AlertDelivery.objects.create(
        event=event,
        rule=rule,
        channel="webhook",
        status="failed",
        attempts=8,
        last_error="HTTP 500",
    )
    latest.maintain(force_refresh=True)  # the tracker's latest location (a view row)
    return {
        "run": run,
        "account": account,
        "tracker": tracker,
        "report": report,
        "failure": failure,
        "attempt": attempt,
        "instance": instance,
        "fence": fence,
        "polygon": polygon,
        "state": state,
        "event": event,
        "rule": rule,
        "delivery": delivery,
    }


@pytest.fixture
def all_pages(fleet: dict[str, Model]) -> list[str]:
    return [page for obj in fleet.values() for page in object_pages(obj)]


# --- every page renders -----------------------------------------------------------------
FLEET = [
    "run",
    "account",
    "tracker",
    "report",
    "failure",
    "attempt",
    "instance",
    "fence",
    "polygon",
    "state",
    "event",
    "rule",
    "delivery",
]


@pytest.mark.parametrize("name", FLEET)
def test_changelist_lists_the_object(admin_client: Client, fleet: dict[str, Model], name: str):
    obj = fleet[name]
    response = admin_client.get(url(type(obj), "changelist"))
    assert response.status_code == 200
    assert url(type(obj), "change", obj.pk) in response.text


@pytest.mark.parametrize("name", FLEET)
def test_change_page_renders(admin_client: Client, fleet: dict[str, Model], name: str):
    obj = fleet[name]
    response = admin_client.get(url(type(obj), "change", obj.pk))
    assert response.status_code == 200
    assert str(obj) in response.text


def test_admin_index_lists_every_model(admin_client: Client):
    response = admin_client.get(reverse("admin:index"))
    assert response.status_code == 200
    for name in ["appleaccount", "tracker", "productionrun", "locationreport", "failurerecord"]:
        assert f"/{name}/" in response.text


@pytest.mark.parametrize("model", [AppleAccount, Tracker, LocationReport, FailureRecord])
def test_records_made_by_the_system_cannot_be_added(admin_client: Client, model: type[Model]):
    assert admin_client.get(url(model, "add")).status_code == 403


def test_location_reports_cannot_be_edited(admin_client: Client, fleet: dict[str, Model]):
    report = fleet["report"]
    response = admin_client.post(url(LocationReport, "change", report.pk), {"confidence": 3})
    assert response.status_code == 403
    report.refresh_from_db()
    assert report.confidence == 2


def test_tracker_with_reports_cannot_be_deleted(admin_client: Client, fleet: dict[str, Model]):
    tracker = fleet["tracker"]
    page = admin_client.get(url(Tracker, "delete", tracker.pk))
    assert f"{tracker.name}: has location reports" in page.text
    admin_client.post(url(Tracker, "delete", tracker.pk), {"post": "yes"})
    assert Tracker.objects.filter(pk=tracker.pk).exists()


def test_deleting_an_account_counts_its_fetch_log(admin_client: Client, fleet: dict[str, Model]):
    account = fleet["account"]
    page = admin_client.get(url(AppleAccount, "delete", account.pk))
    assert "Fetch attempts: 1" in page.text
    admin_client.post(url(AppleAccount, "delete", account.pk), {"post": "yes"})
    assert not AppleAccount.objects.filter(pk=account.pk).exists()
    assert not FetchAttempt.objects.filter(account_id=account.pk).exists()


def test_report_page_shows_the_point_on_a_map(admin_client: Client, fleet: dict[str, Model]):
    report = fleet["report"]
    response = admin_client.get(url(LocationReport, "change", report.pk))
    assert 'id="id_point"' in response.text
    assert "gis/js/OLMapWidget.js" in response.text


def test_tracker_page_shows_the_last_position_on_a_map(
    admin_client: Client, fleet: dict[str, Model]
):
    response = admin_client.get(url(Tracker, "change", fleet["tracker"].pk))
    assert 'id="id_last_position"' in response.text
    assert "gis/js/OLMapWidget.js" in response.text


def test_account_page_shows_the_masked_apple_id(admin_client: Client, fleet: dict[str, Model]):
    account = fleet["account"]
    response = admin_client.get(url(AppleAccount, "change", account.pk))
    assert f"{account.name[0]}***@example.com" in response.text
    assert f"{account.name}@example.com" not in response.text


# --- secrets never render ---------------------------------------------------------------
def test_no_page_shows_a_private_key(
    admin_client: Client, fleet: dict[str, Model], all_pages: list[str], key: KeyPair
):
    tracker = fleet["tracker"]
    secrets = [key.private_key_b64, ciphertext(Tracker, "key_material", tracker.pk)]
    for page in all_pages:
        response = admin_client.get(page)
        assert response.status_code == 200, page
        for secret in secrets:
            assert secret not in response.text, page


def test_no_page_shows_an_account_password_or_token(
    admin_client: Client, fleet: dict[str, Model], all_pages: list[str]
):
    account = fleet["account"]
    secrets = [
        account.state["account"]["password"],
        account.state["login"]["data"]["mobileme_data"]["tokens"]["searchPartyToken"],
        ciphertext(AppleAccount, "state", account.pk),
    ]
    for page in all_pages:
        response = admin_client.get(page)
        assert response.status_code == 200, page
        for secret in secrets:
            assert secret not in response.text, page


def test_history_after_actions_shows_no_secret(
    admin_client: Client, fleet: dict[str, Model], key: KeyPair
):
    tracker, account = fleet["tracker"], fleet["account"]
    post_action(admin_client, Tracker, "deactivate", tracker)
    post_action(admin_client, AppleAccount, "disable", account)
    tracker_history = admin_client.get(url(Tracker, "history", tracker.pk)).text
    account_history = admin_client.get(url(AppleAccount, "history", account.pk)).text
    assert "Deactivated" in tracker_history
    assert "Disabled" in account_history
    assert key.private_key_b64 not in tracker_history
    assert account.state["account"]["password"] not in account_history


def test_search_by_hashed_key_finds_the_tracker_and_no_secret(
    admin_client: Client, fleet: dict[str, Model], key: KeyPair
):
    other = TrackerFactory(name="someone-else")
    response = admin_client.get(url(Tracker, "changelist"), {"q": fleet["tracker"].hashed_adv_key})
    assert fleet["tracker"].name in response.text
    assert other.name not in response.text
    assert key.private_key_b64 not in response.text


# --- change forms keep what workers write meanwhile -------------------------------------
def test_editing_a_tracker_keeps_a_lease_taken_meanwhile(
    admin_client: Client, fleet: dict[str, Model], key: KeyPair, monkeypatch: pytest.MonkeyPatch
):
    tracker = fleet["tracker"]
    token = uuid.uuid4()
    original = TrackerAdmin.get_object

    def get_object_then_worker_claims(self: TrackerAdmin, *args: Any, **kwargs: Any) -> Tracker:
        obj = original(self, *args, **kwargs)
        Tracker.objects.filter(pk=tracker.pk).update(
            claimed_by="worker-2", claim_token=token, lease_until=timezone.now()
        )
        return obj

    monkeypatch.setattr(TrackerAdmin, "get_object", get_object_then_worker_claims)
    response = admin_client.post(
        url(Tracker, "change", tracker.pk),
        {"name": "renamed", "owner": "", "production_run": tracker.production_run_id, "_save": 1},
    )

    assert response.status_code == 302
    tracker.refresh_from_db()
    assert (tracker.name, tracker.is_active) == ("renamed", False)
    assert (tracker.claimed_by, tracker.claim_token) == ("worker-2", token)
    assert tracker.key_material == dict(key.to_json())


def test_editing_an_account_keeps_tokens_refreshed_meanwhile(
    admin_client: Client, fleet: dict[str, Model], monkeypatch: pytest.MonkeyPatch
):
    account = fleet["account"]
    refreshed = {**account.state, "login": {"state": 3, "data": {"dsid": "refreshed"}}}
    original = AppleAccountAdmin.get_object

    def get_object_then_worker_finishes(self: AppleAccountAdmin, *args: Any, **kwargs: Any):
        obj = original(self, *args, **kwargs)
        AppleAccount.objects.filter(pk=account.pk).update(
            state=refreshed, request_holder="worker-3"
        )
        return obj

    monkeypatch.setattr(AppleAccountAdmin, "get_object", get_object_then_worker_finishes)
    response = admin_client.post(url(AppleAccount, "change", account.pk), {"name": "renamed"})

    assert response.status_code == 302
    account.refresh_from_db()
    assert account.name == "renamed"
    assert account.state == refreshed
    assert account.request_holder == "worker-3"


def test_account_endpoints_cannot_be_edited_in_the_admin(
    admin_client: Client, fleet: dict[str, Model]
):
    account = fleet["account"]
    before = (account.anisette_url, account.fetch_endpoint)
    response = admin_client.post(
        url(AppleAccount, "change", account.pk),
        {
            "name": account.name,
            "anisette_url": "http://evil.example.com/anisette",
            "fetch_endpoint": "http://evil.example.com/fetch",
        },
    )
    assert response.status_code == 302
    account.refresh_from_db()
    assert (account.anisette_url, account.fetch_endpoint) == before
    page = admin_client.get(url(AppleAccount, "change", account.pk)).text
    assert 'name="fetch_endpoint"' not in page
    assert 'name="anisette_url"' not in page


# --- tracker actions --------------------------------------------------------------------
def test_release_from_quarantine_resets_failures(admin_client: Client, fleet: dict[str, Model]):
    tracker, failure = fleet["tracker"], fleet["failure"]
    Tracker.objects.filter(pk=tracker.pk).update(quarantined_at=NOW, consecutive_failures=5)

    response = post_action(admin_client, Tracker, "release_quarantine", tracker)

    assert response.status_code == 302
    tracker.refresh_from_db()
    failure.refresh_from_db()
    assert (tracker.quarantined_at, tracker.consecutive_failures) == (None, 0)
    assert failure.resolved_at is not None


def test_make_due_now_makes_it_due_without_shrinking_its_window(admin_client: Client):
    recent = TrackerFactory(last_processed_at=timezone.now())
    long_ago = timezone.now() - dt.timedelta(days=3)
    old = TrackerFactory(last_processed_at=long_ago)  # an accessory owed 3 days of keys
    post_action(admin_client, Tracker, "make_due_now", recent, old)
    due = set(Tracker.objects.eligible().due().values_list("pk", flat=True))
    assert due == {recent.pk, old.pk}
    old.refresh_from_db()
    assert old.last_processed_at == long_ago


def test_deactivate_and_activate(admin_client: Client):
    tracker = TrackerFactory()
    post_action(admin_client, Tracker, "deactivate", tracker)
    tracker.refresh_from_db()
    assert tracker.is_active is False
    post_action(admin_client, Tracker, "activate", tracker)
    tracker.refresh_from_db()
    assert tracker.is_active is True


def test_quarantined_filter(admin_client: Client):
    sick = TrackerFactory(name="sick-one", quarantined_at=NOW)
    healthy = TrackerFactory(name="healthy-one")
    response = admin_client.get(url(Tracker, "changelist"), {"quarantined": "yes"})
    assert sick.name in response.text
    assert healthy.name not in response.text


def test_leased_filter_and_lease_column(admin_client: Client):
    held = TrackerFactory(
        name="held-one",
        claimed_by="worker-7",
        claim_token=uuid.uuid4(),
        lease_until=timezone.now() + dt.timedelta(minutes=5),
    )
    expired = TrackerFactory(
        name="expired-one",
        claimed_by="worker-8",
        claim_token=uuid.uuid4(),
        lease_until=timezone.now() - dt.timedelta(minutes=5),
    )
    response = admin_client.get(url(Tracker, "changelist"), {"leased": "yes"})
    assert held.name in response.text
    assert "worker-7 until" in response.text
    assert expired.name not in response.text


# --- account actions --------------------------------------------------------------------
def test_mark_active_resets_the_breaker(admin_client: Client):
    account = AppleAccountFactory(
        status=AccountStatus.BACKING_OFF,
        consecutive_failures=4,
        backoff_until=timezone.now() + dt.timedelta(hours=1),
        last_error="rate limited",
    )
    post_action(admin_client, AppleAccount, "mark_active", account)
    account.refresh_from_db()
    assert account.status == AccountStatus.ACTIVE
    assert (account.consecutive_failures, account.backoff_until) == (0, None)
    assert account.breaker_state == "closed"


def test_disable_account(admin_client: Client):
    account = AppleAccountFactory()
    post_action(admin_client, AppleAccount, "disable", account)
    account.refresh_from_db()
    assert account.status == AccountStatus.DISABLED


def test_account_list_shows_breaker_state(admin_client: Client):
    AppleAccountFactory(
        status=AccountStatus.BACKING_OFF, backoff_until=timezone.now() + dt.timedelta(hours=1)
    )
    response = admin_client.get(url(AppleAccount, "changelist"))
    assert '<td class="field-breaker">open</td>' in response.text


# --- failure records --------------------------------------------------------------------
def test_failures_list_open_ones_by_default(admin_client: Client):
    open_one = make_failure(fingerprint="tracker:open-one")
    done = make_failure(fingerprint="tracker:done-one", resolved_at=NOW)
    default = admin_client.get(url(FailureRecord, "changelist")).text
    everything = admin_client.get(url(FailureRecord, "changelist"), {"state": "all"}).text
    assert open_one.fingerprint in default
    assert done.fingerprint not in default
    assert done.fingerprint in everything


def test_resolve_failure(admin_client: Client):
    failure = make_failure()
    post_action(admin_client, FailureRecord, "resolve", failure)
    failure.refresh_from_db()
    assert failure.resolved_at is not None


def test_retry_tracker_failure_makes_the_tracker_due(admin_client: Client):
    tracker = TrackerFactory(quarantined_at=NOW, consecutive_failures=5, last_processed_at=NOW)
    failure = make_failure(fingerprint=f"tracker:{tracker.pk}", tracker=tracker)

    post_action(admin_client, FailureRecord, "retry", failure)

    tracker.refresh_from_db()
    failure.refresh_from_db()
    assert (tracker.quarantined_at, tracker.consecutive_failures) == (None, 0)
    assert Tracker.objects.eligible().due().filter(pk=tracker.pk).exists()
    assert failure.resolved_at is not None


def test_retry_account_failure_closes_the_breaker(admin_client: Client):
    account = AppleAccountFactory(
        status=AccountStatus.BACKING_OFF,
        consecutive_failures=3,
        backoff_until=timezone.now() + dt.timedelta(hours=1),
    )
    failure = make_failure(fingerprint=f"account:{account.pk}", account=account)

    post_action(admin_client, FailureRecord, "retry", failure)

    account.refresh_from_db()
    failure.refresh_from_db()
    assert (account.status, account.consecutive_failures) == (AccountStatus.ACTIVE, 0)
    assert failure.resolved_at is not None


def test_retry_leaves_an_account_that_needs_login(admin_client: Client):
    account = AppleAccountFactory(status=AccountStatus.NEEDS_LOGIN)
    failure = make_failure(category="auth", fingerprint=f"account:{account.pk}", account=account)

    response = post_action(admin_client, FailureRecord, "retry", failure)

    account.refresh_from_db()
    failure.refresh_from_db()
    assert account.status == AccountStatus.NEEDS_LOGIN
    assert failure.resolved_at is None
    messages = admin_client.get(response.url).text
    assert "needs a new login" in messages


def test_retry_with_login_reactivates_the_account(admin_client: Client):
    account = AppleAccountFactory(status=AccountStatus.NEEDS_LOGIN)
    failure = make_failure(category="auth", fingerprint=f"account:{account.pk}", account=account)

    post_action(admin_client, FailureRecord, "retry_with_login", failure)

    account.refresh_from_db()
    failure.refresh_from_db()
    assert account.status == AccountStatus.ACTIVE
    assert failure.resolved_at is not None


def test_retry_never_reactivates_a_disabled_account(admin_client: Client):
    account = AppleAccountFactory(status=AccountStatus.DISABLED)
    failure = make_failure(fingerprint=f"account:{account.pk}", account=account)
    post_action(admin_client, FailureRecord, "retry_with_login", failure)
    account.refresh_from_db()
    assert account.status == AccountStatus.DISABLED


# --- location reports -------------------------------------------------------------------
def test_reports_filter_by_production_run_and_confidence(admin_client: Client):
    run = ProductionRunFactory()
    in_run = TrackerFactory(name="in-run", production_run=run)
    elsewhere = TrackerFactory(name="elsewhere")
    make_report(in_run, confidence=3)
    make_report(in_run, confidence=1)
    make_report(elsewhere, confidence=3)

    response = admin_client.get(
        url(LocationReport, "changelist"),
        {"tracker__production_run__id__exact": run.pk, "confidence": "3"},
    )

    assert response.context["cl"].result_count == 1
    assert "in-run" in response.text


def test_big_unfiltered_report_list_is_counted_from_statistics(
    admin_client: Client, fleet: dict[str, Model], monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(monitoring_admin, "estimated_rows", lambda table: 5_000_000)
    unfiltered = admin_client.get(url(LocationReport, "changelist"))
    filtered = admin_client.get(url(LocationReport, "changelist"), {"confidence": "2"})
    assert unfiltered.context["cl"].result_count == 5_000_000
    assert filtered.context["cl"].result_count == 1


def test_estimated_rows_reads_postgres_statistics(fleet: dict[str, Model]):
    make_report(fleet["tracker"])
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE locations_locationreport")
    assert monitoring_admin.estimated_rows("locations_locationreport") == 2


# --- service instances ------------------------------------------------------------------
@pytest.fixture
def pinned() -> Iterator[None]:
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.mark.parametrize(("age", "word"), [(30, "alive"), (120, "stale"), (600, "dead")])
def test_liveness_badge(admin_client: Client, pinned: None, age: int, word: str):
    make_instance(NOW - dt.timedelta(seconds=age))
    response = admin_client.get(url(ServiceInstance, "changelist"))
    badges = {w for w in ("alive", "stale", "dead") if f"liveness liveness-{w}" in response.text}
    assert badges == {word}
    assert f">{word.capitalize()}</span>" in response.text


@pytest.mark.parametrize("age", [5, 600])
def test_stopped_instance_is_stopped_in_grey(admin_client: Client, pinned: None, age: int):
    make_instance(NOW - dt.timedelta(seconds=age), stopped_at=NOW - dt.timedelta(seconds=age))
    response = admin_client.get(url(ServiceInstance, "changelist"))
    badges = {w for w in ("alive", "stale", "dead", "stopped") if f"liveness-{w}" in response.text}
    assert badges == {"stopped"}
    assert "background:#757575" in response.text
    assert ">Stopped</span>" in response.text


def test_liveness_filter_tells_stopped_from_dead(admin_client: Client):
    stopped = make_instance(timezone.now(), instance_id="stopped-one", stopped_at=timezone.now())
    dead = make_instance(timezone.now() - dt.timedelta(hours=1), instance_id="dead-one")
    changelist = url(ServiceInstance, "changelist")
    dead_page = admin_client.get(changelist, {"liveness": "dead"}).text
    stopped_page = admin_client.get(changelist, {"liveness": "stopped"}).text
    assert (dead.instance_id in dead_page, stopped.instance_id in dead_page) == (True, False)
    assert (stopped.instance_id in stopped_page, dead.instance_id in stopped_page) == (True, False)


def test_instance_figures_from_heartbeat_payload(admin_client: Client, pinned: None):
    make_instance(NOW)
    response = admin_client.get(url(ServiceInstance, "changelist"))
    assert "88 MB" in response.text
    assert "3.2 %" in response.text
    assert "2h 1m" in response.text


def test_liveness_filter(admin_client: Client):
    alive = make_instance(timezone.now(), instance_id="alive-one")
    dead = make_instance(timezone.now() - dt.timedelta(hours=1), instance_id="dead-one")
    response = admin_client.get(url(ServiceInstance, "changelist"), {"liveness": "dead"})
    assert dead.instance_id in response.text
    assert alive.instance_id not in response.text


def test_actions_are_recorded_in_history(admin_client: Client):
    tracker = TrackerFactory()
    post_action(admin_client, Tracker, "make_due_now", tracker)
    entry = LogEntry.objects.get(object_id=str(tracker.pk))
    assert entry.change_message == "Made due now"


# --- lists stay cheap -------------------------------------------------------------------
def every_admin_page() -> list[str]:
    """Every page of every model registered in the admin: changelist, add, and the change,
    delete and history pages of every row in the database."""
    from django.contrib import admin as django_admin

    pages = [reverse("admin:index")]
    for model in django_admin.site._registry:
        pages.append(url(model, "changelist"))
        pages.append(url(model, "add"))
        for pk in model._default_manager.values_list("pk", flat=True):
            pages += [url(model, "change", pk), url(model, "delete", pk), url(model, "history", pk)]
    return pages


def test_no_admin_page_ever_decrypts_a_secret(
    admin_client: Client, fleet: dict[str, Model], monkeypatch: pytest.MonkeyPatch
):
    def refuse(token: str) -> str:
        raise AssertionError("an admin page decrypted a secret")

    monkeypatch.setattr(fields, "decrypt_text", refuse)
    pages = every_admin_page()
    assert url(AppleAccount, "change", fleet["account"].pk) in pages
    assert url(Tracker, "change", fleet["tracker"].pk) in pages
    assert url(AlertRule, "change", fleet["rule"].pk) in pages
    assert url(LatestLocation, "change", fleet["tracker"].pk) in pages
    for page in pages:
        # 403 for the pages of what only commands create (add an account or a tracker).
        assert admin_client.get(page).status_code in (200, 403), page


@pytest.mark.parametrize("model", [Tracker, LocationReport, FailureRecord, FetchAttempt])
def test_changelist_queries_do_not_grow_with_rows(
    admin_client: Client, fleet: dict[str, Model], model: type[Model]
):
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert admin_client.get(url(model, "changelist")).status_code == 200
        return len(captured)

    before = queries()
    for _ in range(5):
        tracker = TrackerFactory(owner=UserFactory(), production_run=ProductionRunFactory())
        account = AppleAccountFactory()
        make_report(tracker)
        make_failure(tracker=tracker, account=account)
        FetchAttempt.objects.create(
            account=account, worker="w", started_at=NOW, finished_at=NOW, trackers=1, outcome="ok"
        )
    assert queries() == before
