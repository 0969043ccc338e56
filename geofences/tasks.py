"""django-q2 tasks of the geofences app."""

from __future__ import annotations

import time
from typing import Any

from trackers.worker import worker_name

from .processor import mark_silent_trackers
from .worker import run_pass

TASK_SECONDS = 50  # a minutely schedule; overlapping runs are safe (claims)


def process_locations() -> dict[str, Any]:
    summary = run_pass(worker_name("qcluster-processor"), deadline=time.monotonic() + TASK_SECONDS)
    return {"summary": summary.line()}


def detect_silent_trackers() -> int:
    return mark_silent_trackers()


def send_alerts() -> dict[str, Any]:
    """Send the alert deliveries due now, for up to TASK_SECONDS (a minutely schedule)."""
    from .deliveries import run_pass as send_pass

    summary = send_pass(worker_name("qcluster-sender"), deadline=time.monotonic() + TASK_SECONDS)
    return {"summary": summary.line()}
