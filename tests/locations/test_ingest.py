"""ingest(): new rows stored, duplicates skipped, last-seen moved forward only; the pipeline."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection, connections, transaction

from locations.ingest import IngestResult, ingest
from locations.models import LocationReport, QueuedReport
from locations.pipeline import BackgroundStore
from trackers.models import Tracker
from trackers.payloads import DecryptedReport

from ..factories import TrackerFactory

T0 = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)
FETCHED = dt.datetime(2026, 11, 1, 13, 0, tzinfo=dt.UTC)


def report(
    tracker: Tracker, minutes: int = 0, payload: bytes | None = None, **fields: object
) -> tuple[int, DecryptedReport]:
    values = {"latitude": 52.5, "longitude": 13.4, "accuracy": 10, "confidence": 2, "status": 0}
    values.update(fields)
    return tracker.id, DecryptedReport(
        hashed_id=tracker.hashed_adv_key,
        payload=payload or f"payload-{tracker.id}-{minutes}".encode(),
        timestamp=T0 + dt.timedelta(minutes=minutes),
        **values,
    )


@pytest.mark.django_db
def test_new_reports_are_stored_with_their_fields():
    tracker = TrackerFactory()
    batch = [report(tracker, 0, b"\x00first", latitude=-33.9, longitude=151.2, accuracy=25)]

    result = ingest(batch, fetched_at=FETCHED)

    assert (result.new, result.duplicates, result.trackers_moved) == (1, 0, 1)
    stored = LocationReport.objects.get()
    assert stored.tracker_id == tracker.id
    assert stored.timestamp == T0
    assert (stored.longitude, stored.latitude, stored.point.srid) == (151.2, -33.9, 4326)
    assert (stored.horizontal_accuracy, stored.confidence, stored.status) == (25, 2, 0)
    assert bytes(stored.payload) == b"\x00first"
    assert stored.fetched_at == FETCHED


@pytest.mark.django_db
def test_a_report_twice_in_one_batch_is_stored_once():
    tracker = TrackerFactory()

    result = ingest([report(tracker, 0), report(tracker, 0)], fetched_at=FETCHED)

    assert (result.new, result.duplicates) == (1, 1)
    assert LocationReport.objects.count() == 1


@pytest.mark.django_db
def test_reports_stored_by_an_earlier_batch_are_duplicates():
    tracker = TrackerFactory()
    ingest([report(tracker, 0), report(tracker, 1)], fetched_at=FETCHED)

    result = ingest([report(tracker, 1), report(tracker, 2)], fetched_at=FETCHED)

    assert (result.new, result.duplicates) == (1, 1)
    assert LocationReport.objects.count() == 3


@pytest.mark.django_db
def test_new_reports_and_only_they_join_the_processing_queue():
    first, second, idle = TrackerFactory(), TrackerFactory(), TrackerFactory()
    ingest([report(first, 0)], fetched_at=FETCHED)
    QueuedReport.objects.all().delete()  # processed

    later = FETCHED + dt.timedelta(hours=1)
    result = ingest(
        [report(first, 0), report(first, 1), report(second, 0), report(second, 0)],
        fetched_at=later,
    )

    new = LocationReport.objects.exclude(timestamp=T0, tracker=first)
    queued = QueuedReport.objects.values_list("report_id", "tracker_id", "stored_at")
    assert sorted(queued) == sorted((r.id, r.tracker_id, later) for r in new)
    assert sorted(result.tracker_ids) == sorted([first.id, second.id])
    assert idle.id not in result.tracker_ids


@pytest.mark.django_db
def test_last_seen_is_the_newest_report_of_the_batch():
    tracker = TrackerFactory()

    ingest([report(tracker, 5, accuracy=5), report(tracker, 9, accuracy=9)], fetched_at=FETCHED)

    tracker.refresh_from_db()
    assert tracker.last_seen_at == T0 + dt.timedelta(minutes=9)
    assert tracker.last_accuracy == 9
    assert (tracker.last_position.x, tracker.last_position.y) == (13.4, 52.5)


@pytest.mark.django_db
def test_an_older_report_stored_later_never_moves_last_seen_back():
    tracker = TrackerFactory()
    ingest([report(tracker, 10, latitude=1.0)], fetched_at=FETCHED)

    result = ingest([report(tracker, 3, latitude=2.0)], fetched_at=FETCHED)

    assert (result.new, result.trackers_moved) == (1, 0)
    tracker.refresh_from_db()
    assert tracker.last_seen_at == T0 + dt.timedelta(minutes=10)
    assert tracker.last_position.y == 1.0


@pytest.mark.django_db
def test_an_empty_batch_stores_nothing():
    assert ingest([], fetched_at=FETCHED) == IngestResult(new=0, duplicates=0, trackers_moved=0)
    assert not LocationReport.objects.exists()


@pytest.mark.django_db
def test_a_batch_inside_a_transaction_leaves_nothing_staged():
    # The staging table empties itself at commit; the next batch before it must start clean.
    ingest([report(TrackerFactory(), 0)], fetched_at=FETCHED)

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_temp.locations_ingest_staging")
        assert cursor.fetchone()[0] == 0


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_first_batch_leaves_ingest_working():
    # The staging table is created by the first batch of a session: rolled back with it.
    tracker = TrackerFactory()
    connection.close()  # a new session: no staging table yet
    with transaction.atomic():
        ingest([report(tracker, 0)], fetched_at=FETCHED)
        transaction.set_rollback(True)

    assert ingest([report(tracker, 0)], fetched_at=FETCHED).new == 1
    assert ingest([report(tracker, 1)], fetched_at=FETCHED).new == 1
    assert LocationReport.objects.count() == 2


# The store's thread has its own connection, outside the test's transaction: these tests
# commit and are cleaned up by flushing (transaction=True).
@pytest.mark.django_db(transaction=True)
def test_background_store_stores_everything_submitted():
    trackers = TrackerFactory.create_batch(3)
    results = []
    with BackgroundStore() as store:
        for minutes in range(4):
            batch = [report(t, minutes) for t in trackers]
            results.append(store.submit(ingest, batch, fetched_at=FETCHED))
        results.append(store.drain())

    assert results[0] is None
    assert [r.new for r in results[1:]] == [3, 3, 3, 3]
    assert LocationReport.objects.count() == 12


@pytest.mark.django_db(transaction=True)
def test_two_stores_racing_on_the_same_reports_store_them_once():
    tracker = TrackerFactory()
    batch = [report(tracker, minutes) for minutes in range(200)]
    with BackgroundStore() as first, BackgroundStore() as second:
        first.submit(ingest, batch, fetched_at=FETCHED)
        second.submit(ingest, batch, fetched_at=FETCHED)
        results = [first.drain(), second.drain()]

    assert sum(r.new for r in results) == 200
    assert sum(r.duplicates for r in results) == 200
    assert LocationReport.objects.count() == 200


def fail() -> None:
    raise ValueError("store failed")


def test_an_error_in_the_thread_is_raised_at_the_next_submit():
    called = []
    with BackgroundStore() as store:
        store.submit(fail)
        with pytest.raises(ValueError, match="store failed"):
            store.submit(called.append, "not started")
        store.submit(called.append, "later")
    assert called == ["later"]


def test_an_error_in_the_thread_is_raised_by_drain_and_on_exit():
    store = BackgroundStore()
    store.submit(fail)
    with pytest.raises(ValueError, match="store failed"):
        store.drain()
    with pytest.raises(ValueError, match="store failed"), store:
        store.submit(fail)


@pytest.mark.django_db(transaction=True)
def test_the_store_closes_its_threads_connection():
    with BackgroundStore() as store:
        store.submit(lambda: (Tracker.objects.count(), connections["default"]))
        _, thread_connection = store.drain()
        assert thread_connection is not connections["default"]
        assert thread_connection.connection is not None
    assert thread_connection.connection is None
