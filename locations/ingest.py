"""Bulk insertion of decrypted reports: one statement per batch; the database skips duplicates."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from django.db import connection

from trackers.payloads import DecryptedReport

# One round trip: insert what is new (the unique (tracker, payload) constraint drops what is
# known, even when two workers race), then move each tracker's last-seen position, but only
# forward in time: an older report fetched late never moves a tracker back.
_INGEST_SQL = """
WITH incoming AS (
    SELECT * FROM unnest(
        %s::bigint[], %s::timestamptz[], %s::float8[], %s::float8[],
        %s::int[], %s::int[], %s::int[], %s::bytea[]
    ) AS t(tracker_id, ts, lat, lon, acc, conf, status, payload)
), inserted AS (
    INSERT INTO locations_locationreport
        (tracker_id, "timestamp", point, horizontal_accuracy, confidence, status, payload,
         fetched_at)
    SELECT tracker_id, ts, ST_SetSRID(ST_MakePoint(lon, lat), 4326), acc, conf, status, payload, %s
    FROM incoming
    ON CONFLICT (tracker_id, payload) DO NOTHING
    RETURNING tracker_id, "timestamp", point, horizontal_accuracy
), latest AS (
    SELECT DISTINCT ON (tracker_id) * FROM inserted ORDER BY tracker_id, "timestamp" DESC
), moved AS (
    UPDATE trackers_tracker AS t
    SET last_seen_at = l."timestamp", last_position = l.point, last_accuracy = l.horizontal_accuracy
    FROM latest AS l
    WHERE t.id = l.tracker_id AND (t.last_seen_at IS NULL OR t.last_seen_at < l."timestamp")
    RETURNING t.id
)
SELECT (SELECT count(*) FROM inserted), (SELECT count(*) FROM moved)
"""


@dataclass(frozen=True)
class IngestResult:
    new: int
    duplicates: int
    trackers_moved: int


def ingest(reports: Sequence[tuple[int, DecryptedReport]], fetched_at: dt.datetime) -> IngestResult:
    """Store (tracker id, decrypted report) pairs; return how many were new and how many known."""
    if not reports:
        return IngestResult(0, 0, 0)
    columns: tuple[list, ...] = ([], [], [], [], [], [], [], [])
    for tracker_id, r in reports:
        for column, value in zip(
            columns,
            (
                tracker_id,
                r.timestamp,
                r.latitude,
                r.longitude,
                r.accuracy,
                r.confidence,
                r.status,
                r.payload,
            ),
            strict=True,
        ):
            column.append(value)
    with connection.cursor() as cursor:
        cursor.execute(_INGEST_SQL, [*columns, fetched_at])
        new, moved = cursor.fetchone()
    return IngestResult(new=new, duplicates=len(reports) - new, trackers_moved=moved)
