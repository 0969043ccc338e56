"""Bulk insertion of decrypted reports: a binary COPY per batch; the database skips duplicates.

A batch goes in a binary COPY (cheap to encode here and to parse there) into a temporary
staging table, then into locations_locationreport in one INSERT ... SELECT ... ON CONFLICT
DO NOTHING that also moves the trackers' last-seen positions. The staging table belongs to
the connection's session: created on first use, emptied by PostgreSQL at every commit. A
transaction-pooling proxy (pgbouncer) in front of PostgreSQL would break that; we have none.
"""

from __future__ import annotations

import datetime as dt
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

from django.db import connection, transaction
from django.db.backends.utils import CursorWrapper

from locations import generations
from trackers.payloads import DecryptedReport

_CREATE_STAGING_SQL = """
CREATE TEMPORARY TABLE IF NOT EXISTS locations_ingest_staging (
    tracker_id bigint, ts timestamptz, lat float8, lon float8,
    acc smallint, conf smallint, status smallint, payload bytea
) ON COMMIT DELETE ROWS
"""
_COPY_SQL = "COPY pg_temp.locations_ingest_staging FROM STDIN (FORMAT BINARY)"
_COPY_TYPES = ("int8", "timestamptz", "float8", "float8", "int2", "int2", "int2", "bytea")

# One statement: insert what is new (the unique (tracker, payload) constraint drops what is
# known, even when two workers race; the ORDER BY makes racing workers wait for each other in
# the same order, never in a deadlock), put the new reports in the processing queue, then move
# each tracker's last-seen position, but only forward in time: an older report fetched late
# never moves a tracker back. Answers the counts and the trackers that got new reports.
_INGEST_SQL = """
WITH inserted AS (
    INSERT INTO locations_locationreport
        (tracker_id, "timestamp", point, horizontal_accuracy, confidence, status, payload,
         fetched_at)
    SELECT tracker_id, ts, ST_SetSRID(ST_MakePoint(lon, lat), 4326), acc, conf, status, payload, %s
    FROM pg_temp.locations_ingest_staging
    ORDER BY tracker_id, payload
    ON CONFLICT (tracker_id, payload) DO NOTHING
    RETURNING id, tracker_id, "timestamp", point, horizontal_accuracy
), queued AS (
    INSERT INTO locations_queuedreport (report_id, tracker_id, stored_at)
    SELECT id, tracker_id, %s FROM inserted
), latest AS (
    SELECT DISTINCT ON (tracker_id) * FROM inserted ORDER BY tracker_id, "timestamp" DESC
), moved AS (
    UPDATE trackers_tracker AS t
    SET last_seen_at = l."timestamp", last_position = l.point, last_accuracy = l.horizontal_accuracy
    FROM latest AS l
    WHERE t.id = l.tracker_id AND (t.last_seen_at IS NULL OR t.last_seen_at < l."timestamp")
    RETURNING t.id
)
SELECT (SELECT count(*) FROM inserted), (SELECT count(*) FROM moved),
       (SELECT coalesce(array_agg(DISTINCT tracker_id), '{}') FROM inserted)
"""

# The psycopg connections whose session has the staging table (a new connection has not).
_staged_sessions: weakref.WeakSet = weakref.WeakSet()


@dataclass(frozen=True)
class IngestResult:
    new: int
    duplicates: int
    trackers_moved: int
    # The trackers that got at least one new report.
    tracker_ids: tuple[int, ...] = ()


def ingest(reports: Sequence[tuple[int, DecryptedReport]], fetched_at: dt.datetime) -> IngestResult:
    """Store (tracker id, decrypted report) pairs; return how many were new and how many known."""
    if not reports:
        return IngestResult(0, 0, 0)
    nested = connection.in_atomic_block
    with transaction.atomic(), connection.cursor() as cursor:
        _stage(cursor, reports)
        cursor.execute(_INGEST_SQL, [fetched_at, fetched_at])
        new, moved, tracker_ids = cursor.fetchone()
        if nested:
            # The table empties itself at the caller's commit, later: the caller's next batch
            # must not find this one there.
            cursor.execute("TRUNCATE pg_temp.locations_ingest_staging")
    # The API's search cache: the trackers' counters move once the rows are committed (here,
    # or at the commit of a caller's transaction), never before.
    generations.bump_on_commit(tracker_ids)
    return IngestResult(
        new=new, duplicates=len(reports) - new, trackers_moved=moved, tracker_ids=tuple(tracker_ids)
    )


def _stage(cursor: CursorWrapper, reports: Sequence[tuple[int, DecryptedReport]]) -> None:
    """Copy a batch into the session's staging table, created by the session's first batch."""
    session = connection.connection
    if session not in _staged_sessions:
        cursor.execute(_CREATE_STAGING_SQL)
        # Remembered once committed: a transaction rolled back takes the new table with it.
        transaction.on_commit(lambda: _staged_sessions.add(session))
    with connection.wrap_database_errors, cursor.copy(_COPY_SQL) as copy:
        copy.set_types(_COPY_TYPES)
        for tracker_id, r in reports:
            copy.write_row(
                (
                    tracker_id,
                    r.timestamp,
                    r.latitude,
                    r.longitude,
                    r.accuracy,
                    r.confidence,
                    r.status,
                    r.payload,
                )
            )
