"""demo_setup: the demo fleet (static trackers and AirTags), fetched from the simulator; its
fences and alert rule, whose enter/exit alerts reach demo_webhook_receiver, signed."""

from __future__ import annotations

import io
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import HTTPServer
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from findmy import KeyPair

from findmy_sim.management.commands import demo_webhook_receiver as receiver_command
from findmy_sim.simulator import SimulatedTracker
from geofences import deliveries
from geofences.channels import webhook_headers
from geofences.models import AlertDelivery, AlertRule, FenceKind, Geofence, GeofenceEvent
from geofences.worker import run_pass as process_pass
from locations.models import LocationReport
from trackers.models import AppleAccount, Tracker, TrackerKind
from trackers.worker import run_pass

pytestmark = pytest.mark.django_db


def demo_setup(simulator, *args: str) -> str:
    out = io.StringIO()
    call_command("demo_setup", "--simulator-url", simulator.base_url, *args, stdout=out)
    return out.getvalue()


def test_demo_setup_creates_the_fleet_once_and_prints_a_working_login(simulator):
    first = demo_setup(simulator, "--trackers", "12", "--accessories", "3")
    second = demo_setup(simulator, "--trackers", "12", "--accessories", "3")

    assert Tracker.objects.filter(kind=TrackerKind.STATIC).count() == 12
    assert Tracker.objects.filter(kind=TrackerKind.ACCESSORY).count() == 3
    assert AppleAccount.objects.count() == 1
    assert "15 trackers (3 of them AirTags)" in first
    password = second.rsplit("password=", 1)[1].strip()
    assert get_user_model().objects.get(username="admin").check_password(password)


def test_the_demo_fleet_is_fetched_through_the_simulator(simulator):
    demo_setup(simulator, "--trackers", "12", "--accessories", "3")
    # What `manage.py findmy_simulator` does by default: serve the trackers in the database.
    simulator.simulator.add_material(Tracker.objects.values_list("key_material", flat=True))

    summary = run_pass("demo")

    # AirTags catch up on their window over several requests: 15 trackers, more batches.
    assert summary.trackers >= 15
    assert summary.failures == 0
    assert not Tracker.objects.filter(last_processed_at__isnull=True).exists()
    assert not Tracker.objects.filter(window_next_index__isnull=False).exists()
    for tracker in Tracker.objects.all():
        assert LocationReport.objects.filter(tracker=tracker).exists(), tracker.name


# --- fences, the alert rule, the webhook receiver ---------------------------------------
def test_demo_setup_creates_fences_and_the_alert_rule_once(simulator):
    args = ("--trackers", "8", "--accessories", "2", "--fences", "4")
    first = demo_setup(simulator, *args, "--webhook-url", "http://127.0.0.1:9999/alerts")
    demo_setup(simulator, *args, "--webhook-url", "http://127.0.0.1:9999/alerts")

    admin = get_user_model().objects.get(username="admin")
    fences = Geofence.objects.filter(owner=admin)
    assert fences.filter(kind=FenceKind.CIRCLE).count() == 4
    assert fences.filter(kind=FenceKind.POLYGON).count() == 1
    assert fences.filter(name__startswith="airtag-01").exists()  # an AirTag among them
    assert not Tracker.objects.filter(owner__isnull=True).exists()  # the admin owns the fleet
    rule = AlertRule.objects.get()
    assert (rule.owner, rule.event_kinds, rule.channels) == (
        admin,
        ["enter", "exit"],
        ["webhook", "redis"],
    )
    assert rule.webhook_url == "http://127.0.0.1:9999/alerts"
    assert rule.webhook_secret
    assert "geofences: 5; alert rule 'demo: enter/exit' -> http://127.0.0.1:9999/alerts" in first


def test_the_fences_surround_places_the_simulator_makes_trackers_dwell_at(simulator):
    demo_setup(simulator, "--trackers", "3", "--accessories", "0", "--fences", "3")
    for tracker in Tracker.objects.all():
        places = SimulatedTracker(KeyPair.from_json(tracker.key_material).adv_key_bytes).places
        fence = Geofence.objects.get(name=f"{tracker.name} place 1")
        assert (fence.center.y, fence.center.x) == pytest.approx(places[0])
        assert fence.radius_m == 300


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[str], Any]]:
    """demo_webhook_receiver's server on an ephemeral port: (url, printed lines, receiver)."""
    lines: list[str] = []
    state = receiver_command.Receiver(
        receiver_command.rule_secret("demo: enter/exit"), "/alerts", lines.append
    )
    server = HTTPServer(("127.0.0.1", 0), receiver_command.handler_for(state))
    stop = threading.Event()
    thread = threading.Thread(target=receiver_command.serve, args=(server, stop), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/alerts", lines, state
    stop.set()
    thread.join(5)


@pytest.mark.django_db(transaction=True)  # the receiver reads the rule's secret on its own
def test_demo_alerts_reach_the_receiver_signed(simulator, settings, receiver):
    settings.ALERT_WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    url, lines, state = receiver
    args = ("--trackers", "12", "--accessories", "1", "--fences", "12", "--webhook-url", url)
    demo_setup(simulator, *args)
    state.secret = state.load_secret()
    simulator.simulator.add_material(Tracker.objects.values_list("key_material", flat=True))

    run_pass("demo")  # fetch a day of history
    process_pass("demo")  # fences, events, deliveries
    sent = deliveries.run_pass("demo")

    fence_events = GeofenceEvent.objects.filter(geofence__isnull=False)
    assert fence_events.filter(kind="enter").exists()
    assert AlertDelivery.objects.count() == 2 * fence_events.count()  # webhook and Redis
    assert not AlertDelivery.objects.exclude(status="delivered").exists(), sent.line()
    webhook = [line for line in lines if "signature ok" in line]
    assert len(webhook) == fence_events.count() == len(lines)
    assert any(" entered " in line for line in webhook)


def post(url: str, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


ALERT = {
    "id": 7,
    "event": {
        "kind": "enter",
        "tracker": {"id": 1, "name": "demo-001"},
        "geofence": {"id": 2, "name": "depot"},
        "occurred_at": "2025-06-01T12:00:00+00:00",
    },
    "rule": {"id": 3, "name": "demo: enter/exit"},
}


def test_the_receiver_refuses_what_is_not_signed_with_the_secret(receiver_server):
    url, lines = receiver_server
    body = json.dumps(ALERT).encode()
    good = webhook_headers(7, "s3cret", body)
    stale = webhook_headers(7, "s3cret", body, now=time.time() - 3600)
    forged = webhook_headers(7, "guessed", body)

    assert post(url, body, forged) == 401
    assert post(url, body, stale) == 401
    assert post(url, body, {"Content-Type": "application/json"}) == 401
    assert post(url, body, good) == 200
    assert post(url, body, good) == 200  # a retry of the same delivery

    assert lines[:3] == [
        "refused: bad signature",
        "refused: timestamp too far from our clock (a replay?)",
        "refused: unsigned",
    ]
    assert lines[3] == "alert 7: demo-001 entered depot at 2025-06-01T12:00:00+00:00 [signature ok]"
    assert lines[4].endswith("(a repeat of delivery-7: ignored)")


@pytest.fixture
def receiver_server() -> Iterator[tuple[str, list[str]]]:
    lines: list[str] = []
    state = receiver_command.Receiver(lambda: "s3cret", "/alerts", lines.append)
    server = HTTPServer(("127.0.0.1", 0), receiver_command.handler_for(state))
    stop = threading.Event()
    thread = threading.Thread(target=receiver_command.serve, args=(server, stop), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/alerts", lines
    stop.set()
    thread.join(5)
