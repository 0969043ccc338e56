"""Geocoders as separate processes against the test database and a local fake Nominatim:
one request per second for the whole deployment, the configured User-Agent on every one,
heartbeats, and a stop within a second of SIGTERM even with a request in flight.

These tests commit their data (transactional_db) so that the processes can see it.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.db import connection

from locations.models import LocationReport
from monitoring.models import ServiceInstance

from ..factories import TrackerFactory
from .test_geocoding import USER_AGENT, FakeNominatim, report

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def nominatim() -> Iterator[FakeNominatim]:
    server = FakeNominatim().start()
    yield server
    server.stop()


@pytest.fixture
def spawn(nominatim: FakeNominatim) -> Iterator[Callable[..., subprocess.Popen]]:
    db = connection.settings_dict
    base = {
        **os.environ,
        "DATABASE_URL": (
            f"postgis://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
        ),
        "GEOCODER": "nominatim",
        "GEOCODER_USER_AGENT": USER_AGENT,
        "GEOCODER_OPTIONS": json.dumps(nominatim.options),
        "GEOCODE_RATE_PER_SECOND": "1",
        "HEARTBEAT_INTERVAL": "1",
        "LOG_LEVEL": "WARNING",
        "LOG_FORMAT": "text",
        "PYTHONUNBUFFERED": "1",
    }
    started: list[subprocess.Popen] = []

    def start(*args: str, **env: str) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "geocode_locations", *args],
            cwd=ROOT,
            env={**base, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(30)


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_four_processes_send_at_most_one_request_a_second_with_the_user_agent(nominatim, spawn):
    stored = [report(TrackerFactory(), 40.0 + i * 0.05, 10.0) for i in range(12)]
    geocoders = [spawn("--once", "--name", f"geocoder-{i}") for i in range(4)]
    outputs = [proc.communicate(timeout=120)[0] for proc in geocoders]
    assert [proc.returncode for proc in geocoders] == [0] * 4, outputs

    arrivals = sorted(at for at, _, _, _ in nominatim.requests)
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert len(arrivals) == 12  # one per place: no two processes asked about one cell
    assert min(gaps) >= 0.95, gaps  # never two within a second (clock tolerance 50 ms)
    assert {ua for _, ua, _, _ in nominatim.requests} == {USER_AGENT}
    assert sum("provider_request=" in out for out in outputs) >= 2  # the work was shared
    for r in stored:
        r.refresh_from_db()
        assert r.address is not None
        assert r.address.provider == "nominatim"


def test_a_geocoder_beats_and_stops_within_a_second_of_sigterm(nominatim, spawn):
    nominatim.then(("slow", 30))  # the first request hangs
    stored = report(TrackerFactory(), 52.52, 13.405)
    geocoder = spawn("--name", "geocoder-sigterm", GEOCODE_TIMEOUT="60")
    wait_for(lambda: len(nominatim.requests) == 1, 60, "a request in flight")
    wait_for(
        lambda: ServiceInstance.objects.filter(service_name="geocoding_service").exists(),
        30,
        "a heartbeat",
    )
    figures = ServiceInstance.objects.get(service_name="geocoding_service").payload
    assert {"cache_size", "pending_requests", "breaker"} <= figures.keys()

    asked = time.monotonic()
    geocoder.send_signal(signal.SIGTERM)
    out, _ = geocoder.communicate(timeout=30)
    assert geocoder.returncode == 0, out
    assert time.monotonic() - asked < 1.5  # a second, plus the interpreter's exit
    assert ServiceInstance.objects.get(service_name="geocoding_service").stopped_at is not None
    stored.refresh_from_db()
    assert stored.address is None  # the answer never came; the next geocoder asks again
    assert LocationReport.objects.filter(address__isnull=True).count() == 1


def test_a_geocoder_survives_losing_its_database_connections(spawn):
    geocoder = spawn("--name", "geocoder-reconnects", GEOCODER="offline", WORKER_ERROR_BACKOFF="1")
    first = report(TrackerFactory(), 48.8566, 2.3522)
    wait_for(
        lambda: LocationReport.objects.filter(id=first.id, address__isnull=False).exists(),
        60,
        "the first report answered",
    )
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    later = report(TrackerFactory(), 52.52, 13.405)
    wait_for(
        lambda: LocationReport.objects.filter(id=later.id, address__isnull=False).exists(),
        60,
        "a report answered after the connections were cut",
    )
    later.refresh_from_db()
    assert later.address.label == "Berlin, Germany (city level)"
    assert geocoder.poll() is None
    geocoder.send_signal(signal.SIGTERM)
    assert geocoder.wait(10) == 0
