"""The django-q2 schedules run by `manage.py qcluster` (fetching, and pruning the audit log),
created idempotently by migrations."""

from __future__ import annotations

from typing import Any

SCHEDULES: dict[str, dict[str, Any]] = {
    "fetch-due-trackers": {
        "func": "trackers.tasks.fetch_due_trackers",
        "schedule_type": "I",  # Schedule.MINUTES
        "minutes": 1,
        "repeats": -1,  # forever
    },
    "prune-fetch-attempts": {
        "func": "monitoring.tasks.prune_fetch_attempts",
        "schedule_type": "D",  # Schedule.DAILY
        "repeats": -1,
    },
    "process-locations": {
        "func": "geofences.tasks.process_locations",
        "schedule_type": "I",  # Schedule.MINUTES
        "minutes": 1,
        "repeats": -1,
    },
    "send-alerts": {
        "func": "geofences.tasks.send_alerts",
        "schedule_type": "I",
        "minutes": 1,
        "repeats": -1,
    },
    "geocode-newest": {
        "func": "locations.tasks.geocode_newest",
        "schedule_type": "I",
        "minutes": 1,
        "repeats": -1,
    },
    "geocode-backfill": {
        "func": "locations.tasks.geocode_backfill",
        "schedule_type": "I",
        "minutes": 5,
        "repeats": -1,
    },
    "refresh-latest-locations": {
        "func": "locations.latest_tasks.refresh_latest",
        "schedule_type": "I",
        "minutes": 1,
        "repeats": -1,
    },
    "detect-silent-trackers": {
        "func": "geofences.tasks.detect_silent_trackers",
        "schedule_type": "I",
        "minutes": 15,
        "repeats": -1,
    },
    "prune-service-instances": {
        "func": "monitoring.tasks.prune_service_instances",
        "schedule_type": "D",  # Schedule.DAILY
        "repeats": -1,
    },
}


def ensure_schedules(schedule_model: Any) -> None:
    """update_or_create by name: safe to run any number of times (migrations, setup, tests)."""
    for name, fields in SCHEDULES.items():
        schedule_model.objects.update_or_create(name=name, defaults=fields)
