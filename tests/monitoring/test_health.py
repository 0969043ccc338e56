"""/health: each check, what makes it fail, and what it never shows."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.db import OperationalError
from django.test import Client
from django.utils import timezone

from monitoring import health
from monitoring.failures import record_failure
from monitoring.models import ServiceInstance
from trackers.models import AccountStatus

from ..factories import AppleAccountFactory, TrackerFactory

pytestmark = pytest.mark.django_db


def ago(**kwargs: float) -> dt.datetime:
    return timezone.now() - dt.timedelta(**kwargs)


def instance(service: str = "fetch_trackers", beat: dt.datetime | None = None, **fields: Any):
    beat = beat or timezone.now()
    n = ServiceInstance.objects.count()
    return ServiceInstance.objects.create(
        service_name=service,
        instance_id=f"{service}:host:{1000 + n}:abc{n}",
        hostname="host",
        pid=1000 + n,
        started_at=beat - dt.timedelta(hours=1),
        last_heartbeat=beat,
        heartbeat_count=60,
        **fields,
    )


@pytest.fixture
def healthy() -> None:
    """A live worker, an active account, and a small queue fetched a minute ago."""
    instance()
    AppleAccountFactory()
    for _ in range(3):
        TrackerFactory(last_processed_at=ago(minutes=1))


def get_health(client: Client) -> tuple[int, dict[str, Any]]:
    response = client.get("/health")
    return response.status_code, response.json()


def test_healthy_service_answers_200(client: Client, healthy: None) -> None:
    code, body = get_health(client)
    assert (code, body["status"], body["failing"]) == (200, "ok", [])
    assert {c["status"] for c in body["checks"].values()} == {"ok"}


def test_dead_worker_answers_503_naming_workers(client: Client) -> None:
    instance(beat=ago(minutes=10))
    AppleAccountFactory()
    code, body = get_health(client)
    assert (code, body["status"], body["failing"]) == (503, "unhealthy", ["workers"])
    assert body["checks"]["workers"]["dead"] == 1


def test_stale_worker_is_not_enough(client: Client) -> None:
    instance(beat=ago(seconds=120))
    AppleAccountFactory()
    code, body = get_health(client)
    assert (code, body["failing"], body["checks"]["workers"]["stale"]) == (503, ["workers"], 1)


def test_stopped_worker_is_not_counted_dead(client: Client) -> None:
    instance()  # the new worker of a deploy
    instance(stopped_at=timezone.now())  # the old one, stopped cleanly
    AppleAccountFactory()
    code, body = get_health(client)
    workers = body["checks"]["workers"]
    assert (code, workers["alive"], workers["stopped"], workers["dead"]) == (200, 1, 1, 0)


def test_only_stopped_workers_fail_saying_they_stopped(client: Client) -> None:
    instance(stopped_at=timezone.now())
    AppleAccountFactory()
    code, body = get_health(client)
    workers = body["checks"]["workers"]
    assert (code, body["failing"]) == (503, ["workers"])
    assert (workers["stopped"], workers["dead"]) == (1, 0)
    assert "1 stopped cleanly" in workers["detail"]


def test_qcluster_counts_as_a_worker(client: Client) -> None:
    instance(service="qcluster")
    AppleAccountFactory()
    code, _ = get_health(client)
    assert code == 200


def test_other_services_do_not_count_as_workers(client: Client) -> None:
    instance(service="monitor_heartbeats")
    AppleAccountFactory()
    code, body = get_health(client)
    assert (code, body["failing"]) == (503, ["workers"])


def test_accounts_needing_login_answer_503_naming_accounts(client: Client) -> None:
    instance()
    AppleAccountFactory(status=AccountStatus.NEEDS_LOGIN)
    AppleAccountFactory(status=AccountStatus.DISABLED)
    code, body = get_health(client)
    assert code == 503
    assert body["failing"] == ["accounts"]
    assert body["checks"]["accounts"]["by_status"]["needs_login"] == 1
    assert body["checks"]["accounts"]["by_breaker"]["locked"] == 2


def test_backing_off_account_is_usable_but_degraded(client: Client) -> None:
    instance()
    AppleAccountFactory(status=AccountStatus.BACKING_OFF, backoff_until=ago(minutes=-10))
    code, body = get_health(client)
    assert (code, body["degraded"]) == (200, ["accounts"])
    assert body["checks"]["accounts"]["by_breaker"]["open"] == 1


def test_cycle_capacity_below_fleet_fails_the_queue(client: Client, settings: Any) -> None:
    settings.ACCOUNT_MIN_REQUEST_INTERVAL = 12 * 3600  # one request per account per cycle
    settings.MAX_KEYS_PER_BATCH = 2
    instance()
    AppleAccountFactory()
    for _ in range(3):
        TrackerFactory(last_processed_at=ago(minutes=1))
    code, body = get_health(client)
    assert (code, body["failing"]) == (503, ["queue"])
    assert body["checks"]["queue"]["cycle_capacity"] == 2


def test_tracker_waiting_longer_than_a_cycle_fails_the_queue(client: Client, healthy: None) -> None:
    TrackerFactory(last_processed_at=ago(hours=13))
    code, body = get_health(client)
    assert (code, body["failing"]) == (503, ["queue"])
    assert body["checks"]["queue"]["oldest_processed_age_seconds"] > 12 * 3600


def test_quarantined_tracker_does_not_starve_the_queue(client: Client, healthy: None) -> None:
    TrackerFactory(last_processed_at=ago(days=3), quarantined_at=ago(days=3))
    code, _ = get_health(client)
    assert code == 200


def test_real_redis_answers_ping(client: Client, healthy: None) -> None:
    _, body = get_health(client)
    assert body["checks"]["redis"] == {"status": "ok", "detail": "PING answered"}


def test_redis_not_configured_is_degraded_not_failing(
    client: Client, healthy: None, settings: Any
) -> None:
    settings.REDIS_HEALTH_URL = ""
    code, body = get_health(client)
    assert (code, body["status"], body["degraded"]) == (200, "ok", ["redis"])


def test_unreachable_redis_fails(client: Client, healthy: None, settings: Any) -> None:
    settings.REDIS_HEALTH_URL = "redis://127.0.0.1:1/2"
    code, body = get_health(client)
    assert (code, body["failing"]) == (503, ["redis"])


def test_open_failures_are_counted_but_never_fail(client: Client, healthy: None) -> None:
    record_failure("auth", "401 from Apple", fingerprint="account:1")
    record_failure("decrypt", "bad tag", fingerprint="payload:ab")
    record_failure("decrypt", "bad tag", fingerprint="payload:cd")
    code, body = get_health(client)
    failures = body["checks"]["failures"]
    assert (code, failures["open"]) == (200, 3)
    assert (failures["by_category"]["auth"], failures["by_category"]["decrypt"]) == (1, 2)


def test_database_down_fails_without_detail_and_skips_what_needs_it(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down() -> health.Check:
        raise OperationalError('connection to "db.internal" failed: password for "fleet" wrong')

    monkeypatch.setitem(health.CHECKS, "database", down)
    code, body = get_health(client)
    assert (code, body["failing"]) == (503, ["database"])
    assert body["checks"]["queue"]["status"] == "skipped"
    assert "db.internal" not in str(body)
    assert "password" not in str(body)


def test_health_needs_no_credentials_and_shows_no_secret(client: Client) -> None:
    account = AppleAccountFactory()
    tracker = TrackerFactory()
    # A probe's stray (here: invalid) token must not turn into a 401.
    response = client.get("/health", HTTP_AUTHORIZATION="Bearer not-a-token")
    assert response.status_code in (200, 503)
    assert account.state["account"]["password"].encode() not in response.content
    assert tracker.key_material["private_key"].encode() not in response.content
