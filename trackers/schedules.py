"""The django-q2 schedules that drive fetching from `manage.py qcluster`, created idempotently."""

from __future__ import annotations

from typing import Any

SCHEDULES: dict[str, dict[str, Any]] = {
    "fetch-due-trackers": {
        "func": "trackers.tasks.fetch_due_trackers",
        "schedule_type": "I",  # Schedule.MINUTES
        "minutes": 1,
        "repeats": -1,  # forever
    },
}


def ensure_schedules(schedule_model: Any) -> None:
    """update_or_create by name: safe to run any number of times (migrations, setup, tests)."""
    for name, fields in SCHEDULES.items():
        schedule_model.objects.update_or_create(name=name, defaults=fields)
