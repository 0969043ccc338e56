"""Exactly once across processes: three processors turn one fleet's reports into each event
once and each delivery once; two senders then send each delivery once.

The data is committed (transaction=True) so that `manage.py process_locations --once` and
`manage.py send_alerts --once`, started as separate processes against the test database,
see it.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
import redis
from django.contrib.gis.geos import Point
from django.db import connection, transaction
from django.db.backends.utils import CursorWrapper
from django.utils import timezone
from findmy import KeyPair

from geofences.models import AlertDelivery, AlertRule, FenceKind, Geofence, GeofenceEvent
from locations.models import LocationReport, QueuedReport
from trackers.payloads import Fix
from trackers.worker import run_pass as fetch_pass

from ..factories import TrackerFactory, UserFactory
from .test_deliveries import Receiver, subprocess_env
from .test_processing import LAT, LON, east

ROOT = Path(__file__).resolve().parents[2]
TRACKERS = 30
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def receiver():
    receiver = Receiver(delay=0.03)  # slow enough that the two senders overlap
    server = receiver.serve()
    yield receiver
    receiver.released.set()
    server.shutdown()
    server.server_close()


def run_together(*commands: list[str], gate: str, **env: str) -> list[str]:
    """Run the manage.py commands at once and wait for all; their outputs.

    Python and Django take a second or two to start, longer than the work itself, so the
    first process up would do everything alone. The `gate` table is locked until every
    process is waiting on it: then they all start on the work at the same instant.
    """
    procs: list[subprocess.Popen] = []
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(f"LOCK TABLE {gate} IN EXCLUSIVE MODE")
            procs += [
                subprocess.Popen(
                    [sys.executable, "manage.py", *command],
                    cwd=ROOT,
                    env=subprocess_env(**env),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for command in commands
            ]
            deadline = time.monotonic() + 120
            while waiting(cursor) < len(procs):
                assert time.monotonic() < deadline, "the processes never reached the gate"
                assert all(p.poll() is None for p in procs), "a process exited early"
                time.sleep(0.05)
        outputs = []
        for proc in procs:
            out, err = proc.communicate(timeout=180)
            assert proc.returncode == 0, err
            outputs.append(out)
        return outputs
    finally:
        # A failed test must not leave a process behind (the flush would wait for it).
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


def waiting(cursor: CursorWrapper) -> int:
    """Other sessions of this database waiting for a lock."""
    # Inside a transaction the statistics views are a snapshot unless cleared.
    cursor.execute("SELECT pg_stat_clear_snapshot()")
    cursor.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
    )
    return cursor.fetchone()[0]


def figure(output: str, name: str) -> int:
    return int(re.search(rf"\b{name}=(\d+)", output).group(1))


def crossing(simulator, owner, start: dt.datetime):
    """A tracker 1 km east of the fence, then at its centre, then away again (3 fixes each)."""
    key = KeyPair.new()
    tracker = TrackerFactory(key=key, owner=owner)
    places = [east(1000)] * 3 + [(LAT, LON)] * 3 + [east(1000)] * 3
    fixes = [
        Fix(
            timestamp=start + dt.timedelta(minutes=10 * i), latitude=lat, longitude=lon, accuracy=10
        )
        for i, (lat, lon) in enumerate(places)
    ]
    simulator.simulator.add_crafted(key.adv_key_bytes, fixes)
    return tracker


class Subscriber:
    """A real Redis subscriber on the owner's notifications channel, collecting one rule's
    messages (other test runs may share this Redis)."""

    def __init__(self, url: str, channel: str, rule: str) -> None:
        self.pubsub = redis.Redis.from_url(url).pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(channel)
        self.rule = rule
        self.messages: list[dict] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            message = self.pubsub.get_message(timeout=0.1)
            if message and json.loads(message["data"])["rule"]["name"] == self.rule:
                self.messages.append(json.loads(message["data"]))

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.pubsub.close()


def test_three_processors_and_two_senders_do_everything_exactly_once(
    simulator, sim_account, receiver, settings
):
    owner = UserFactory()
    Geofence.objects.create(
        owner=owner, name="depot", kind=FenceKind.CIRCLE, center=Point(LON, LAT), radius_m=200
    )
    t0 = (timezone.now() - dt.timedelta(hours=6)).replace(second=0, microsecond=0)
    trackers = [crossing(simulator, owner, t0) for _ in range(TRACKERS)]
    rule = AlertRule.objects.create(
        owner=owner,
        name=f"depot watch {uuid.uuid4().hex[:8]}",
        event_kinds=["enter", "exit", "first_seen"],
        channels=["webhook", "redis"],
        webhook_url=receiver.url,
    )
    fetch_pass("fetch")
    assert LocationReport.objects.count() == 9 * TRACKERS

    outputs = run_together(
        *[["process_locations", "--once", "--name", f"p{i}"] for i in range(3)],
        gate="locations_trackerprocessing",
        PROCESS_BATCH_TRACKERS="2",
    )

    assert all(figure(out, "reports") > 0 for out in outputs), outputs  # they did race
    # Every report processed, once: the processors' counts add up to the reports stored.
    assert sum(figure(out, "reports") for out in outputs) == 9 * TRACKERS, outputs
    assert not QueuedReport.objects.exists()
    step = dt.timedelta(minutes=10)
    for tracker in trackers:
        events = GeofenceEvent.objects.filter(tracker=tracker).order_by("occurred_at", "kind")
        assert [(e.kind, e.occurred_at) for e in events] == [
            ("first_seen", t0),
            ("enter", t0 + 3 * step),
            ("exit", t0 + 6 * step),
        ]
    events = set(GeofenceEvent.objects.values_list("pk", flat=True))
    assert sum(figure(out, "events") for out in outputs) == len(events) == 3 * TRACKERS
    triples = Counter(AlertDelivery.objects.values_list("event_id", "rule_id", "channel"))
    assert triples == Counter(
        {(event, rule.pk, channel): 1 for event in events for channel in ("webhook", "redis")}
    )

    subscriber = Subscriber(
        settings.REDIS_NOTIFICATIONS_URL, f"notifications:{owner.pk}", rule.name
    )
    try:
        sent = run_together(
            ["send_alerts", "--once", "--name", "s0"],
            ["send_alerts", "--once", "--name", "s1"],
            gate="geofences_alertdelivery",
            ALERT_BATCH_SIZE="5",
            REDIS_URL=settings.REDIS_URL,
        )
    finally:
        subscriber.close()

    webhook_ids = AlertDelivery.objects.filter(channel="webhook").values_list("pk", flat=True)
    assert receiver.keys() == Counter({f"delivery-{pk}": 1 for pk in webhook_ids})
    redis_ids = set(AlertDelivery.objects.filter(channel="redis").values_list("pk", flat=True))
    assert Counter(m["id"] for m in subscriber.messages) == Counter(dict.fromkeys(redis_ids, 1))
    assert set(AlertDelivery.objects.values_list("status", "attempts")) == {("delivered", 1)}
    assert all(figure(out, "delivered") > 0 for out in sent), sent  # they did race
    assert sum(figure(out, "delivered") for out in sent) == 6 * TRACKERS
