"""django-q2 tasks of the monitoring app."""

from __future__ import annotations

from .attempts import prune_attempts


def prune_fetch_attempts() -> int:
    """Delete FetchAttempt rows past FETCH_ATTEMPT_RETENTION_DAYS (daily schedule)."""
    return prune_attempts()
