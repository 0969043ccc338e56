"""Reverse geocoding against a local fake Nominatim: cache, reuse, breaker, retries, failures,
the backfill's window and lock, the offline provider, and the hit rate of a dwelling fleet."""

from __future__ import annotations

import datetime as dt
import io
import itertools
import json
import math
import random
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest
import time_machine
from django.contrib.gis.geos import Point
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from findmy_sim.simulator import SimulatedTracker
from locations import geocoding
from locations.cells import cell_of, distance_m
from locations.geocoders import configured_provider
from locations.geocoding import Backfill, cache_stats, immediate_pass, in_backfill_window
from locations.models import Address, CellLookup, GeocoderState, LocationReport
from locations.resolver import Resolver
from monitoring.models import FailureRecord
from trackers.models import Tracker

from ..factories import TrackerFactory

pytestmark = pytest.mark.django_db
USER_AGENT = "tracker-fleet-tests/1.0 (ops@example.com)"
BERLIN = (52.5200, 13.4050)
_payloads = itertools.count()


# --- a fake Nominatim at the network boundary ---------------------------------------------
class FakeNominatim:
    """/reverse in Nominatim's JSON format on 127.0.0.1. Records every request's arrival
    (monotonic clock), User-Agent and coordinates. `then(...)` scripts the next answers:
    an HTTP status, or ("slow", seconds); by default every place has an address, except
    where `ocean(lat, lon)` says so."""

    def __init__(self) -> None:
        self.requests: list[tuple[float, str, float, float]] = []
        self.script: deque = deque()
        self.ocean: Callable[[float, float], bool] = lambda lat, lon: False
        self.failing: Callable[[float, float], bool] = lambda lat, lon: False
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake.handle(self)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def start(self) -> FakeNominatim:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def options(self) -> dict[str, str]:
        return {"domain": f"127.0.0.1:{self.server.server_address[1]}", "scheme": "http"}

    def then(self, *steps: object) -> FakeNominatim:
        self.script.extend(steps)
        return self

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        arrived = time.monotonic()
        query = parse_qs(urlsplit(request.path).query)
        lat, lon = float(query["lat"][0]), float(query["lon"][0])
        with self.lock:
            self.requests.append((arrived, request.headers.get("User-Agent", ""), lat, lon))
            step = self.script.popleft() if self.script else 200
        if isinstance(step, tuple):
            time.sleep(step[1])
            step = 200
        if self.failing(lat, lon):
            step = 500
        if step != 200:
            body, status = {"error": "scripted failure"}, step
        elif self.ocean(lat, lon):
            body, status = {"error": "Unable to geocode"}, 200
        else:
            body, status = self.place(lat, lon), 200
        data = json.dumps(body).encode()
        try:
            request.send_response(status)
            request.send_header("Content-Type", "application/json")
            request.send_header("Content-Length", str(len(data)))
            request.end_headers()
            request.wfile.write(data)
        except OSError:
            pass  # the client gave up (a timeout test)

    @staticmethod
    def place(lat: float, lon: float) -> dict:
        return {
            "place_id": 1,
            "lat": str(lat),
            "lon": str(lon),
            "display_name": f"{lat:.5f} {lon:.5f}, Teststraße, Berlin, Germany",
            "address": {"road": "Teststraße", "city": "Berlin", "country_code": "de"},
        }


@pytest.fixture
def nominatim(settings: pytest.FixtureRequest) -> Iterator[FakeNominatim]:
    server = FakeNominatim().start()
    settings.GEOCODER = "nominatim"
    settings.GEOCODER_USER_AGENT = USER_AGENT
    settings.GEOCODER_OPTIONS = server.options
    settings.GEOCODE_RATE_PER_SECOND = 50.0  # the limit's own test runs at 1/s
    settings.GEOCODE_TIMEOUT = 2.0
    settings.GEOCODE_BACKFILL_PAUSE = 0.0
    yield server
    server.stop()


def east(metres: float, lat: float = BERLIN[0], lon: float = BERLIN[1]) -> tuple[float, float]:
    return lat, lon + metres / (111_320 * math.cos(math.radians(lat)))


def report(
    tracker: Tracker,
    lat: float,
    lon: float,
    *,
    minutes_ago: float = 0,
    accuracy: int = 10,
    newest: bool = True,
) -> LocationReport:
    """A stored report; `newest` moves the tracker's last-seen time to it, as ingest does."""
    at = timezone.now() - dt.timedelta(minutes=minutes_ago)
    stored = LocationReport.objects.create(
        tracker=tracker,
        timestamp=at,
        point=Point(lon, lat, srid=4326),
        horizontal_accuracy=accuracy,
        confidence=1,
        status=0,
        payload=next(_payloads).to_bytes(8, "big"),
        fetched_at=timezone.now(),
    )
    if newest:
        Tracker.objects.filter(id=tracker.id).update(last_seen_at=at)
    return stored


def geocoded(report_: LocationReport) -> LocationReport:
    report_.refresh_from_db()
    return report_


def once() -> Resolver:
    resolver = Resolver("test")
    immediate_pass(resolver, max_ids=None)
    return resolver


def backfill(**kwargs: object) -> Backfill:
    run = Backfill(Resolver("test-backfill"), **kwargs)  # type: ignore[arg-type]
    run.run()
    return run


# --- cells ----------------------------------------------------------------------------------
def test_cell_keys_name_the_size_and_cells_are_the_size_asked():
    cell = cell_of(*BERLIN)
    assert cell.key.startswith("25:")
    assert cell_of(*BERLIN, size=100).key.startswith("100:")
    assert cell.south <= BERLIN[0] < cell.north
    assert cell.west <= BERLIN[1] < cell.east
    width = distance_m(cell.latitude, cell.west, cell.latitude, cell.east)
    height = distance_m(cell.south, cell.longitude, cell.north, cell.longitude)
    assert width == pytest.approx(25, abs=0.2)
    assert height == pytest.approx(25, abs=0.2)
    assert cell_of(cell.latitude + 0.00005, cell.longitude).key == cell.key  # 5 m north
    assert cell_of(*east(30, cell.latitude, cell.longitude)).key != cell.key


def test_cells_stay_the_size_asked_far_north():
    cell = cell_of(78.22, 15.65)  # Svalbard
    assert distance_m(cell.latitude, cell.west, cell.latitude, cell.east) == pytest.approx(
        25, abs=0.2
    )


# --- cache and reuse -------------------------------------------------------------------------
def test_a_cached_cell_answers_without_a_request(nominatim):
    cell = cell_of(*BERLIN)
    address = Address.objects.create(
        cell=cell.key, provider="nominatim", label="Unter den Linden", point=Point(0, 0)
    )
    stored = report(TrackerFactory(), *BERLIN)
    once()
    assert geocoded(stored).address == address
    assert nominatim.requests == []
    address.refresh_from_db()
    assert address.hits == 1
    assert cache_stats()["cache_hits"] == 1


def test_reuse_within_reuse_meters_makes_no_request(nominatim, settings):
    settings.GEOCODE_REUSE_METERS = 50
    tracker = TrackerFactory()
    first = report(tracker, *BERLIN, minutes_ago=30)
    once()
    assert len(nominatim.requests) == 1
    moved = report(tracker, *east(35))  # another cell, 35 m from where the address is for
    assert cell_of(*east(35)).key != cell_of(*BERLIN).key
    once()
    assert len(nominatim.requests) == 1
    assert geocoded(moved).address == geocoded(first).address
    assert cache_stats()["reuses"] == 1


def test_beyond_reuse_meters_it_is_looked_up(nominatim, settings):
    settings.GEOCODE_REUSE_METERS = 50
    tracker = TrackerFactory()
    first = report(tracker, *BERLIN, minutes_ago=30)
    once()
    moved = report(tracker, *east(200))
    once()
    assert len(nominatim.requests) == 2
    assert geocoded(moved).address != geocoded(first).address


def test_a_poor_fix_takes_the_previous_address_within_its_accuracy(nominatim, settings):
    settings.GEOCODE_REUSE_METERS = 50
    tracker = TrackerFactory()
    first = report(tracker, *BERLIN, minutes_ago=30)
    once()
    vague = report(tracker, *east(180), accuracy=250)  # cannot tell 180 m apart
    once()
    assert len(nominatim.requests) == 1
    assert geocoded(vague).address == geocoded(first).address


def test_one_lookup_answers_every_waiting_report_of_its_place(nominatim):
    tracker = TrackerFactory()
    history = [report(tracker, *east(i), minutes_ago=60 - i, newest=False) for i in range(5)]
    newest = report(tracker, *east(3))
    once()
    assert len(nominatim.requests) == 1
    address = geocoded(newest).address
    assert address is not None
    assert {geocoded(r).address for r in history} == {address}


def test_only_the_newest_report_is_looked_up_at_once(nominatim):
    tracker = TrackerFactory()
    old = report(tracker, *east(5_000), minutes_ago=60, newest=False)
    newest = report(tracker, *BERLIN)
    once()
    assert len(nominatim.requests) == 1
    assert geocoded(newest).address is not None
    assert geocoded(old).address is None
    assert old.geocode_note == ""


def test_every_request_carries_the_configured_user_agent(nominatim):
    for i in range(3):
        report(TrackerFactory(), *east(1_000 * i))
    once()
    assert [ua for _, ua, _, _ in nominatim.requests] == [USER_AGENT] * 3


# --- the breaker, retries and failures ---------------------------------------------------------
def test_a_429_opens_the_breaker_at_once_and_nothing_is_sent_while_open(nominatim):
    nominatim.then(429)
    stored = [report(TrackerFactory(), *east(1_000 * i)) for i in range(3)]
    once()
    assert len(nominatim.requests) == 1
    assert GeocoderState.objects.get(provider="nominatim").breaker == "open"
    # The newest reports got the offline city-level answer meanwhile.
    assert {geocoded(r).address.label for r in stored} == {"Berlin, Germany (city level)"}
    report(TrackerFactory(), *east(9_000))
    once()
    assert len(nominatim.requests) == 1


def test_a_fallback_is_replaced_once_the_provider_answers_again(nominatim):
    nominatim.then(429)
    stored = report(TrackerFactory(), *BERLIN)
    once()
    assert geocoded(stored).address.provider == "offline"
    GeocoderState.objects.update(open_until=timezone.now() - dt.timedelta(seconds=1))
    once()
    assert geocoded(stored).address.provider == "nominatim"
    assert GeocoderState.objects.get(provider="nominatim").breaker == "closed"


def test_repeated_5xx_open_the_breaker(nominatim, settings):
    settings.GEOCODE_BREAKER_THRESHOLD = 2
    nominatim.then(500, 502, 500)
    report(TrackerFactory(), *BERLIN)
    report(TrackerFactory(), *east(3_000))
    once()
    state = GeocoderState.objects.get(provider="nominatim")
    assert len(nominatim.requests) == 2  # the second failure opened it before a third
    assert state.breaker == "open"
    assert state.consecutive_failures == 2


def test_the_breaker_closes_after_a_successful_probe(nominatim, settings):
    settings.GEOCODE_BREAKER_THRESHOLD = 1
    nominatim.then(500)
    report(TrackerFactory(), *BERLIN)
    once()
    assert GeocoderState.objects.get(provider="nominatim").breaker == "open"
    GeocoderState.objects.update(open_until=timezone.now() - dt.timedelta(seconds=1))
    CellLookup.objects.update(retry_after=None)
    later = report(TrackerFactory(), *east(3_000))
    once()
    assert GeocoderState.objects.get(provider="nominatim").breaker == "closed"
    assert geocoded(later).address.provider == "nominatim"


def test_a_timeout_is_retried_then_succeeds(nominatim, settings):
    settings.GEOCODE_TIMEOUT = 0.5
    nominatim.then(("slow", 1.5))
    stored = report(TrackerFactory(), *BERLIN)
    once()
    assert len(nominatim.requests) == 2
    assert geocoded(stored).address.provider == "nominatim"
    assert not FailureRecord.objects.exists()
    assert GeocoderState.objects.get(provider="nominatim").consecutive_failures == 0


def test_a_failure_is_recorded_and_retried_by_the_backfill(nominatim):
    nominatim.then(400)  # not transient: no retry now
    newest = report(TrackerFactory(), *BERLIN)
    once()
    record = FailureRecord.objects.get()
    assert record.category == "geocode"
    assert record.detail["cell"] == cell_of(*BERLIN).key
    assert geocoded(newest).address.provider == "offline"  # meanwhile, at city level
    CellLookup.objects.update(retry_after=timezone.now() - dt.timedelta(seconds=1))
    backfill(ignore_window=True)
    assert geocoded(newest).address.provider == "nominatim"
    assert not CellLookup.objects.exists()


def test_a_history_report_that_fails_waits_for_the_next_backfill(nominatim):
    nominatim.then(400)
    tracker = TrackerFactory()
    report(tracker, *east(5_000))
    old = report(tracker, *BERLIN, minutes_ago=90, newest=False)
    once()
    nominatim.then(400)
    run = backfill(ignore_window=True)
    assert run.reason == "done"
    assert geocoded(old).address is None
    assert old.geocode_note == ""
    CellLookup.objects.update(retry_after=timezone.now() - dt.timedelta(seconds=1))
    backfill(ignore_window=True)
    assert geocoded(old).address.provider == "nominatim"


def test_a_cell_is_given_up_after_max_attempts_with_a_note(nominatim, settings):
    settings.GEOCODE_MAX_ATTEMPTS = 2
    tracker = TrackerFactory()
    report(tracker, *east(5_000))
    old = report(tracker, *BERLIN, minutes_ago=90, newest=False)
    once()
    for _ in range(2):
        nominatim.then(400)
        CellLookup.objects.update(retry_after=None)
        backfill(ignore_window=True)
    old = geocoded(old)
    assert old.geocode_note.startswith("geocoding gave up after 2 attempts")
    assert old.address.label == "Berlin, Germany (city level)"
    requests = len(nominatim.requests)
    later = report(TrackerFactory(), *BERLIN, newest=False)  # the same cell: given up too
    backfill(ignore_window=True)
    assert len(nominatim.requests) == requests
    assert geocoded(later).geocode_note.startswith("geocoding gave up")
    call_command("geocode_locations", "--retry-failed", stdout=io.StringIO())
    backfill(ignore_window=True)
    assert geocoded(old).address.provider == "nominatim"
    assert old.geocode_note == ""


def test_no_address_at_sea_is_cached_and_noted(nominatim):
    nominatim.ocean = lambda lat, lon: True
    at_sea = report(TrackerFactory(), 54.5, 4.0)
    once()
    again = report(TrackerFactory(), 54.5, 4.0)
    once()
    assert len(nominatim.requests) == 1
    for r in (at_sea, again):
        assert geocoded(r).address is None
        assert r.geocode_note == "no address at this place (nominatim)"


# --- alerts -----------------------------------------------------------------------------------
def test_a_report_an_alert_waits_for_is_looked_up_at_once(nominatim):
    from geofences.models import AlertDelivery, AlertRule, GeofenceEvent

    tracker = TrackerFactory()
    report(tracker, *east(5_000))
    alerted = report(tracker, *BERLIN, minutes_ago=120, newest=False)
    event = GeofenceEvent.objects.create(
        tracker=tracker,
        kind="first_seen",
        report=alerted,
        occurred_at=alerted.timestamp,
        dedupe_key="t",
    )
    from ..factories import UserFactory

    rule = AlertRule.objects.create(
        owner=UserFactory(), name="r", event_kinds=["first_seen"], channels=["redis"]
    )
    AlertDelivery.objects.create(event=event, rule=rule, channel="redis")
    once()
    assert len(nominatim.requests) == 2
    assert geocoded(alerted).address.provider == "nominatim"


# --- the backfill ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("moment", "inside"),
    [
        ("19:00", True),
        ("23:59", True),
        ("03:00", True),
        ("06:59", True),
        ("07:00", False),
        ("12:00", False),
        ("18:59", False),
    ],
)
def test_the_default_window_wraps_midnight(moment, inside):
    hour, minute = map(int, moment.split(":"))
    now = dt.datetime(2026, 11, 25, hour, minute, tzinfo=dt.UTC)
    assert in_backfill_window(now) is inside


def test_windows_that_do_not_wrap_and_the_whole_day():
    noon = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
    assert in_backfill_window(noon, "08:00-17:00")
    assert not in_backfill_window(noon, "13:00-17:00")
    assert in_backfill_window(noon.replace(hour=23, minute=59), "00:00-24:00")


def test_the_backfill_waits_for_its_window(nominatim):
    tracker = TrackerFactory()
    report(tracker, *east(5_000))
    old = report(tracker, *BERLIN, minutes_ago=90, newest=False)
    once()
    with time_machine.travel(dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)):
        run = backfill()
    assert run.reason == "outside the backfill window"
    assert geocoded(old).address is None
    assert len(nominatim.requests) == 1
    with time_machine.travel(dt.datetime(2026, 11, 25, 20, 0, tzinfo=dt.UTC)):
        run = backfill()
    assert run.reason == "done"
    assert geocoded(old).address is not None
    assert len(nominatim.requests) == 2


def test_only_one_backfill_runs_at_once(nominatim):
    tracker = TrackerFactory()
    report(tracker, *east(5_000))
    old = report(tracker, *BERLIN, minutes_ago=90, newest=False)
    db = connection.settings_dict
    with psycopg.connect(
        host=db["HOST"],
        port=db["PORT"],
        user=db["USER"],
        password=db["PASSWORD"],
        dbname=db["NAME"],
        autocommit=True,
    ) as other:
        other.execute("SELECT pg_advisory_lock(%s)", [geocoding.BACKFILL_LOCK_KEY])
        run = backfill(ignore_window=True)
        assert run.reason == "another process is backfilling"
        assert geocoded(old).address is None
    assert backfill(ignore_window=True).reason == "done"
    assert geocoded(old).address is not None


def test_the_backfill_goes_newest_first_in_batches(nominatim, settings):
    settings.GEOCODE_BACKFILL_BATCH = 2
    tracker = TrackerFactory()
    report(tracker, 40.0, 0.0)
    old = [report(tracker, *east(1_000 * i), minutes_ago=10 * i, newest=False) for i in range(1, 6)]
    run = backfill(ignore_window=True)
    assert run.batches == 3
    first, *history = [(lat, lon) for _, _, lat, lon in nominatim.requests]
    assert first[0] == pytest.approx(40.0, abs=0.001)  # the newest report
    assert [lon for _, lon in history] == sorted(lon for _, lon in history)  # then 1 km, 2 km...
    assert all(geocoded(r).address is not None for r in old)


# --- the offline provider -----------------------------------------------------------------------
@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    real = socket.socket.connect

    def connect(self: socket.socket, address: object) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in (  # type: ignore[index]
            "127.0.0.1",
            "::1",
            "localhost",
        ):
            raise OSError("no network in this test")
        return real(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)


def test_the_offline_provider_answers_at_city_level_without_network(settings, no_network):
    settings.GEOCODER = "offline"
    stored = report(TrackerFactory(), 48.8566, 2.3522)
    sea = report(TrackerFactory(), 0.0, -30.0)
    once()
    assert geocoded(stored).address.label == "Paris, France (city level)"
    assert stored.address.components["country_code"] == "FR"
    assert stored.address.cell.startswith("offline:1000:")  # GEOCODE_OFFLINE_CELL_METERS
    assert geocoded(sea).geocode_note == "no address at this place (offline)"


def test_the_offline_backfill_runs_at_any_hour(settings, no_network):
    settings.GEOCODER = "offline"
    tracker = TrackerFactory()
    report(tracker, *BERLIN)
    old = report(tracker, 48.1351, 11.5820, minutes_ago=60, newest=False)
    with time_machine.travel(dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)):
        backfill()
    assert geocoded(old).address.label == "Munich, Germany (city level)"


# --- every report ends up answered ----------------------------------------------------------------
def test_every_report_ends_with_an_address_or_a_note(nominatim, settings):
    settings.GEOCODE_MAX_ATTEMPTS = 1
    nominatim.ocean = lambda lat, lon: lat < -50
    nominatim.failing = lambda lat, lon: abs(lon - 100.0) < 0.01
    rng = random.Random(7)
    for t in range(6):
        tracker = TrackerFactory()
        for i in range(8):
            lat, lon = east(rng.uniform(0, 3_000), lat=BERLIN[0] + t * 0.01)
            report(tracker, lat, lon, minutes_ago=100 - i, newest=i == 7)
    ocean = report(TrackerFactory(), -60.0, 10.0)
    failing = report(TrackerFactory(), 10.0, 100.0, minutes_ago=200, newest=False)
    out = io.StringIO()
    call_command("geocode_locations", "--once", stdout=out)
    call_command("geocode_locations", "--backfill", "--ignore-window", stdout=out)
    assert "backfill: done" in out.getvalue()
    assert not LocationReport.objects.filter(address__isnull=True, geocode_note="").exists()
    assert geocoded(ocean).geocode_note.startswith("no address at this place")
    assert geocoded(failing).geocode_note.startswith("geocoding gave up after 1 attempts")
    assert cache_stats()["ungeocoded"] == 0
    assert cache_stats()["pending_requests"] == 0


# --- the hit rate of a dwelling fleet -------------------------------------------------------------
def dwelling_fleet(trackers: int, rng: random.Random) -> list[tuple[Tracker, list]]:
    """Trackers that dwell at 3-6 places within 15 km of a city, as the demo's do."""
    fleet = []
    for _ in range(trackers):
        centre = rng.choice([BERLIN, (48.8566, 2.3522), (51.5072, -0.1276)])
        places = []
        for _ in range(rng.randint(3, 6)):
            r, a = 15_000 * math.sqrt(rng.random()), rng.uniform(0, 2 * math.pi)
            lat = centre[0] + r * math.cos(a) / 111_320
            lon = centre[1] + r * math.sin(a) / (111_320 * math.cos(math.radians(centre[0])))
            places.append((lat, lon))
        fleet.append((TrackerFactory(), places))
    return fleet


def fixes(fleet: list, n: int, rng: random.Random, start_minutes: float) -> None:
    """n reports per tracker at its places, scattered within 0.6 x accuracy (5-50 m); one
    in twenty a poor fix (150-250 m), as the simulator makes them."""
    for tracker, places in fleet:
        for i in range(n):
            lat, lon = rng.choice(places)
            poor = rng.random() > 0.95
            accuracy = rng.randint(150, 250) if poor else rng.randint(5, 50)
            d, a = accuracy * 0.6 * rng.random(), rng.uniform(0, 2 * math.pi)
            lat += d * math.cos(a) / 111_320
            lon += d * math.sin(a) / (111_320 * math.cos(math.radians(lat)))
            report(
                tracker,
                lat,
                lon,
                minutes_ago=start_minutes - 60 * i,
                accuracy=accuracy,
                newest=i == n - 1,
            )


def test_a_dwelling_fleet_is_answered_from_the_cache_after_its_first_pass(settings):
    settings.GEOCODER = "offline"
    rng = random.Random(42)
    fleet = dwelling_fleet(40, rng)
    fixes(fleet, 24, rng, start_minutes=48 * 60)  # the first day: the cache warms up
    once()
    backfill()
    first = cache_stats()
    fixes(fleet, 24, rng, start_minutes=24 * 60)  # the next day
    once()
    backfill()
    after = cache_stats()
    answered = {k: after[k] - first[k] for k in ("cache_hits", "reuses", "provider_requests")}
    rate = (answered["cache_hits"] + answered["reuses"]) / sum(answered.values())
    assert rate >= 0.95, answered
    assert after["hit_rate"] > first["hit_rate"]
    assert after["ungeocoded"] == 0


def test_the_demo_fleet_is_answered_from_the_cache_after_its_first_hour(settings):
    """The demo's fleet as the simulator makes it (60 trackers, the 7 days of history Apple
    keeps fetched in the first hour, then a report every 30-90 minutes each), through the
    real geocoder with the demo's offline provider: after the first hour, at least 95% of
    reports need no lookup."""
    settings.GEOCODER = "offline"
    fleet = [(TrackerFactory(), SimulatedTracker(None, seed=f"demo-{i}")) for i in range(60)]
    now = timezone.now().timestamp()
    start = now - 30 * 3600  # the demo starts 6 hours ago, with 24 hours of history

    def store(since: float, until: float) -> int:
        stored = 0
        for tracker, sim in fleet:
            fixes = [sim.fix(slot) for slot in sim.slots_between(since, until)]
            fixes = [f for f in fixes if since <= f.timestamp.timestamp() < until]
            for i, fix in enumerate(fixes):
                report(
                    tracker,
                    fix.latitude,
                    fix.longitude,
                    minutes_ago=(now - fix.timestamp.timestamp()) / 60,
                    accuracy=fix.accuracy,
                    newest=i == len(fixes) - 1,
                )
            stored += len(fixes)
        return stored

    def answered() -> dict[str, int]:
        stats = cache_stats()
        return {k: stats[k] for k in ("cache_hits", "reuses", "provider_requests")}

    store(start - 7 * 24 * 3600, start)  # the first hour: the history
    once()
    backfill()
    first = answered()
    later = 0
    for hour in range(6):
        later += store(start + hour * 3600, start + (hour + 1) * 3600)
        once()
        backfill()
    after = {k: v - first[k] for k, v in answered().items()}
    rate = (after["cache_hits"] + after["reuses"]) / sum(after.values())
    print(f"first hour {first}; later {after}; hit rate after the first hour {rate:.3f}")
    assert sum(after.values()) == later > 200
    assert rate >= 0.95, after
    assert cache_stats()["ungeocoded"] == 0


# --- configuration -------------------------------------------------------------------------------
def test_nominatim_needs_an_identifying_user_agent(settings):
    settings.GEOCODER = "nominatim"
    settings.GEOCODER_OPTIONS = {}
    for agent in ("", "geopy/2.5.0", "my-application"):
        settings.GEOCODER_USER_AGENT = agent
        with pytest.raises(ImproperlyConfigured, match="GEOCODER_USER_AGENT"):
            configured_provider()
        with pytest.raises(CommandError, match="GEOCODER_USER_AGENT"):
            call_command("geocode_locations", "--once")
    settings.GEOCODER_USER_AGENT = USER_AGENT
    assert configured_provider().name == "nominatim"


def test_geocoder_options_may_not_hide_the_user_agent(settings):
    settings.GEOCODER = "nominatim"
    settings.GEOCODER_USER_AGENT = USER_AGENT
    settings.GEOCODER_OPTIONS = {"user_agent": "geopy/2.5.0"}
    with pytest.raises(ImproperlyConfigured, match="GEOCODER_OPTIONS"):
        configured_provider()


def test_cache_stats_before_anything_happened():
    stats = cache_stats()
    assert stats == {
        "cache_size": 0,
        "cache_hits": 0,
        "reuses": 0,
        "provider_requests": 0,
        "provider_failures": 0,
        "hit_rate": 1.0,
        "ungeocoded": 0,
        "pending_requests": 0,
    }


def test_pending_requests_counts_the_cells_still_to_look_up(nominatim):
    tracker = TrackerFactory()
    report(tracker, 40.0, 0.0)
    for i in range(6):  # three places, two reports each
        report(tracker, *east(1_000 * (i // 2) + i % 2), minutes_ago=10 + i, newest=False)
    once()
    stats = cache_stats()
    assert stats["ungeocoded"] == 6
    assert stats["pending_requests"] == 3


def test_the_tasks_geocode_and_say_when_they_cannot(settings):
    from locations import tasks

    settings.GEOCODER = "offline"
    settings.PROCESSING_TIMEOUT = 5  # the tasks end within django-q2's timeout (here 4 s)
    stored = report(TrackerFactory(), *BERLIN)
    assert tasks.geocode_newest()["passes"] >= 1
    assert geocoded(stored).address.label == "Berlin, Germany (city level)"
    assert tasks.geocode_backfill()["result"] == "done"
    settings.GEOCODER = "nominatim"
    settings.GEOCODER_USER_AGENT = ""
    assert tasks.geocode_newest() == {"result": "not configured"}
    assert FailureRecord.objects.get().fingerprint == "geocode:config"


def test_answered_reports_are_never_answered_or_counted_again(nominatim):
    stored = report(TrackerFactory(), *BERLIN)
    once()
    before = cache_stats()
    resolver = Resolver("again")
    assert resolver.load([stored.id]) == []
    immediate_pass(resolver, max_ids=None)
    assert cache_stats() == before
