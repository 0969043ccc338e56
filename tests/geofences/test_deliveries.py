"""Alert deliveries through real channels: a local HTTP receiver, Django's locmem mail
backend, the real Redis; the sender's claims, retries, failures and shutdown."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import redis
from django.contrib.gis.geos import Point
from django.db import connection
from django.utils import timezone

from geofences import alerts, deliveries
from geofences.models import (
    AlertDelivery,
    AlertRule,
    Channel,
    DeliveryStatus,
    FenceKind,
    Geofence,
    GeofenceEvent,
)
from locations.models import Address, LocationReport
from monitoring.models import FailureRecord, ServiceInstance

from ..factories import TrackerFactory, UserFactory

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.django_db


# --- a webhook receiver at the network boundary -------------------------------------------
@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """Records every POST; answers `statuses` in turn, then `status`; waits `delay` first."""

    port: int = 0
    status: int = 200
    statuses: list[int] = field(default_factory=list)
    delay: float = 0.0
    requests: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    released: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def keys(self) -> Counter:
        return Counter(r.headers["idempotency-key"] for r in self.requests)

    def serve(self) -> ThreadingHTTPServer:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    receiver.requests.append(
                        Received({k.lower(): v for k, v in self.headers.items()}, body)
                    )
                    status = receiver.statuses.pop(0) if receiver.statuses else receiver.status
                if receiver.delay:
                    receiver.released.wait(receiver.delay)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = server.server_address[1]
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        return server


@pytest.fixture
def receiver():
    receiver = Receiver()
    server = receiver.serve()
    yield receiver
    receiver.released.set()
    server.shutdown()
    server.server_close()


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """What a receiver does (the README's snippet)."""
    timestamp = headers["x-tracker-timestamp"]
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    fresh = abs(time.time() - int(timestamp)) < 300
    return fresh and hmac.compare_digest(
        "sha256=" + expected.hexdigest(), headers["x-tracker-signature"]
    )


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment of a manage.py subprocess against the test database."""
    db = connection.settings_dict
    return {
        **os.environ,
        "DATABASE_URL": (
            f"postgis://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
        ),
        "ALERT_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
        "HEARTBEAT_INTERVAL": "1",
        "LOG_LEVEL": "WARNING",
        "LOG_FORMAT": "text",
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


# --- data ---------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _alert_settings(settings):
    settings.ALERT_WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    settings.ALERT_WEBHOOK_TIMEOUT = 2
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"


@pytest.fixture
def owner():
    return UserFactory()


@pytest.fixture
def tracker(owner):
    return TrackerFactory(owner=owner, name="van 7")


@pytest.fixture
def fence(owner):
    return Geofence.objects.create(
        owner=owner, name="depot", kind=FenceKind.CIRCLE, center=Point(13.4, 52.5), radius_m=200
    )


@pytest.fixture
def make_rule(owner, receiver):
    def make(channels: list[str], **fields: object) -> AlertRule:
        defaults = {
            "owner": owner,
            "name": f"rule-{uuid.uuid4().hex[:8]}",
            "event_kinds": ["enter", "exit"],
            "webhook_url": receiver.url,
            "email_to": "ops@example.com",
        }
        return AlertRule.objects.create(channels=channels, **{**defaults, **fields})

    return make


def make_event(tracker, fence, kind: str = "enter", **fields: object) -> GeofenceEvent:
    return GeofenceEvent.objects.create(
        tracker=tracker,
        geofence=fence,
        kind=kind,
        occurred_at=fields.pop("occurred_at", timezone.now() - dt.timedelta(minutes=5)),
        dedupe_key=uuid.uuid4().hex,
        **fields,
    )


def make_delivery(rule: AlertRule, event: GeofenceEvent, channel: str) -> AlertDelivery:
    return AlertDelivery.objects.create(
        event=event, rule=rule, channel=channel, next_attempt_at=timezone.now()
    )


@pytest.fixture
def webhook(make_rule, tracker, fence):
    """A pending webhook delivery of an `enter` event."""
    return make_delivery(make_rule([Channel.WEBHOOK]), make_event(tracker, fence), "webhook")


def send() -> deliveries.SendSummary:
    return deliveries.run_pass("test-sender")


def come_due(delivery: AlertDelivery) -> None:
    """Time passes: the retry's backoff is over."""
    AlertDelivery.objects.filter(pk=delivery.pk).update(
        next_attempt_at=timezone.now() - dt.timedelta(days=1)
    )


# --- webhook ------------------------------------------------------------------------------
def test_webhook_body_names_the_event_the_tracker_and_the_rule(receiver, webhook):
    assert send().delivered == 1
    body = json.loads(receiver.requests[0].body)
    event = webhook.event
    assert body == {
        "id": webhook.pk,
        "event": {
            "id": event.pk,
            "kind": "enter",
            "tracker": {"id": event.tracker_id, "name": "van 7"},
            "geofence": {"id": event.geofence_id, "name": "depot"},
            "occurred_at": event.occurred_at.isoformat(),
            "report": None,
            "address": None,
        },
        "rule": {"id": webhook.rule_id, "name": webhook.rule.name},
    }
    webhook.refresh_from_db()
    assert (webhook.status, webhook.attempts) == (DeliveryStatus.DELIVERED, 1)
    assert webhook.delivered_at is not None
    assert webhook.claim_token is None


def test_webhook_body_carries_the_report_and_its_address(receiver, make_rule, tracker, fence):
    address = Address.objects.create(
        cell="c1", provider="test", label="Alexanderplatz 1, Berlin", point=Point(13.4, 52.5)
    )
    seen = timezone.now() - dt.timedelta(minutes=9)
    report = LocationReport.objects.create(
        tracker=tracker,
        timestamp=seen,
        point=Point(13.41, 52.52),
        horizontal_accuracy=12,
        confidence=2,
        status=0,
        payload=b"x" * 88,
        fetched_at=timezone.now(),
        address=address,
    )
    event = make_event(tracker, fence, report=report)
    make_delivery(make_rule([Channel.WEBHOOK]), event, "webhook")
    send()
    body = json.loads(receiver.requests[0].body)["event"]
    assert body["report"] == {
        "latitude": 52.52,
        "longitude": 13.41,
        "accuracy": 12,
        "timestamp": seen.isoformat(),
    }
    assert body["address"] == "Alexanderplatz 1, Berlin"


def test_signature_verifies_with_the_rule_secret_only(receiver, webhook):
    send()
    request = receiver.requests[0]
    assert request.headers["x-tracker-signature"].startswith("sha256=")
    assert verify(webhook.rule.webhook_secret, request.headers, request.body)
    assert not verify("another secret", request.headers, request.body)
    tampered = request.body.replace(b'"enter"', b'"exit"')
    assert not verify(webhook.rule.webhook_secret, request.headers, tampered)


def test_webhook_headers(receiver, webhook):
    send()
    headers = receiver.requests[0].headers
    assert headers["content-type"] == "application/json"
    assert headers["idempotency-key"] == f"delivery-{webhook.pk}"
    assert headers["user-agent"].startswith("tracker-fleet-alerts/")
    assert abs(int(headers["x-tracker-timestamp"]) - time.time()) < 60


def test_500_then_200_is_delivered_by_the_retry_with_the_same_key(receiver, webhook):
    receiver.statuses = [500]
    first = send()
    webhook.refresh_from_db()
    assert (first.retried, webhook.status, webhook.attempts) == (1, "pending", 1)
    assert webhook.last_error == "HTTP 500 Internal Server Error"
    assert webhook.next_attempt_at > timezone.now() - dt.timedelta(seconds=5)
    assert webhook.claim_token is None

    assert send().delivered == 0  # not due yet
    come_due(webhook)
    assert send().delivered == 1
    webhook.refresh_from_db()
    assert (webhook.status, webhook.attempts) == (DeliveryStatus.DELIVERED, 2)
    assert receiver.keys() == {f"delivery-{webhook.pk}": 2}


def test_backoff_grows_with_full_jitter_up_to_the_cap(settings):
    settings.ALERT_RETRY_BASE_SECONDS = 30
    settings.ALERT_RETRY_MAX_SECONDS = 600
    for attempts, ceiling in [(1, 30), (2, 60), (3, 120), (6, 600), (12, 600)]:
        waits = [deliveries.backoff_seconds(attempts) for _ in range(200)]
        assert min(waits) >= 0
        assert max(waits) <= ceiling
        assert max(waits) > ceiling / 2  # spread over the range, not fixed


def test_always_500_fails_after_max_attempts(receiver, webhook, settings):
    settings.ALERT_RETRY_BASE_SECONDS = 0  # every retry is due at once
    receiver.status = 500
    for _ in range(settings.ALERT_MAX_ATTEMPTS + 2):
        send()
    webhook.refresh_from_db()
    assert (webhook.status, webhook.attempts) == (DeliveryStatus.FAILED, 8)
    assert webhook.last_error == "HTTP 500 Internal Server Error"
    assert len(receiver.requests) == 8
    record = FailureRecord.objects.get(category="delivery")
    assert record.fingerprint == f"rule:{webhook.rule_id}:webhook"
    assert "failed after 8 attempt(s): HTTP 500" in record.last_error
    assert record.detail["delivery_id"] == webhook.pk


def test_404_fails_at_once(receiver, webhook):
    receiver.status = 404
    assert send().failed == 1
    webhook.refresh_from_db()
    assert (webhook.status, webhook.attempts, webhook.last_error) == (
        DeliveryStatus.FAILED,
        1,
        "HTTP 404 Not Found",
    )
    assert FailureRecord.objects.filter(category="delivery").count() == 1


@pytest.mark.parametrize(
    ("status", "outcome"),
    [(408, "pending"), (429, "pending"), (503, "pending"), (400, "failed"), (410, "failed")],
)
def test_which_statuses_are_retried(receiver, webhook, status, outcome):
    receiver.status = status
    send()
    webhook.refresh_from_db()
    assert (webhook.status, webhook.attempts) == (outcome, 1)


def test_redirects_are_not_followed(receiver, webhook):
    receiver.status = 302
    send()
    webhook.refresh_from_db()
    assert webhook.status == DeliveryStatus.FAILED
    assert "redirects are not followed" in webhook.last_error


def test_timeout_is_retried(receiver, webhook, settings):
    settings.ALERT_WEBHOOK_TIMEOUT = 1
    receiver.delay = 3
    started = time.monotonic()
    assert send().retried == 1
    assert time.monotonic() - started < 2.5
    webhook.refresh_from_db()
    assert (webhook.status, webhook.attempts) == (DeliveryStatus.PENDING, 1)
    assert webhook.last_error == "timed out after 1 s"


def test_connection_refused_is_retried(make_rule, tracker, fence):
    rule = make_rule([Channel.WEBHOOK], webhook_url="http://127.0.0.1:9/hook")
    delivery = make_delivery(rule, make_event(tracker, fence), "webhook")
    send()
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.PENDING, 1)
    assert delivery.last_error.startswith("cannot connect:")
    assert "Connection refused" in delivery.last_error


def test_a_private_address_is_refused_unless_allowed(receiver, webhook, settings):
    settings.ALERT_WEBHOOK_ALLOWED_HOSTS = []
    send()
    webhook.refresh_from_db()
    assert webhook.status == DeliveryStatus.FAILED
    assert "non-public address 127.0.0.1" in webhook.last_error
    assert receiver.requests == []


# --- quiet hours, email, Redis ------------------------------------------------------------
def test_quiet_hours_suppress_and_nothing_is_sent(receiver, make_rule, tracker, fence):
    always = {day: [["00:00", "24:00"]] for day in ("mon", "tue", "wed", "thu", "fri", "sat")}
    rule = make_rule(
        [Channel.WEBHOOK, Channel.EMAIL], schedule={**always, "sun": [["00:00", "24:00"]]}
    )
    event = make_event(tracker, fence)
    alerts.create_deliveries(
        [
            {
                "id": event.pk,
                "tracker_id": tracker.pk,
                "geofence_id": fence.pk,
                "kind": "enter",
                "occurred_at": event.occurred_at,
            }
        ]
    )
    assert set(rule.deliveries.values_list("status", flat=True)) == {"suppressed"}
    assert send().attempts == 0
    assert receiver.requests == []
    assert deliveries.retry(rule.deliveries.values_list("pk", flat=True)) == 0


def test_email_goes_through_django_mail(make_rule, tracker, fence, mailoutbox):
    rule = make_rule([Channel.EMAIL], name="Depot watch")
    delivery = make_delivery(rule, make_event(tracker, fence), "email")
    assert send().delivered == 1
    [message] = mailoutbox
    assert message.to == ["ops@example.com"]
    assert message.subject == "[Depot watch] van 7 entered depot"
    assert "van 7 entered depot" in message.body
    assert message.extra_headers["Message-ID"].startswith(f"<alert-delivery-{delivery.pk}@")


def test_email_without_address_fails(make_rule, tracker, fence):
    rule = make_rule([Channel.EMAIL], email_to="")
    delivery = make_delivery(rule, make_event(tracker, fence), "email")
    send()
    delivery.refresh_from_db()
    assert (delivery.status, delivery.last_error) == (
        DeliveryStatus.FAILED,
        "the rule has no email address (email_to)",
    )


def test_redis_subscriber_receives_the_json(make_rule, owner, tracker, fence, settings):
    rule = make_rule([Channel.REDIS])
    delivery = make_delivery(rule, make_event(tracker, fence, kind="exit"), "redis")
    pubsub = redis.Redis.from_url(settings.REDIS_NOTIFICATIONS_URL).pubsub(
        ignore_subscribe_messages=True
    )
    pubsub.subscribe(f"notifications:{owner.pk}")
    try:
        assert send().delivered == 1
        # Other test runs may share this Redis: keep only this rule's messages.
        messages = []
        for _ in range(20):
            message = pubsub.get_message(timeout=0.25)
            if message and json.loads(message["data"])["rule"]["name"] == rule.name:
                messages.append(json.loads(message["data"]))
                break
    finally:
        pubsub.close()
    assert [(m["id"], m["event"]["kind"]) for m in messages] == [(delivery.pk, "exit")]


def test_redis_without_redis_url_fails_permanently(make_rule, tracker, fence, settings):
    settings.REDIS_NOTIFICATIONS_URL = ""
    delivery = make_delivery(make_rule([Channel.REDIS]), make_event(tracker, fence), "redis")
    send()
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.FAILED
    assert delivery.last_error.startswith("REDIS_URL not set")


def test_unreachable_redis_is_retried(make_rule, tracker, fence, settings):
    settings.REDIS_NOTIFICATIONS_URL = "redis://127.0.0.1:1/3"
    delivery = make_delivery(make_rule([Channel.REDIS]), make_event(tracker, fence), "redis")
    send()
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.PENDING, 1)
    assert delivery.last_error.startswith("Redis: ConnectionError")


def test_a_deactivated_rule_sends_nothing(receiver, webhook):
    AlertRule.objects.filter(pk=webhook.rule_id).update(is_active=False)
    send()
    webhook.refresh_from_db()
    assert (webhook.status, webhook.last_error) == (
        DeliveryStatus.FAILED,
        "not sent: the rule was deactivated",
    )
    assert receiver.requests == []
    assert not FailureRecord.objects.exists()


# --- the admin's API ----------------------------------------------------------------------
def test_retry_puts_a_failed_delivery_back_and_it_is_delivered(receiver, webhook):
    receiver.statuses = [404]
    send()
    webhook.refresh_from_db()
    assert webhook.status == DeliveryStatus.FAILED

    assert deliveries.retry([webhook.pk]) == 1
    webhook.refresh_from_db()
    assert (webhook.status, webhook.attempts) == (DeliveryStatus.PENDING, 1)
    assert send().delivered == 1
    webhook.refresh_from_db()
    assert (webhook.status, webhook.attempts) == (DeliveryStatus.DELIVERED, 2)


def test_retry_leaves_delivered_and_suppressed_alone(webhook):
    AlertDelivery.objects.filter(pk=webhook.pk).update(status=DeliveryStatus.DELIVERED)
    assert deliveries.retry([webhook.pk]) == 0


def test_stats(make_rule, tracker, fence):
    rule = make_rule([Channel.WEBHOOK])
    assert deliveries.stats() == {
        "pending": 0,
        "delivered": 0,
        "failed": 0,
        "suppressed": 0,
        "oldest_pending_age_seconds": 0,
    }
    made = []
    for status in ["pending", "pending", "failed", "suppressed", "delivered"]:
        made.append(make_delivery(rule, make_event(tracker, fence), "webhook"))
        AlertDelivery.objects.filter(pk=made[-1].pk).update(status=status)
    AlertDelivery.objects.filter(pk=made[0].pk).update(
        created_at=timezone.now() - dt.timedelta(hours=1)
    )
    figures = deliveries.stats()
    assert {k: v for k, v in figures.items() if k != "oldest_pending_age_seconds"} == {
        "pending": 2,
        "delivered": 1,
        "failed": 1,
        "suppressed": 1,
    }
    assert 3500 < figures["oldest_pending_age_seconds"] < 3700


def test_a_webhook_rule_gets_a_secret_and_keeps_it(make_rule):
    rule = make_rule([Channel.WEBHOOK])
    secret = AlertRule.objects.get(pk=rule.pk).webhook_secret
    assert isinstance(secret, str)
    assert len(secret) >= 40
    assert deliveries.ensure_webhook_secret(AlertRule.objects.get(pk=rule.pk)) == secret
    assert make_rule([Channel.EMAIL]).webhook_secret is None


def test_ensure_webhook_secret_makes_one_for_an_older_rule(make_rule):
    rule = make_rule([Channel.WEBHOOK])
    AlertRule.objects.filter(pk=rule.pk).update(webhook_secret=None)
    fresh = AlertRule.objects.get(pk=rule.pk)
    secret = deliveries.ensure_webhook_secret(fresh)
    assert AlertRule.objects.get(pk=rule.pk).webhook_secret == secret == fresh.webhook_secret
    assert deliveries.ensure_webhook_secret(AlertRule.objects.get(pk=rule.pk)) == secret


def test_rotate_webhook_secret(make_rule, receiver, tracker, fence):
    rule = make_rule([Channel.WEBHOOK])
    old = rule.webhook_secret
    new = deliveries.rotate_webhook_secret(rule)
    assert new != old
    assert AlertRule.objects.get(pk=rule.pk).webhook_secret == new
    make_delivery(rule, make_event(tracker, fence), "webhook")
    send()
    request = receiver.requests[0]
    assert verify(new, request.headers, request.body)
    assert not verify(old, request.headers, request.body)


# --- leases -------------------------------------------------------------------------------
def test_a_sender_that_lost_its_lease_records_nothing(receiver, webhook):
    first = deliveries.claim("first")
    [delivery] = deliveries.claimed(first)
    # The first sender stalls past its lease; a second one takes the delivery over.
    AlertDelivery.objects.filter(pk=webhook.pk).update(
        lease_until=timezone.now() - dt.timedelta(days=1)
    )
    second = deliveries.claim("second")
    assert second is not None
    assert second.ids == [webhook.pk]

    assert deliveries.record(delivery, first.token, None) == "lost"
    assert not deliveries.renew(webhook.pk, first.token)
    webhook.refresh_from_db()
    assert (webhook.status, webhook.attempts, webhook.claimed_by) == ("pending", 0, "second")


def test_a_leased_delivery_is_not_claimed_again(webhook):
    assert deliveries.claim("first") is not None
    assert deliveries.claim("second") is None


@pytest.mark.django_db(transaction=True)
def test_two_senders_never_send_the_same_delivery_twice(
    receiver, make_rule, tracker, fence, settings
):
    settings.ALERT_BATCH_SIZE = 3
    receiver.delay = 0.01
    rule = make_rule([Channel.WEBHOOK])
    expected = {
        f"delivery-{make_delivery(rule, make_event(tracker, fence), 'webhook').pk}"
        for _ in range(50)
    }
    start = threading.Barrier(2)
    summaries: dict[str, deliveries.SendSummary] = {}

    def sender(name: str) -> None:
        try:
            start.wait()
            summaries[name] = deliveries.run_pass(name)
        finally:
            connection.close()

    threads = [threading.Thread(target=sender, args=(n,)) for n in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert receiver.keys() == Counter(dict.fromkeys(expected, 1))
    assert summaries["a"].delivered + summaries["b"].delivered == 50
    assert summaries["a"].delivered > 0  # they did race
    assert summaries["b"].delivered > 0
    assert AlertDelivery.objects.filter(status="delivered", attempts=1).count() == 50


# --- the command --------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_sigterm_mid_send_stops_within_a_second_and_the_delivery_is_retried(receiver, webhook):
    receiver.delay = 60  # the request hangs
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "send_alerts", "--name", "sigterm-test"],
        cwd=ROOT,
        env=subprocess_env(ALERT_WEBHOOK_TIMEOUT="30"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not receiver.requests and time.monotonic() < deadline:
            time.sleep(0.05)
        assert receiver.requests, "the sender never sent"
        assert ServiceInstance.objects.filter(service_name="alert_sender").exists()

        proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        proc.wait(10)
        assert time.monotonic() - sent < 1.5
        assert proc.returncode == 0, proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    webhook.refresh_from_db()
    assert (webhook.status, webhook.attempts, webhook.claim_token) == ("pending", 1, None)
    assert webhook.last_error == "interrupted by shutdown; sent again later"
    instance = ServiceInstance.objects.get(service_name="alert_sender")
    assert instance.stopped_at is not None


@pytest.mark.django_db(transaction=True)
def test_send_alerts_once_prints_a_summary(receiver, webhook):
    result = subprocess.run(
        [sys.executable, "manage.py", "send_alerts", "--once"],
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("delivered=1 retried=0 failed=0")
    assert receiver.keys() == {f"delivery-{webhook.pk}": 1}


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("ALERT_MAX_ATTEMPTS", "0", "ALERT_MAX_ATTEMPTS must be >= 1"),
        ("ALERT_RETRY_BASE_SECONDS", "soon", "ALERT_RETRY_BASE_SECONDS has an invalid value"),
        ("ALERT_RETRY_MAX_SECONDS", "10", "ALERT_RETRY_MAX_SECONDS must be >="),
        ("ALERT_WEBHOOK_TIMEOUT", "600", "ALERT_WEBHOOK_TIMEOUT must be at most 60"),
        ("EMAIL_BACKEND", "smtp", "EMAIL_BACKEND must be a dotted path"),
        ("EMAIL_USE_SSL", "true", "EMAIL_USE_TLS and EMAIL_USE_SSL are exclusive"),
    ],
)
def test_bad_alert_settings_stop_the_process(name, value, message):
    env = subprocess_env(**{name: value, "EMAIL_USE_TLS": "true"})
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT,
        env={**env, "DJANGO_SETTINGS_MODULE": "tracker_project.settings"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert message in result.stderr
