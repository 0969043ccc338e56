"""Crafted tracks through the whole path: the simulator serves them, a fetch stores them,
the processor turns them into exactly the expected events."""

from __future__ import annotations

import datetime as dt
import math

import pytest
from django.contrib.gis.geos import Point, Polygon
from django.utils import timezone
from findmy import KeyPair

from geofences.models import FenceKind, Geofence, GeofenceEvent, GeofenceState
from geofences.worker import run_pass as process_pass
from locations.models import LocationReport, QueuedReport
from trackers.models import Tracker
from trackers.payloads import Fix
from trackers.worker import run_pass as fetch_pass

from ..factories import TrackerFactory, UserFactory

pytestmark = pytest.mark.django_db

LAT, LON = 52.52, 13.405


def east(metres: float, lat: float = LAT, lon: float = LON) -> tuple[float, float]:
    return lat, lon + metres / (111_320 * math.cos(math.radians(lat)))


@pytest.fixture
def owner():
    return UserFactory()


@pytest.fixture
def fence(owner):
    return Geofence.objects.create(
        owner=owner, name="depot", kind=FenceKind.CIRCLE, center=Point(LON, LAT), radius_m=200
    )


def track(simulator, owner, points: list[tuple[float, float, int]], start: dt.datetime):
    """A tracker whose reports are these (lat, lon, accuracy) fixes, 10 minutes apart."""
    key = KeyPair.new()
    tracker = TrackerFactory(key=key, owner=owner)
    fixes = [
        Fix(
            timestamp=start + dt.timedelta(minutes=10 * i),
            latitude=lat,
            longitude=lon,
            accuracy=acc,
        )
        for i, (lat, lon, acc) in enumerate(points)
    ]
    simulator.simulator.add_crafted(key.adv_key_bytes, fixes)
    return tracker, key


def at(metres: float, accuracy: int = 10) -> tuple[float, float, int]:
    lat, lon = east(metres)
    return lat, lon, accuracy


def events_of(tracker: Tracker) -> list[tuple[str, dt.datetime]]:
    return list(
        GeofenceEvent.objects.filter(tracker=tracker, geofence__isnull=False)
        .order_by("occurred_at")
        .values_list("kind", "occurred_at")
    )


def start_time() -> dt.datetime:
    return (timezone.now() - dt.timedelta(hours=6)).replace(second=0, microsecond=0)


def test_crafted_tracks_raise_exactly_the_expected_events(simulator, sim_account, owner, fence):
    t0 = start_time()
    clean, _ = track(simulator, owner, [at(1000)] * 3 + [at(0)] * 3 + [at(1000)] * 3, t0)
    straddle, _ = track(simulator, owner, [at(d, 300) for d in (150, 250, 180, 220, 100)], t0)
    jitter, _ = track(simulator, owner, [at(180), at(215)] * 4, t0)
    outlier, _ = track(simulator, owner, [at(0)] * 4 + [at(2000)] + [at(0)] * 3, t0)

    fetch_pass("fetch")
    summary = process_pass("process")

    step = dt.timedelta(minutes=10)
    assert events_of(clean) == [("enter", t0 + 3 * step), ("exit", t0 + 6 * step)]
    assert events_of(straddle) == []
    assert events_of(jitter) == []
    assert events_of(outlier) == [("enter", t0)]
    assert summary.reports == LocationReport.objects.count() == 9 + 5 + 8 + 8
    assert not QueuedReport.objects.exists()
    # Every tracker was seen for the first time, once.
    assert GeofenceEvent.objects.filter(kind="first_seen").count() == 4


def test_late_reports_never_change_state(simulator, sim_account, owner, fence):
    t0 = start_time()
    tracker, key = track(simulator, owner, [at(0)] * 3, t0 + dt.timedelta(hours=2))
    fetch_pass("fetch")
    process_pass("process")
    assert [k for k, _ in events_of(tracker)] == ["enter"]

    # Older reports, uploaded late, say the tracker was far away: too late to matter.
    late = [Fix(t0 + dt.timedelta(minutes=10 * i), *east(3000), 10) for i in range(3)]
    simulator.simulator.add_crafted(key.adv_key_bytes, late)
    Tracker.objects.filter(pk=tracker.pk).update(last_processed_at=None)
    fetch_pass("fetch")
    summary = process_pass("process")

    assert summary.late == 3
    assert [k for k, _ in events_of(tracker)] == ["enter"]
    assert GeofenceState.objects.get(tracker=tracker).side == "inside"
    assert not QueuedReport.objects.exists()


def test_a_second_pass_processes_nothing_again(simulator, sim_account, owner, fence):
    tracker, _ = track(simulator, owner, [at(0)] * 3, start_time())
    fetch_pass("fetch")
    first = process_pass("process")
    second = process_pass("process")
    assert (first.reports, second.reports, second.events) == (3, 0, 0)
    assert GeofenceEvent.objects.filter(tracker=tracker).count() == 2  # first seen, enter


def test_a_fence_assigned_to_other_trackers_is_ignored(simulator, sim_account, owner, fence):
    other = TrackerFactory(owner=owner)
    fence.trackers.add(other)
    tracker, _ = track(simulator, owner, [at(0)] * 3, start_time())
    fetch_pass("fetch")
    process_pass("process")
    assert events_of(tracker) == []


def test_polygon_fences_across_the_antimeridian(simulator, sim_account, owner):
    # A square 2 km a side centred on the antimeridian at 64°S (geography: short edges).
    half = 1000 / (111_320 * math.cos(math.radians(64)))
    lat_half = 1000 / 110_574
    ring = [
        (180 - half, -64 - lat_half),
        (-180 + half, -64 - lat_half),
        (-180 + half, -64 + lat_half),
        (180 - half, -64 + lat_half),
        (180 - half, -64 - lat_half),
    ]
    Geofence.objects.create(
        owner=owner, name="dateline", kind=FenceKind.POLYGON, area=Polygon(ring)
    )
    inside = [(-64.0, 179.9999, 10), (-64.0, -179.9999, 10)] * 2
    tracker, _ = track(simulator, owner, [(-64.0, 179.9, 10)] * 2 + inside, start_time())
    fetch_pass("fetch")
    process_pass("process")
    assert [k for k, _ in events_of(tracker)] == ["enter"]


def test_circles_near_the_pole(simulator, sim_account, owner):
    # 100 m from the pole is 100 m whatever the longitude: a planar test would disagree.
    Geofence.objects.create(
        owner=owner, name="pole", kind=FenceKind.CIRCLE, center=Point(0, 90), radius_m=500
    )
    near = 90 - 100 / 111_694
    tracker, _ = track(
        simulator, owner, [(near, lon, 10) for lon in (0, 90, 180, -90)], start_time()
    )
    fetch_pass("fetch")
    process_pass("process")
    assert [k for k, _ in events_of(tracker)] == ["enter"]
