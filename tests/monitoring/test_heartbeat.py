"""Heartbeats: Redis pub/sub and the database; monitor_heartbeats prints them."""

from __future__ import annotations

import json
import threading

import pytest
import redis
from django.core.management import call_command

from monitoring.heartbeat import Heartbeat, channel
from monitoring.models import Liveness, ServiceInstance

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
def test_stop_marks_the_instance_dead():
    heartbeat = Heartbeat("short", interval=60).start()
    heartbeat.stop()
    instance = ServiceInstance.objects.get(instance_id=heartbeat.instance_id)
    assert instance.liveness() == Liveness.DEAD
    assert instance.heartbeat_count == 1


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
