"""The real API (/api/v1/trackers) on a real replica: in-process, and served by gunicorn while
the replica is stopped under it."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from django.db import connections

from api.auth import create_token
from tests.factories import TrackerFactory, UserFactory, client_for

from ..servers import GunicornServer, database_url
from .conftest import (
    REPLICA_PORT,
    start_replica,
    stop_replica,
    superuser_sql,
    wait_until_replayed,
)

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def names(response: object) -> str:
    assert response.status_code == 200, response.content
    return response.content.decode()


def test_patch_then_list_sees_the_patch_while_others_read_the_replica(
    use_replicas, paused_replay, settings
):
    settings.REPLICA_MAX_LAG_SECONDS = 3600  # the paused replica stays in use
    owner = UserFactory()
    tracker = TrackerFactory(owner=owner, name="name-before")
    owner_client, staff_client = client_for(owner), client_for(UserFactory(is_staff=True))
    wait_until_replayed()
    paused_replay()

    response = owner_client.patch(
        f"/api/v1/trackers/{tracker.pk}", {"name": "name-after"}, format="json"
    )
    assert response.status_code == 200, response.content

    assert "name-after" in names(owner_client.get("/api/v1/trackers"))
    # Staff see every tracker; they did not write, so they read the (paused) replica.
    seen_by_staff = names(staff_client.get("/api/v1/trackers"))
    assert "name-before" in seen_by_staff
    assert "name-after" not in seen_by_staff


# --- served by gunicorn -----------------------------------------------------------------
class Server(GunicornServer):
    """gunicorn (one worker) serving the project on the test database and its replica."""

    def get(self, path: str, token: str | None = None) -> tuple[int, dict]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        status, _, body = self.fetch("GET", path, headers)
        return status, json.loads(body)


@pytest.fixture
def server(replica_aliases: None) -> Iterator[Server]:
    served = Server(
        DATABASE_URL=database_url(),
        DATABASE_REPLICA_URL=database_url(port=REPLICA_PORT),
        REPLICA_MAX_LAG_SECONDS="3600",  # a paused replica stays in use
    )
    try:
        served.wait_until_live()
        yield served
    finally:
        served.stop()


def test_served_api_reads_the_replica_and_keeps_answering_when_it_stops(server):
    owner = UserFactory(is_staff=True)
    _, token = create_token(owner, "gunicorn test", None)
    TrackerFactory(owner=owner, name="replicated-tracker")
    wait_until_replayed()

    status, body = server.get("/api/v1/trackers", token)
    assert status == 200, body
    assert "replicated-tracker" in json.dumps(body)

    # Proof that the replica answers: with its replay paused, a new tracker is not listed.
    superuser_sql("SELECT pg_wal_replay_pause()")
    try:
        TrackerFactory(owner=owner, name="primary-only-tracker")
        status, body = server.get("/api/v1/trackers", token)
        assert status == 200, body
        assert "primary-only-tracker" not in json.dumps(body)
    finally:
        superuser_sql("SELECT pg_wal_replay_resume()")

    stop_replica()
    try:
        started = time.monotonic()
        for _ in range(10):
            status, body = server.get("/api/v1/trackers", token)
            assert status == 200, (body, server.output())
            assert "primary-only-tracker" in json.dumps(body)  # from the primary
        assert time.monotonic() - started < 20
        status, health = server.get("/health")
        assert health["checks"]["replicas"]["replicas"]["replica1"]["status"] == "down"
    finally:
        start_replica()

    # Back in use once this process checks it again (a down verdict lasts a few seconds).
    wait_until_replayed()
    deadline = time.monotonic() + 30
    while True:
        status, health = server.get("/health")
        if health["checks"]["replicas"]["replicas"]["replica1"]["status"] == "up":
            break
        assert time.monotonic() < deadline, health
        time.sleep(0.5)
    status, body = server.get("/api/v1/trackers", token)
    assert status == 200, body


# --- the search cache on a lagging replica ------------------------------------------------
def test_a_search_after_an_ingest_reads_the_primary_while_the_replica_lags(
    use_replicas, paused_replay, settings
):
    """Ingest notes the primary's WAL position beside the cache counters: a search that
    misses computes on the replica only if it has replayed that far (else on the primary),
    so neither the answer nor the entry it leaves lacks the new report."""
    import datetime as dt

    from django.utils import timezone

    from locations.ingest import ingest
    from trackers.payloads import DecryptedReport

    settings.REPLICA_MAX_LAG_SECONDS = 3600  # the paused replica stays in use
    settings.API_SEARCH_CACHE_SECONDS = 300
    owner = UserFactory()
    tracker = TrackerFactory(owner=owner)
    client = client_for(owner)
    now = timezone.now()

    def store(minutes: int) -> None:
        report = DecryptedReport(
            hashed_id=tracker.hashed_adv_key,
            payload=f"lag-{minutes}".encode(),
            timestamp=now - dt.timedelta(minutes=minutes),
            latitude=52.5,
            longitude=13.4,
            accuracy=10,
            confidence=2,
            status=0,
        )
        ingest([(tracker.id, report)], fetched_at=now)

    def search() -> int:
        start = (now - dt.timedelta(hours=1)).isoformat().replace("+00:00", "Z")
        end = (now + dt.timedelta(minutes=1)).isoformat().replace("+00:00", "Z")
        response = client.get(
            f"/api/v1/trackers/{tracker.pk}/locations", {"starts_at": start, "ends_at": end}
        )
        assert response.status_code == 200, response.content
        return len(response.json()["data"]["results"])

    store(30)
    wait_until_replayed()
    assert search() == 1
    paused_replay()
    store(20)  # committed on the primary, not replayed on the replica

    # The replica has not replayed the new report's commit: the primary answers.
    assert search() == 2
    # Without the cache's counters in the way, the paused replica really lacks it.
    with connections["replica1"].cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM locations_locationreport WHERE tracker_id = %s", [tracker.pk]
        )
        assert cursor.fetchone()[0] == 1
    assert search() == 2  # the entry the primary's answer left
