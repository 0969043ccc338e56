"""Heartbeats: Redis pub/sub and the database; monitor_heartbeats prints them."""

from __future__ import annotations

import datetime as dt
import json
import threading

import pytest
import redis
from django.core.management import call_command
from django.utils import timezone

from monitoring.heartbeat import Heartbeat, channel, prune_instances
from monitoring.models import Liveness, ServiceInstance
from monitoring.tasks import prune_service_instances

pytestmark = pytest.mark.django_db


def test_a_beat_is_recorded_and_published(settings):
    client = redis.Redis.from_url(settings.REDIS_HEALTH_URL)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(channel("unit"))
    heartbeat = Heartbeat("unit", figures=lambda: {"queue_size": 7}, interval=60)

    heartbeat.beat()

    message = None
    for _ in range(10):
        message = message or pubsub.get_message(timeout=0.5)
    assert message is not None
    data = json.loads(message["data"])
    assert data["service_name"] == "unit"
    assert data["queue_size"] == 7
    assert data["heartbeat_count"] == 1
    instance = ServiceInstance.objects.get(instance_id=heartbeat.instance_id)
    assert instance.liveness() == Liveness.ALIVE
    assert instance.payload["memory_usage_mb"] > 0


def test_heartbeats_work_without_redis(settings):
    settings.REDIS_HEALTH_URL = ""
    heartbeat = Heartbeat("no-redis", interval=60)
    heartbeat.beat()
    heartbeat.beat()
    assert ServiceInstance.objects.get(service_name="no-redis").heartbeat_count == 2


# A started heartbeat writes from its own thread and connection, outside the test's
# transaction: these tests commit and are cleaned up by flushing (transaction=True).
@pytest.mark.django_db(transaction=True)
def test_stop_marks_the_instance_stopped():
    heartbeat = Heartbeat("short", interval=60).start()
    heartbeat.stop()
    instance = ServiceInstance.objects.get(instance_id=heartbeat.instance_id)
    assert instance.liveness() == Liveness.STOPPED
    assert instance.heartbeat_count == 1


def test_a_stopped_instance_stays_stopped_when_its_heartbeat_ages():
    heartbeat = Heartbeat("short", interval=60)
    heartbeat.beat()
    heartbeat.stop()
    instance = ServiceInstance.objects.get(instance_id=heartbeat.instance_id)
    later = timezone.now() + dt.timedelta(hours=2)
    assert instance.liveness(later) == Liveness.STOPPED


def test_a_redis_outage_does_not_stop_the_beat(settings):
    settings.REDIS_HEALTH_URL = "redis://127.0.0.1:1/2"  # nothing listens there
    heartbeat = Heartbeat("flaky", interval=60)
    assert heartbeat.beat() is not None
    assert ServiceInstance.objects.filter(service_name="flaky").exists()


@pytest.mark.django_db(transaction=True)
def test_monitor_heartbeats_prints_one_line_per_beat(capsys):
    heartbeat = Heartbeat("printed", figures=lambda: {"api_status": "ok"}, interval=0.3)
    timer = threading.Timer(0.5, heartbeat.start)
    timer.start()
    try:
        call_command("monitor_heartbeats", "--count", "2", "--timeout", "10")
    finally:
        timer.join()
        heartbeat.stop()
    lines = [line for line in capsys.readouterr().out.splitlines() if line]
    assert len(lines) == 2
    assert all("printed" in line and "api_status=ok" in line for line in lines)
    assert "beat=1" in lines[0]
    assert "beat=2" in lines[1]


def test_monitor_heartbeats_polls_the_database_without_redis(settings, capsys):
    settings.REDIS_HEALTH_URL = ""
    Heartbeat("db-only", interval=60).beat()
    call_command("monitor_heartbeats", "--count", "1", "--timeout", "5")
    assert "db-only" in capsys.readouterr().out


def silent_for(hours: float, **fields: object) -> ServiceInstance:
    beat = timezone.now() - dt.timedelta(hours=hours)
    return ServiceInstance.objects.create(
        service_name="fetch_trackers",
        instance_id=f"host:{hours}:{fields.get('stopped_at') is not None}",
        hostname="host",
        pid=1,
        started_at=beat - dt.timedelta(hours=1),
        last_heartbeat=beat,
        **fields,
    )


def test_prune_deletes_instances_silent_past_the_retention(settings):
    settings.SERVICE_INSTANCE_RETENTION_HOURS = 24
    old = silent_for(25)
    old_stopped = silent_for(30, stopped_at=timezone.now() - dt.timedelta(hours=30))
    recent = silent_for(23)
    recent_stopped = silent_for(1, stopped_at=timezone.now() - dt.timedelta(hours=1))
    assert prune_instances() == 2
    left = set(ServiceInstance.objects.values_list("pk", flat=True))
    assert left == {recent.pk, recent_stopped.pk}
    assert not {old.pk, old_stopped.pk} & left


def test_prune_follows_the_retention_setting(settings):
    settings.SERVICE_INSTANCE_RETENTION_HOURS = 2
    silent_for(3)
    kept = silent_for(1)
    assert prune_service_instances() == 1  # the daily django-q2 task
    assert list(ServiceInstance.objects.values_list("pk", flat=True)) == [kept.pk]
