"""The fetch audit log: one FetchAttempt row per request, and running totals for /metrics.

Every attempt is logged with `log_attempt()`, which also adds it to its FetchTotal row (one
upsert, in the same transaction), so the Prometheus counters never depend on how many
FetchAttempt rows are kept. `prune_attempts()` deletes the old rows (django-q2 schedule
"prune-fetch-attempts", daily, or `manage.py prune_fetch_attempts` from cron).
"""

from __future__ import annotations

import bisect
import datetime as dt

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from .models import DURATION_BUCKETS, FetchAttempt

_ADD_TO_TOTALS_SQL = """
INSERT INTO monitoring_fetchtotal
    (outcome, bucket, requests, new_reports, duplicate_reports, duration_seconds)
VALUES (%s, %s, 1, %s, %s, %s)
ON CONFLICT (outcome, bucket) DO UPDATE SET
    requests = monitoring_fetchtotal.requests + 1,
    new_reports = monitoring_fetchtotal.new_reports + EXCLUDED.new_reports,
    duplicate_reports = monitoring_fetchtotal.duplicate_reports + EXCLUDED.duplicate_reports,
    duration_seconds = monitoring_fetchtotal.duration_seconds + EXCLUDED.duration_seconds
"""


def duration_bucket(seconds: float) -> int:
    """Index of the smallest histogram bound `seconds` fits under; len(bounds) for +Inf."""
    return bisect.bisect_left(DURATION_BUCKETS, seconds)


def log_attempt(
    *,
    account_id: int,
    worker: str,
    started_at: dt.datetime,
    finished_at: dt.datetime,
    trackers: int,
    outcome: str,
    new_reports: int = 0,
    duplicate_reports: int = 0,
    failed_reports: int = 0,
    error: str = "",
) -> FetchAttempt:
    """Record one fetch request and add it to the running totals, atomically."""
    seconds = max((finished_at - started_at).total_seconds(), 0.0)
    with transaction.atomic():
        attempt = FetchAttempt.objects.create(
            account_id=account_id,
            worker=worker,
            started_at=started_at,
            finished_at=finished_at,
            trackers=trackers,
            outcome=outcome,
            new_reports=new_reports,
            duplicate_reports=duplicate_reports,
            failed_reports=failed_reports,
            error=error[:2000],
        )
        with connection.cursor() as cursor:
            cursor.execute(
                _ADD_TO_TOTALS_SQL,
                [outcome, duration_bucket(seconds), new_reports, duplicate_reports, seconds],
            )
    return attempt


def prune_attempts(days: int | None = None) -> int:
    """Delete FetchAttempt rows older than `days` (FETCH_ATTEMPT_RETENTION_DAYS); the
    totals behind /metrics keep counting them. Returns how many rows were deleted."""
    days = settings.FETCH_ATTEMPT_RETENTION_DAYS if days is None else days
    cutoff = timezone.now() - dt.timedelta(days=days)
    deleted, _ = FetchAttempt.objects.filter(started_at__lt=cutoff).delete()
    return deleted
