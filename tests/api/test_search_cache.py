"""The search cache: JSON location searches kept in Redis, keyed by user and parsed query,
invalidated by ingest through per-tracker generation counters; and the API without Redis."""

from __future__ import annotations

import datetime as dt
import socket
import time
import uuid
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.db import connection, transaction
from prometheus_client.parser import text_string_to_metric_families

from api import search_cache
from locations import generations
from locations.geocoding import immediate_pass
from locations.ingest import ingest
from locations.models import LocationReport
from locations.resolver import Resolver
from trackers.models import Tracker
from trackers.payloads import DecryptedReport

from ..factories import TrackerFactory
from .test_locations import DAY, T0, add_report, ids, url

pytestmark = pytest.mark.django_db


def redis_cache(location: str) -> dict[str, Any]:
    return {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": location,
            # Test runs share the Redis server (and, across runs, ids): a prefix per test.
            "KEY_PREFIX": f"test-{uuid.uuid4().hex}",
            "OPTIONS": {
                "IGNORE_EXCEPTIONS": True,
                "SOCKET_CONNECT_TIMEOUT": 2,
                "SOCKET_TIMEOUT": 2,
            },
        }
    }


@pytest.fixture(autouse=True)
def _search_cache(settings: Any) -> None:
    assert django_settings.REDIS_URL, "these tests need Redis (REDIS_URL)"
    settings.CACHES = redis_cache(django_settings.REDIS_URL)
    settings.API_SEARCH_CACHE_SECONDS = 300


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nobody listens


def new_report(tracker: Tracker, minutes: int) -> tuple[int, DecryptedReport]:
    return tracker.id, DecryptedReport(
        hashed_id=tracker.hashed_adv_key,
        payload=uuid.uuid4().bytes,
        timestamp=T0 + dt.timedelta(minutes=minutes),
        latitude=52.5,
        longitude=13.4,
        accuracy=10,
        confidence=2,
        status=0,
    )


def add_report_quietly(tracker: Tracker, at: dt.datetime) -> LocationReport:
    """A report stored behind the cache's back: raw SQL, as if its announcement were lost."""
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO locations_locationreport (tracker_id, timestamp, point, "
            "horizontal_accuracy, confidence, status, payload, fetched_at, geocode_note) "
            "VALUES (%s, %s, ST_SetSRID(ST_MakePoint(13.4, 52.5), 4326), 10, 2, 0, %s, %s, '') "
            "RETURNING id",
            [tracker.id, at, uuid.uuid4().bytes, at],
        )
        return LocationReport.objects.get(pk=cursor.fetchone()[0])


def counts() -> dict[str, int]:
    figures = search_cache.counters()
    assert figures is not None
    return figures


def found(client: Any, path: str, **params: Any) -> list[int]:
    response = client.get(url(path, **{**DAY, **params}))
    assert response.status_code == 200, response.content
    return ids(response.json())


def test_a_repeated_search_is_answered_from_the_cache(alice, alice_client):
    tracker = TrackerFactory(owner=alice)
    first = add_report(tracker, T0)
    path = f"trackers/{tracker.id}/locations"

    assert found(alice_client, path) == [first.id]
    add_report(tracker, T0 + dt.timedelta(minutes=1))  # stored behind ingest's back: no bump
    assert found(alice_client, path) == [first.id]  # so the answer must be the cached one
    assert counts() == {"hits": 1, "misses": 1}


def test_equivalent_queries_share_one_entry(alice, alice_client):
    tracker = TrackerFactory(owner=alice)
    add_report(tracker, T0)
    path = f"/api/v1/trackers/{tracker.id}/locations"

    alice_client.get(f"{path}?starts_at=2026-11-01T00:00:00Z&ends_at=2026-11-02T00:00:00Z")
    # Other order, other time zones, other spellings of the same moments.
    alice_client.get(f"{path}?ends_at=2026-11-02T02:00:00%2B02:00&starts_at=2026-10-31T19:00-05:00")
    alice_client.get(f"{path}?ends_at=2026-11-02T00:00:00.000%2B00:00&starts_at=2026-11-01T00:00Z")

    assert counts() == {"hits": 2, "misses": 1}


@pytest.mark.django_db(transaction=True)
def test_a_new_report_for_the_tracker_shows_in_the_next_search(alice, alice_client):
    tracker = TrackerFactory(owner=alice)
    path = f"trackers/{tracker.id}/locations"
    assert found(alice_client, path) == []
    assert found(alice_client, "locations") == []

    result = ingest([new_report(tracker, 5)], fetched_at=T0)  # commits, then bumps

    assert result.new == 1
    new_id = tracker.reports.get().id
    assert found(alice_client, path) == [new_id]
    assert found(alice_client, "locations") == [new_id]  # the fleet-wide search too
    assert counts() == {"hits": 0, "misses": 4}


@pytest.mark.django_db(transaction=True)
def test_a_report_for_another_tracker_leaves_the_entry_alone(alice, bob, alice_client):
    mine, other, theirs = (
        TrackerFactory(owner=alice),
        TrackerFactory(owner=alice),
        TrackerFactory(owner=bob),
    )
    first = add_report(mine, T0)
    path = f"trackers/{mine.id}/locations"
    assert found(alice_client, path) == [first.id]
    assert found(alice_client, "locations", tracker=mine.id) == [first.id]
    bob_before = generations.current(generations.tracker_keys([theirs.id]))

    ingest([new_report(other, 1), new_report(theirs, 2)], fetched_at=T0)  # commits, bumps

    add_report_quietly(mine, T0 + dt.timedelta(minutes=3))  # visible only uncached
    assert found(alice_client, path) == [first.id]
    assert found(alice_client, "locations", tracker=mine.id) == [first.id]
    # One entry: a tracker's own route and `locations?tracker=` ask the same question.
    assert counts() == {"hits": 3, "misses": 1}
    assert generations.current(generations.tracker_keys([theirs.id])) == [bob_before[0] + 1]


def failing_ingest(tracker: Tracker) -> None:
    with transaction.atomic():
        ingest([new_report(tracker, 1)], fetched_at=T0)
        raise RuntimeError("the caller fails after the ingest")


@pytest.mark.django_db(transaction=True)
def test_the_bump_waits_for_the_commit_and_a_rollback_bumps_nothing(alice):
    tracker = TrackerFactory(owner=alice)

    with pytest.raises(RuntimeError):
        failing_ingest(tracker)
    assert generations.current(generations.tracker_keys([tracker.id])) == [0]

    with transaction.atomic():
        ingest([new_report(tracker, 1)], fetched_at=T0)
        assert generations.current(generations.tracker_keys([tracker.id])) == [
            0
        ]  # not before the commit
    assert generations.current(generations.tracker_keys([tracker.id])) == [1]


@pytest.mark.django_db(transaction=True)
def test_a_fleet_search_is_renewed_by_my_reports_only(alice, bob, alice_client):
    mine, theirs = TrackerFactory(owner=alice), TrackerFactory(owner=bob)
    first = add_report(mine, T0)
    assert found(alice_client, "locations") == [first.id]

    ingest([new_report(theirs, 1)], fetched_at=T0)  # bob's: alice's fleet entry stays
    assert found(alice_client, "locations") == [first.id]
    ingest([new_report(mine, 2)], fetched_at=T0)  # hers: the entry is renewed

    assert found(alice_client, "locations") == [first.id, mine.reports.latest("timestamp").id]
    assert counts() == {"hits": 1, "misses": 2}


def test_a_tracker_given_away_leaves_the_old_owners_fleet_search_at_once(
    alice, bob, alice_client, bob_client
):
    kept, given = TrackerFactory(owner=alice), TrackerFactory(owner=alice)
    a, b = add_report(kept, T0), add_report(given, T0 + dt.timedelta(minutes=1))
    assert found(alice_client, "locations") == [a.id, b.id]
    assert found(bob_client, "locations") == []

    Tracker.objects.filter(pk=given.pk).update(owner=bob)  # no report, no bump

    assert found(alice_client, "locations") == [a.id]
    assert found(bob_client, "locations") == [b.id]


def test_a_tracker_given_away_is_gone_from_the_old_owners_cached_pages_at_once(
    alice, bob, alice_client, bob_client
):
    tracker = TrackerFactory(owner=alice)
    report = add_report(tracker, T0)
    path = f"trackers/{tracker.id}/locations"
    assert found(alice_client, path) == [report.id]
    assert found(alice_client, "locations", tracker=tracker.id) == [report.id]
    assert found(alice_client, path) == [report.id]  # a hit: no ownership query was made

    Tracker.objects.filter(pk=tracker.pk).update(owner=bob)  # no report, no bump in Redis

    assert alice_client.get(url(path, **DAY)).status_code == 404
    response = alice_client.get(url("locations", tracker=tracker.id, **DAY))
    assert response.status_code == 400
    assert list(response.json()["error"]["fields"]) == ["tracker"]
    assert found(bob_client, path) == [report.id]


def test_a_cached_page_costs_no_query_but_authentication(
    alice, alice_client, django_assert_num_queries
):
    tracker = TrackerFactory(owner=alice)
    add_report(tracker, T0)
    path = f"trackers/{tracker.id}/locations"
    found(alice_client, path)
    found(alice_client, "locations")
    for route in (path, "locations"):
        with django_assert_num_queries(1):  # the token (with the fleet version)
            found(alice_client, route)
    assert counts() == {"hits": 2, "misses": 2}


@pytest.mark.django_db(transaction=True)
def test_a_report_saved_through_the_orm_shows_in_the_next_search(alice, alice_client):
    tracker = TrackerFactory(owner=alice)
    path = f"trackers/{tracker.id}/locations"
    assert found(alice_client, path) == []
    assert found(alice_client, "locations") == []

    report = add_report(tracker, T0)  # a script or the shell: not ingest()

    assert found(alice_client, path) == [report.id]
    assert found(alice_client, "locations") == [report.id]
    report.delete()
    assert found(alice_client, path) == []
    assert counts() == {"hits": 0, "misses": 5}


@pytest.mark.django_db(transaction=True)
def test_an_address_found_later_shows_in_the_next_search(alice, alice_client, settings):
    settings.GEOCODER = "offline"
    tracker = TrackerFactory(owner=alice)
    ingest([new_report(tracker, 5)], fetched_at=T0)
    path = f"trackers/{tracker.id}/locations"
    first = alice_client.get(url(path, **DAY)).json()["data"]["results"]
    assert [r["address"] for r in first] == [None]

    immediate_pass(Resolver("test"), max_ids=None, check_processing=False)  # Berlin

    again = alice_client.get(url(path, **DAY)).json()["data"]["results"]
    assert again[0]["address"] == "Berlin, Germany (city level)"
    assert counts() == {"hits": 0, "misses": 2}


@pytest.mark.django_db(transaction=True)
def test_a_renewed_answer_replaces_the_entry(alice, alice_client):
    tracker = TrackerFactory(owner=alice)
    path = f"trackers/{tracker.id}/locations"
    for minutes in range(3):
        assert len(found(alice_client, path)) == minutes
        ingest([new_report(tracker, minutes)], fetched_at=T0)

    client = generations.redis_client()
    entries = list(client.scan_iter(f"{generations.namespace()}:search:{alice.pk}:*"))
    assert len(entries) == 1  # one key per query, whatever the generations it went through
    assert counts() == {"hits": 0, "misses": 3}


def test_users_do_not_share_entries(alice, bob, alice_client, staff_client):
    add_report(TrackerFactory(owner=alice), T0)
    add_report(TrackerFactory(owner=bob), T0)

    assert len(found(alice_client, "locations")) == 1
    assert len(found(staff_client, "locations")) == 2
    assert counts() == {"hits": 0, "misses": 2}


def test_a_cached_page_gets_a_next_link_for_its_own_request(alice, alice_client, settings):
    settings.ALLOWED_HOSTS = ["testserver", "api.example.com"]
    tracker = TrackerFactory(owner=alice)
    for minutes in range(3):
        add_report(tracker, T0 + dt.timedelta(minutes=minutes))
    page = url(f"trackers/{tracker.id}/locations", limit=2, **DAY)

    first = alice_client.get(page).json()["data"]["next"]
    second = alice_client.get(page, HTTP_HOST="api.example.com").json()["data"]["next"]

    assert first.startswith("http://testserver/")
    assert second.startswith("http://api.example.com/")
    assert counts() == {"hits": 1, "misses": 1}


def test_a_lost_bump_is_stale_for_at_most_the_entry_lifetime(alice, alice_client, settings):
    settings.API_SEARCH_CACHE_SECONDS = 1
    tracker = TrackerFactory(owner=alice)
    path = f"trackers/{tracker.id}/locations"
    assert found(alice_client, path) == []

    late = add_report(tracker, T0)  # as if Redis had been down when ingest committed it

    assert found(alice_client, path) == []
    time.sleep(1.2)
    assert found(alice_client, path) == [late.id]


def test_without_redis_the_api_answers_uncached(alice, alice_client, settings):
    settings.CACHES = redis_cache(f"redis://127.0.0.1:{closed_port()}/0")
    tracker = TrackerFactory(owner=alice)
    first = add_report(tracker, T0)
    path = f"trackers/{tracker.id}/locations"

    started = time.monotonic()
    assert found(alice_client, path) == [first.id]
    second = add_report(tracker, T0 + dt.timedelta(minutes=1))
    assert found(alice_client, path) == [first.id, second.id]
    assert found(alice_client, "locations") == [first.id, second.id]
    assert time.monotonic() - started < 5
    assert search_cache.counters() is None
    assert generations.bump([tracker.id]) is False  # ingest's bump is lost, and says so


def test_without_a_redis_cache_there_is_no_search_cache(alice, alice_client, settings):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    tracker = TrackerFactory(owner=alice)
    first = add_report(tracker, T0)
    path = f"trackers/{tracker.id}/locations"

    assert found(alice_client, path) == [first.id]
    second = add_report(tracker, T0 + dt.timedelta(minutes=1))
    assert found(alice_client, path) == [first.id, second.id]


def test_metrics_export_hits_and_misses(alice, alice_client, client):
    tracker = TrackerFactory(owner=alice)
    path = f"trackers/{tracker.id}/locations"
    for _ in range(3):
        found(alice_client, path)

    text = client.get("/metrics").content.decode()

    samples = {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("trackerfleet_api_search_cache")
    }
    assert samples == {
        "trackerfleet_api_search_cache_hits_total": 2.0,
        "trackerfleet_api_search_cache_misses_total": 1.0,
    }
