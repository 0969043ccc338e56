"""The router against a real streaming replica: which server answers the API's reads."""

from __future__ import annotations

import time

import pytest
from django.core.cache import cache
from django.utils import timezone
from rest_framework.test import APIClient

from tests import factories
from tests.factories import UserFactory
from tracker_project import replicas
from trackers.models import ProductionRun

from .conftest import (
    REPLICA_PORT,
    start_replica,
    stop_replica,
    superuser_sql,
    wait_until_replayed,
)

pytestmark = [
    pytest.mark.django_db(transaction=True, databases="__all__"),
    pytest.mark.urls("tests.replica.urls"),
]

PRIMARY = {"port": 5432, "in_recovery": False}
REPLICA = {"port": REPLICA_PORT, "in_recovery": True}
PROBE = "/api/v1/_probe/runs"


def client_for(user: object | None = None) -> APIClient:
    return factories.client_for(user or UserFactory())


def run(name: str) -> ProductionRun:
    return ProductionRun.objects.create(name=name, starts_at=timezone.now())


def get(client: APIClient, url: str = PROBE) -> dict:
    response = client.get(url)
    assert response.status_code == 200, response.content
    return response.json()


def test_read_only_api_request_reads_from_the_replica(use_replicas):
    run("seed")
    wait_until_replayed()

    body = get(client_for())

    assert body["servers"] == [REPLICA]
    assert body["names"] == ["seed"]
    assert body["alias"] == "replica1"


def test_reads_outside_the_api_and_in_transactions_use_the_primary(use_replicas):
    run("seed")
    wait_until_replayed()
    client = client_for()

    assert get(client, "/_probe/runs")["servers"] == [PRIMARY]
    assert get(client, "/api/v1/_probe/atomic-runs")["servers"] == [PRIMARY]
    # A write's own reads too, and those of a GET that wrote.
    response = client.post(PROBE, {"name": "new"}, format="json")
    assert response.status_code == 201
    assert response.json()["servers"] == [PRIMARY]
    other = client_for()
    body = get(other, "/api/v1/_probe/write-then-read?name=by-get")
    assert body["servers"] == [PRIMARY]
    assert "by-get" in body["names"]


def test_without_replicas_everything_reads_from_the_primary(use_replicas, settings):
    settings.DATABASE_REPLICAS = []
    run("seed")

    assert get(client_for())["servers"] == [PRIMARY]


def test_writer_reads_its_own_write_others_may_not_yet(use_replicas, paused_replay, settings):
    settings.REPLICA_MAX_LAG_SECONDS = 3600  # the paused replica stays in use
    run("seed")
    wait_until_replayed()
    writer, other = client_for(), client_for()
    paused_replay()

    assert writer.post(PROBE, {"name": "written"}, format="json").status_code == 201

    mine = get(writer)
    assert mine["servers"] == [PRIMARY]
    assert mine["names"] == ["seed", "written"]
    theirs = get(other)  # the replica has not replayed the write
    assert theirs["servers"] == [REPLICA]
    assert theirs["names"] == ["seed"]


def test_stickiness_is_shared_through_the_cache_and_expires(use_replicas, settings):
    settings.REPLICA_STICKY_SECONDS = 1
    run("seed")
    user = UserFactory()
    writer = client_for(user)
    assert writer.post(PROBE, {"name": "written"}, format="json").status_code == 201
    wait_until_replayed()

    # Another client of the same user (another process, another machine: no cookie).
    assert get(client_for(user))["servers"] == [PRIMARY]
    time.sleep(1.2)
    assert get(client_for(user))["servers"] == [REPLICA]


def test_cookie_keeps_a_client_on_the_primary_without_the_cache(use_replicas):
    run("seed")
    user = UserFactory()
    client = client_for(user)
    response = client.post(PROBE, {"name": "written"}, format="json")
    assert response.cookies[replicas.STICKY_COOKIE]["max-age"] == 5
    cache.delete(replicas.sticky_key(user.pk))  # as if Redis had lost the user's key
    wait_until_replayed()

    assert get(client)["servers"] == [PRIMARY]


def test_tokens_are_read_from_the_primary(use_replicas, paused_replay, settings):
    settings.REPLICA_MAX_LAG_SECONDS = 3600
    run("seed")
    wait_until_replayed()
    paused_replay()

    client = client_for()  # its token (and user) exist on the primary only

    body = get(client)
    assert body["servers"] == [REPLICA]


def test_lagging_replica_is_skipped(use_replicas, paused_replay, settings):
    settings.REPLICA_MAX_LAG_SECONDS = 1
    run("seed")
    wait_until_replayed()
    client = client_for()
    assert get(client)["servers"] == [REPLICA]
    paused_replay()
    time.sleep(1.2)  # the last transaction the replica replayed is now older than the limit
    run("after-pause")
    replicas.forget_verdicts()

    body = get(client)

    assert body["servers"] == [PRIMARY]
    assert body["names"] == ["after-pause", "seed"]
    status = replicas.replica_status("replica1")
    assert status.state == "lagging"
    assert status.lag_seconds > 1


def test_replica_catching_up_is_used_again(use_replicas, paused_replay, settings):
    settings.REPLICA_MAX_LAG_SECONDS = 1
    run("seed")
    wait_until_replayed()
    paused_replay()
    time.sleep(1.2)
    run("after-pause")
    replicas.forget_verdicts()
    assert not replicas.replica_status("replica1").usable

    superuser_sql("SELECT pg_wal_replay_resume()")
    wait_until_replayed()
    replicas.forget_verdicts()

    body = get(client_for())
    assert body["servers"] == [REPLICA]
    assert body["names"] == ["after-pause", "seed"]


def test_reads_are_spread_over_usable_replicas_and_a_dead_one_is_skipped(use_replicas):
    run("seed")
    wait_until_replayed()
    client = client_for()

    use_replicas("replica1", "replica2")
    aliases = {get(client)["alias"] for _ in range(4)}
    assert aliases == {"replica1", "replica2"}

    use_replicas("replica1", "replica3")  # nothing listens on replica3's port
    started = time.monotonic()
    bodies = [get(client) for _ in range(4)]
    assert time.monotonic() - started < 5
    assert {b["alias"] for b in bodies} == {"replica1"}
    assert replicas.replica_status("replica3").state == "down"


def test_health_reports_each_replica(use_replicas):
    use_replicas("replica1", "replica3")

    response = APIClient().get("/health")

    check = response.json()["checks"]["replicas"]
    assert check["status"] == "degraded"
    assert check["replicas"]["replica1"]["status"] == "up"
    assert check["replicas"]["replica1"]["lag_seconds"] is not None
    assert check["replicas"]["replica3"]["status"] == "down"


def test_api_keeps_answering_when_the_replica_is_stopped(use_replicas, monkeypatch):
    # Verdicts last long here, so the one taken before the stop still says "up" when the
    # request runs: its query fails on the replica, and the view runs again on the primary.
    monkeypatch.setattr(replicas, "UP_VERDICT_SECONDS", 300.0)
    run("seed")
    wait_until_replayed()
    client = client_for()
    assert get(client)["servers"] == [REPLICA]

    stop_replica()
    try:
        started = time.monotonic()
        first = get(client)
        assert time.monotonic() - started < 5
        assert first["servers"] == [PRIMARY]
        assert first["names"] == ["seed"]
        assert replicas.replica_status("replica1").state == "down"
        # Later requests skip it without trying.
        started = time.monotonic()
        assert get(client)["servers"] == [PRIMARY]
        assert time.monotonic() - started < 2
        health = APIClient().get("/health").json()["checks"]["replicas"]
        assert health["replicas"]["replica1"]["status"] == "down"
    finally:
        start_replica()
    wait_until_replayed()
    replicas.forget_verdicts()
    assert get(client)["servers"] == [REPLICA]
