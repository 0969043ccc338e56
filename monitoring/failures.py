"""Failure records (dead letters): one row per failing thing, counted, never a crash."""

from __future__ import annotations

import json
from typing import Any

from django.db import connection
from django.utils import timezone

_UPSERT_SQL = """
INSERT INTO monitoring_failurerecord
    (category, fingerprint, account_id, tracker_id, attempts, first_seen, last_seen,
     last_error, detail, resolved_at)
VALUES (%s, %s, %s, %s, 1, %s, %s, %s, %s::jsonb, NULL)
ON CONFLICT (category, fingerprint) DO UPDATE SET
    attempts = monitoring_failurerecord.attempts + 1,
    last_seen = EXCLUDED.last_seen,
    last_error = EXCLUDED.last_error,
    detail = EXCLUDED.detail,
    resolved_at = NULL
"""


def record_failure(
    category: str,
    message: str,
    *,
    fingerprint: str,
    account_id: int | None = None,
    tracker_id: int | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Count a failure; a resolved record that fails again is reopened."""
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            _UPSERT_SQL,
            [
                category,
                fingerprint[:100],
                account_id,
                tracker_id,
                now,
                now,
                message[:10_000],
                json.dumps(detail or {}),
            ],
        )
