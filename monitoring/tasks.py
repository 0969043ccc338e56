"""django-q2 tasks of the monitoring app."""

from __future__ import annotations

from .attempts import prune_attempts


def prune_fetch_attempts() -> int:
    """Delete FetchAttempt rows past FETCH_ATTEMPT_RETENTION_DAYS (daily schedule)."""
    return prune_attempts()


def prune_service_instances() -> int:
    """Delete service instances silent for SERVICE_INSTANCE_RETENTION_HOURS (daily schedule)."""
    from .heartbeat import prune_instances

    return prune_instances()
