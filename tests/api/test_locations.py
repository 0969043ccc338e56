"""Location searches: `trackers/{id}/locations`, `locations` and `latest` (JSON), their
parameters, owner scoping, the keyset cursor, and the indexes the queries use."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from django.contrib.gis.geos import Point
from django.db import connection
from django.test import Client

from api import cursor as keyset
from api.filters import parse_location_query
from api.views.locations import page, report_rows
from geofences.models import FenceKind, Geofence, GeofenceState, Side
from locations import latest
from locations.models import Address, LocationReport
from trackers.models import Tracker

from ..factories import TrackerFactory

pytestmark = pytest.mark.django_db

T0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
DAY = {"starts_at": "2026-11-01T00:00:00Z", "ends_at": "2026-11-02T00:00:00Z"}


@pytest.fixture(autouse=True)
def _no_search_cache(settings: Any) -> None:
    # These tests are about the searches; tests/api/test_search_cache.py is about the cache.
    settings.API_SEARCH_CACHE_SECONDS = 0


def add_report(tracker: Tracker, at: dt.datetime, **fields: Any) -> LocationReport:
    values: dict[str, Any] = {
        "point": Point(13.4, 52.5, srid=4326),
        "horizontal_accuracy": 10,
        "confidence": 2,
        "status": 0,
        "payload": os.urandom(16),
        "fetched_at": at,
    }
    if "lat" in fields or "lon" in fields:
        values["point"] = Point(fields.pop("lon", 13.4), fields.pop("lat", 52.5), srid=4326)
    values.update(fields)
    return LocationReport.objects.create(tracker=tracker, timestamp=at, **values)


def url(path: str, **params: Any) -> str:
    return f"/api/v1/{path}?{urlencode(params, doseq=True)}"


def ids(body: dict[str, Any]) -> list[int]:
    return [row["id"] for row in body["data"]["results"]]


def fields_of(response: Any) -> dict[str, list[str]]:
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["data"] is None
    assert body["error"]["code"] == "invalid"
    return body["error"]["fields"]


# --- one tracker -----------------------------------------------------------------------
def test_a_trackers_reports_in_the_range_oldest_first(alice, alice_client):
    tracker = TrackerFactory(owner=alice)
    place = Address.objects.create(
        cell="25:1:1", provider="offline", label="Berlin, Germany", point=Point(13.4, 52.5)
    )
    add_report(tracker, T0 - dt.timedelta(seconds=1))  # before the range
    first = add_report(tracker, T0)  # starts_at is included
    third = add_report(tracker, T0 + dt.timedelta(hours=5))
    second = add_report(
        tracker,
        T0 + dt.timedelta(hours=2, microseconds=5),
        lat=-33.865143,
        lon=151.2099,
        horizontal_accuracy=35,
        confidence=3,
        status=0xA0,
        address=place,
    )
    add_report(tracker, T0 + dt.timedelta(days=1))  # ends_at is excluded

    response = alice_client.get(url(f"trackers/{tracker.id}/locations", **DAY))

    assert response.status_code == 200
    body = response.json()
    assert body["error"] is None
    assert ids(body) == [first.id, second.id, third.id]
    assert body["data"]["next"] is None
    assert body["data"]["results"][1] == {
        "id": second.id,
        "tracker": tracker.id,
        "timestamp": "2026-11-01T02:00:00.000005Z",
        "latitude": -33.865143,
        "longitude": 151.2099,
        "accuracy": 35,
        "confidence": 3,
        "status": 0xA0,
        "address": "Berlin, Germany",
    }
    assert body["data"]["results"][0]["address"] is None


def test_another_users_tracker_is_not_found(alice, bob_client):
    tracker = TrackerFactory(owner=alice)
    add_report(tracker, T0)

    for path in (f"trackers/{tracker.id}/locations", "trackers/999999999/locations"):
        response = bob_client.get(url(path, **DAY))
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
    huge = bob_client.get(url(f"trackers/{10**30}/locations", **DAY))
    assert huge.status_code == 404


def test_without_credentials_the_answer_is_401(alice):
    tracker = TrackerFactory(owner=alice)

    response = Client().get(url(f"trackers/{tracker.id}/locations", **DAY))

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


# --- the fleet -------------------------------------------------------------------------
def test_the_fleet_search_shows_my_trackers_only_and_staff_sees_all(
    alice, bob, alice_client, staff_client
):
    mine = [add_report(TrackerFactory(owner=alice), T0 + dt.timedelta(minutes=i)) for i in (1, 2)]
    theirs = add_report(TrackerFactory(owner=bob), T0)

    assert ids(alice_client.get(url("locations", **DAY)).json()) == [r.id for r in mine]
    everyone = ids(staff_client.get(url("locations", **DAY)).json())
    assert everyone == [theirs.id, *(r.id for r in mine)]


def test_the_tracker_filter_takes_lists_and_refuses_other_users_trackers(alice, bob, alice_client):
    a, b, c = (TrackerFactory(owner=alice) for _ in range(3))
    reports = {t.id: add_report(t, T0 + dt.timedelta(minutes=t.id % 50)) for t in (a, b, c)}
    foreign = TrackerFactory(owner=bob)

    listed = alice_client.get(url("locations", tracker=f"{a.id},{c.id}", **DAY)).json()
    repeated = alice_client.get(url("locations", tracker=[c.id, a.id], **DAY)).json()

    assert sorted(ids(listed)) == sorted([reports[a.id].id, reports[c.id].id])
    assert ids(repeated) == ids(listed)
    # Someone else's tracker and a tracker that does not exist: the same 400 on `tracker`.
    for other in (foreign.id, 999999999):
        fields = fields_of(alice_client.get(url("locations", tracker=f"{a.id},{other}", **DAY)))
        assert fields == {"tracker": [f"no such tracker: {other}"]}


def test_a_bbox_keeps_the_reports_inside_it(alice, alice_client):
    tracker = TrackerFactory(owner=alice)
    berlin = add_report(tracker, T0, lat=52.52, lon=13.40)
    add_report(tracker, T0 + dt.timedelta(minutes=1), lat=48.85, lon=2.35)  # Paris
    edge = add_report(tracker, T0 + dt.timedelta(minutes=2), lat=53.0, lon=14.0)  # on the edge

    body = alice_client.get(url("locations", bbox="13,52,14,53", **DAY)).json()

    assert ids(body) == [berlin.id, edge.id]


def test_a_bbox_across_the_antimeridian_is_two_boxes(alice, alice_client):
    tracker = TrackerFactory(owner=alice)
    fiji = add_report(tracker, T0, lat=-17.7, lon=178.0)
    samoa = add_report(tracker, T0 + dt.timedelta(minutes=1), lat=-13.8, lon=-171.8)
    add_report(tracker, T0 + dt.timedelta(minutes=2), lat=-15.0, lon=0.0)  # the other side
    add_report(tracker, T0 + dt.timedelta(minutes=3), lat=10.0, lon=179.0)  # too far north

    body = alice_client.get(url("locations", bbox="170,-20,-170,0", **DAY)).json()

    assert ids(body) == [fiji.id, samoa.id]


def test_max_accuracy_keeps_reports_at_least_that_accurate(alice, alice_client):
    tracker = TrackerFactory(owner=alice)
    good = add_report(tracker, T0, horizontal_accuracy=20)
    add_report(tracker, T0 + dt.timedelta(minutes=1), horizontal_accuracy=21)
    path = f"trackers/{tracker.id}/locations"

    assert ids(alice_client.get(url(path, max_accuracy=20, **DAY)).json()) == [good.id]
    assert len(ids(alice_client.get(url(path, max_accuracy=10**8, **DAY)).json())) == 2


def test_time_zones_and_an_unescaped_plus_are_read(alice, alice_client):
    tracker = TrackerFactory(owner=alice)
    inside = add_report(tracker, T0 + dt.timedelta(hours=1, minutes=30))
    add_report(tracker, T0 + dt.timedelta(hours=3))
    path = f"trackers/{tracker.id}/locations"

    # 03:00+02:00 is 01:00Z; a '+' sent unescaped arrives as a space.
    unescaped = f"/api/v1/{path}?starts_at=2026-11-01T03:00:00+02:00&ends_at=2026-11-01T02:00Z"
    escaped = url(path, starts_at="2026-11-01T03:00:00+02:00", ends_at="2026-11-01T02:00Z")

    assert ids(alice_client.get(unescaped).json()) == [inside.id]
    assert ids(alice_client.get(escaped).json()) == [inside.id]


# --- bad input -------------------------------------------------------------------------
BAD = [
    ({"starts_at": "2026-11-01T00:00:00"}, "starts_at"),  # naive
    ({"starts_at": "2026-11-01"}, "starts_at"),  # a date is naive too
    ({"starts_at": "yesterday"}, "starts_at"),
    ({"starts_at": "2026-13-01T00:00:00Z"}, "starts_at"),
    ({"ends_at": "9999-12-31T23:59:59-05:00"}, "ends_at"),  # beyond datetime's range in UTC
    ({"starts_at": None}, "starts_at"),  # missing
    ({"ends_at": None}, "ends_at"),
    ({"ends_at": "2026-10-31T00:00:00Z"}, "ends_at"),  # before starts_at
    ({"ends_at": "2026-11-01T00:00:00Z"}, "ends_at"),  # empty range
    ({"ends_at": "2027-11-03T00:00:00Z"}, "ends_at"),  # longer than API_MAX_RANGE_DAYS
    ({"bbox": "1,2,3"}, "bbox"),
    ({"bbox": "a,b,c,d"}, "bbox"),
    ({"bbox": "1,2,3,4,5"}, "bbox"),
    ({"bbox": "-181,0,10,10"}, "bbox"),
    ({"bbox": "0,-91,10,10"}, "bbox"),
    ({"bbox": "0,10,10,5"}, "bbox"),  # min_lat > max_lat
    ({"bbox": "nan,0,10,10"}, "bbox"),
    ({"bbox": "inf,0,10,10"}, "bbox"),
    ({"max_accuracy": "0"}, "max_accuracy"),
    ({"max_accuracy": "-5"}, "max_accuracy"),
    ({"max_accuracy": "ten"}, "max_accuracy"),
    ({"max_accuracy": "1" * 5000}, "max_accuracy"),
    ({"format": "xml"}, "format"),
    ({"limit": "0"}, "limit"),
    ({"limit": "1001"}, "limit"),
    ({"limit": "many"}, "limit"),
    ({"cursor": "not-a-cursor"}, "cursor"),
    ({"cursor": "é"}, "cursor"),
    ({"format": "csv", "limit": "10"}, "limit"),  # exports hold the whole range
    ({"foo": "1"}, "foo"),  # unknown parameter
    ({"tracker": "abc"}, "tracker"),
    ({"tracker": "0"}, "tracker"),
    ({"tracker": ""}, "tracker"),
]


@pytest.mark.parametrize(("change", "field"), BAD)
def test_bad_input_is_a_400_naming_the_parameter(alice, alice_client, change, field):
    tracker = TrackerFactory(owner=alice)
    params = {**DAY, **change}
    params = {k: v for k, v in params.items() if v is not None}

    assert field in fields_of(alice_client.get(url("locations", **params)))
    if field != "tracker":
        path = f"trackers/{tracker.id}/locations"
        assert field in fields_of(alice_client.get(url(path, **params)))


def test_a_repeated_parameter_and_tracker_on_the_tracker_route_are_400(alice, alice_client):
    tracker = TrackerFactory(owner=alice)
    path = f"/api/v1/trackers/{tracker.id}/locations"
    twice = f"{path}?{urlencode(DAY)}&starts_at=2026-11-01T01:00:00Z"

    assert "starts_at" in fields_of(alice_client.get(twice))
    assert "tracker" in fields_of(alice_client.get(f"{path}?{urlencode(DAY)}&tracker=1"))


def test_a_changed_cursor_is_a_400(alice, alice_client):
    tracker = TrackerFactory(owner=alice)
    good = keyset.encode(T0, 5)
    forged = good[:-2] + ("AA" if good[-2:] != "AA" else "BB")

    response = alice_client.get(url(f"trackers/{tracker.id}/locations", cursor=forged, **DAY))

    assert fields_of(response) == {"cursor": [keyset.INVALID]}
    assert keyset.decode(good) == (T0, 5)


@pytest.mark.parametrize("max_days", [1, 366])
def test_the_longest_range_follows_the_setting(alice, alice_client, settings, max_days):
    settings.API_MAX_RANGE_DAYS = max_days
    tracker = TrackerFactory(owner=alice)
    path = f"trackers/{tracker.id}/locations"
    ends = T0 + dt.timedelta(days=max_days)
    longer = ends + dt.timedelta(seconds=1)

    ok = alice_client.get(url(path, starts_at=DAY["starts_at"], ends_at=ends.isoformat()))
    too_long = alice_client.get(url(path, starts_at=DAY["starts_at"], ends_at=longer.isoformat()))

    assert ok.status_code == 200
    assert "ends_at" in fields_of(too_long)


# --- pages -----------------------------------------------------------------------------
def walk(client: Client, first_url: str, between: Any = None) -> list[int]:
    """Every id over all pages, calling `between()` after each page."""
    seen: list[int] = []
    next_url: str | None = first_url
    while next_url:
        body = client.get(next_url).json()
        seen += ids(body)
        next_url = body["data"]["next"]
        if next_url:
            assert next_url.startswith("http://testserver/api/v1/")
            assert parse_qs(urlsplit(next_url).query)["limit"] == ["7"]
        if between:
            between()
    return seen


def test_pages_neither_skip_nor_repeat_rows_while_reports_arrive(alice, alice_client):
    tracker = TrackerFactory(owner=alice)
    other = TrackerFactory(owner=alice)
    # Ties on purpose: several reports share a timestamp (ordered by id among themselves).
    existing = [
        add_report(tracker if i % 3 else other, T0 + dt.timedelta(minutes=i // 2)).id
        for i in range(40)
    ]
    arrivals: list[int] = []
    step = iter(range(1000))

    def arrive() -> None:
        n = next(step)
        for minutes in (n % 20 // 2, 5, 19):  # before, at and after the cursor's position
            arrivals.append(add_report(tracker, T0 + dt.timedelta(minutes=minutes)).id)

    seen = walk(alice_client, url("locations", limit=7, **DAY), between=arrive)

    assert len(seen) == len(set(seen))  # nothing twice
    assert set(existing) <= set(seen)  # nothing that existed at the start was skipped
    assert [i for i in seen if i in set(existing)] == existing  # in (timestamp, id) order
    assert set(seen) <= set(existing) | set(arrivals)


def test_the_last_page_has_no_next(alice, alice_client):
    tracker = TrackerFactory(owner=alice)
    made = [add_report(tracker, T0 + dt.timedelta(minutes=i)).id for i in range(14)]

    assert walk(alice_client, url(f"trackers/{tracker.id}/locations", limit=7, **DAY)) == made
    body = alice_client.get(url(f"trackers/{tracker.id}/locations", limit=14, **DAY)).json()
    assert body["data"]["next"] is None


# --- the indexes -----------------------------------------------------------------------
def bulk_reports(tracker_ids: list[int], n: int, start: dt.datetime, seconds: float) -> None:
    """n reports, one every `seconds` from `start`, round-robin over the trackers, spread over
    a 100 x 60 degree grid (SQL: fast enough for 100,000 rows in a test)."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO locations_locationreport (tracker_id, "timestamp", point,
                horizontal_accuracy, confidence, status, payload, fetched_at)
            SELECT (%s::bigint[])[1 + g %% %s], %s + g * make_interval(secs => %s),
                ST_SetSRID(ST_MakePoint(g %% 100 - 50 + 0.25, g %% 60 - 30 + 0.25), 4326),
                g %% 100, 2, 0, int8send(g), %s
            FROM generate_series(0, %s - 1) AS g
            """,
            [tracker_ids, len(tracker_ids), start, seconds, start, n],
        )
        cursor.execute("ANALYZE locations_locationreport")


def query_for(**params: str) -> Any:
    from django.http import QueryDict

    values = QueryDict(mutable=True)
    values.update({**DAY, **params})
    return parse_location_query(values, allow_tracker=True)


def spatial_index_name() -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'locations_locationreport' "
            "AND indexdef LIKE '%%USING gist (point)%%'"
        )
        return cursor.fetchone()[0]


def test_the_searches_use_the_tracker_time_and_spatial_indexes(alice, staff):
    trackers = [TrackerFactory(owner=alice).id for _ in range(50)]
    bulk_reports(trackers, 20_000, T0, seconds=4)  # 22 hours, all inside DAY
    one = dataclasses.replace(query_for(), trackers=(trackers[0],), after=(T0, 1))
    boxed = query_for(bbox="0,0,1,1")  # one cell of the grid: 1 report in 6,000

    by_tracker = report_rows(alice, one).order_by("timestamp", "id")[:101].explain()
    by_box = report_rows(staff, boxed).order_by("timestamp", "id")[:101].explain()

    assert "report_tracker_time_idx" in by_tracker
    assert "Seq Scan on locations_locationreport" not in by_tracker
    assert spatial_index_name() in by_box
    assert "Seq Scan on locations_locationreport" not in by_box
    found = page(report_rows(staff, boxed), boxed)["results"]
    assert found
    assert all(0 <= r["longitude"] <= 1 and 0 <= r["latitude"] <= 1 for r in found)


# --- latest ----------------------------------------------------------------------------
def test_latest_shows_each_of_my_trackers_newest_report_and_its_fences(alice, bob, alice_client):
    tracker = TrackerFactory(owner=alice, name="van 7")
    quiet = TrackerFactory(owner=alice)  # no report: not listed
    add_report(tracker, T0, lat=1.0, lon=2.0)
    add_report(tracker, T0 + dt.timedelta(hours=1), lat=52.5, lon=13.4, horizontal_accuracy=12)
    add_report(TrackerFactory(owner=bob), T0)
    fence = Geofence.objects.create(
        owner=alice, name="depot", kind=FenceKind.CIRCLE, center=Point(13.4, 52.5), radius_m=100
    )
    GeofenceState.objects.create(tracker=tracker, geofence=fence, side=Side.INSIDE)
    latest.maintain(force_refresh=True)

    body = alice_client.get("/api/v1/latest").json()

    assert body["data"] == {
        "results": [
            {
                "tracker": tracker.id,
                "tracker_name": "van 7",
                "timestamp": "2026-11-01T01:00:00Z",
                "latitude": 52.5,
                "longitude": 13.4,
                "accuracy": 12,
                "address": None,
                "fences": [{"id": fence.id, "name": "depot"}],
            }
        ],
        "next": None,
    }
    assert quiet.id not in [r["tracker"] for r in body["data"]["results"]]


def test_latest_pages_and_refuses_bad_parameters(alice, bob, alice_client):
    trackers = [TrackerFactory(owner=alice) for _ in range(5)]
    for t in trackers:
        add_report(t, T0)
    latest.maintain(force_refresh=True)

    first = alice_client.get("/api/v1/latest?limit=3").json()["data"]
    second = alice_client.get(first["next"]).json()["data"]

    assert [r["tracker"] for r in first["results"] + second["results"]] == [t.id for t in trackers]
    assert second["next"] is None
    foreign = TrackerFactory(owner=bob)
    assert "tracker" in fields_of(alice_client.get(f"/api/v1/latest?tracker={foreign.id}"))
    assert "format" in fields_of(alice_client.get("/api/v1/latest?format=gpx"))
    assert "limit" in fields_of(alice_client.get("/api/v1/latest?limit=0"))
    assert "cursor" in fields_of(alice_client.get("/api/v1/latest?cursor=xyz"))
    assert "starts_at" in fields_of(alice_client.get("/api/v1/latest?starts_at=x"))


def test_latest_as_geojson(alice, alice_client):
    tracker = TrackerFactory(owner=alice, name="bike")
    add_report(tracker, T0, lat=48.1, lon=11.6)
    latest.maintain(force_refresh=True)

    response = alice_client.get("/api/v1/latest?format=geojson")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/geo+json")
    body = response.json()
    assert body["type"] == "FeatureCollection"
    (feature,) = body["features"]
    assert feature["geometry"] == {"type": "Point", "coordinates": [11.6, 48.1]}
    assert feature["properties"]["tracker_name"] == "bike"
    assert feature["properties"]["fences"] == []
