"""The processing queue: reports not processed yet (QueuedReport rows), claimed per tracker.

A claim leases up to PROCESS_BATCH_TRACKERS trackers that have pending reports (their
TrackerProcessing rows, `SELECT ... FOR UPDATE SKIP LOCKED`), so no two processors ever work
on one tracker's reports at once. The processor reads the pending reports in timestamp order
outside any transaction, and commits everything it concluded (states, events, deliveries,
the deletion of the queue rows) in one transaction that first checks the lease is still its
own: a processor killed mid-batch wrote nothing, its lease expires, and the next claim does
the work again; a processor whose lease was taken over writes nothing. Each report is
processed exactly once.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection, transaction

from trackers.leases import LeaseColumns

from .models import TrackerProcessing
from .pgarrays import int_array

PROCESSING_LEASE = LeaseColumns("claimed_by", "claim_token", "lease_until")

# Trackers with pending reports, in tracker order from a cursor that goes round (each
# process sweeps the backlog, so every pending tracker is reached within one sweep); the
# lease rows are made for trackers that have none yet. The queue's tracker index serves it
# and lets it stop after `scan` trackers: an empty poll costs next to nothing, and a claim
# in a backlog of millions reads a few thousand index entries.
_PENDING_SQL = """
WITH pending AS (
    SELECT DISTINCT tracker_id FROM locations_queuedreport
    WHERE tracker_id > %(after)s
    ORDER BY tracker_id LIMIT %(scan)s
), made AS (
    INSERT INTO locations_trackerprocessing (tracker_id, claimed_by, battery_low)
    SELECT tracker_id, '', false FROM pending
    ON CONFLICT (tracker_id) DO NOTHING
)
SELECT tracker_id FROM pending ORDER BY tracker_id
"""

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

# This process's place in its sweep over the pending trackers.
_sweep = {"after": 0}

_LOCK_SQL = """
SELECT tracker_id FROM locations_trackerprocessing
WHERE tracker_id = ANY(%(ids)s::bigint[]) AND (lease_until IS NULL OR lease_until < now())
ORDER BY array_position(%(ids)s::bigint[], tracker_id)
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED
"""


@dataclass
class PendingReport:
    id: int
    tracker_id: int
    timestamp: dt.datetime
    accuracy: int
    status: int


@dataclass
class ProcessingClaim:
    worker: str
    token: uuid.UUID
    tracker_ids: list[int]
    reports: list[PendingReport] = field(default_factory=list)


def claim(worker: str, max_trackers: int | None = None) -> ProcessingClaim | None:
    """Lease trackers with pending reports and read those reports, or None."""
    limit = max_trackers or settings.PROCESS_BATCH_TRACKERS
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_PENDING_SQL, {"scan": limit * 4, "after": _sweep["after"]})
        candidates = [row[0] for row in cursor.fetchall()]
        if not candidates and _sweep["after"]:
            _sweep["after"] = 0  # the end of the sweep: round again
            cursor.execute(_PENDING_SQL, {"scan": limit * 4, "after": 0})
            candidates = [row[0] for row in cursor.fetchall()]
        if not candidates:
            return None
        cursor.execute(_LOCK_SQL, {"ids": int_array(candidates), "limit": limit})
        ids = [row[0] for row in cursor.fetchall()]
        # Next claim starts after the last candidate looked at (held by others included).
        _sweep["after"] = candidates[-1]
        if not ids:
            return None
        token = uuid.uuid4()
        TrackerProcessing.objects.filter(tracker_id__any=ids).update(
            **PROCESSING_LEASE.take(worker, token, settings.PROCESSING_TIMEOUT)
        )
    result = ProcessingClaim(worker, token, ids)
    result.reports = pending_reports(ids)
    return result


def pending_reports(tracker_ids: list[int]) -> list[PendingReport]:
    """The trackers' unprocessed reports, per tracker in timestamp order.

    The queue's ids first, then the reports by primary key: a join lets the planner hash a
    sequential scan of every report for a few thousand rows. Timestamps come as microseconds
    since the epoch: Django's loader of timestamptz parses each in Python (a tenth of the
    processor's time at 2,000 reports a batch)."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT r.id, r.tracker_id, (EXTRACT(EPOCH FROM r."timestamp") * 1000000)::bigint,
                r.horizontal_accuracy, r.status
            FROM locations_locationreport AS r
            WHERE r.id = ANY(ARRAY(
                SELECT report_id FROM locations_queuedreport WHERE tracker_id = ANY(%s::bigint[])
            ))
            ORDER BY r.tracker_id, r."timestamp", r.id
            """,
            [int_array(tracker_ids)],
        )
        return [
            PendingReport(report_id, tracker_id, _EPOCH + dt.timedelta(microseconds=us), acc, st)
            for report_id, tracker_id, us, acc, st in cursor.fetchall()
        ]


def still_ours(claim_: ProcessingClaim) -> bool:
    """Inside the commit's transaction: lock our lease rows; False if any was taken over."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM (SELECT 1 FROM locations_trackerprocessing "
            "WHERE tracker_id = ANY(%s::bigint[]) AND claim_token = %s FOR UPDATE) AS mine",
            [int_array(claim_.tracker_ids), claim_.token],
        )
        return cursor.fetchone()[0] == len(claim_.tracker_ids)


def mark_processed(claim_: ProcessingClaim) -> int:
    """Inside the commit's transaction: the claim's reports are done (off the queue)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "DELETE FROM locations_queuedreport WHERE report_id = ANY(%s::bigint[])",
            [int_array(r.id for r in claim_.reports)],
        )
        return cursor.rowcount


def release(claim_: ProcessingClaim) -> int:
    return PROCESSING_LEASE.release(
        TrackerProcessing.objects.filter(tracker_id__in=claim_.tracker_ids), claim_.token
    )
