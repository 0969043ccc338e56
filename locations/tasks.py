"""django-q2 tasks of the locations app's geocoding (thin: the work is in geocoding.py)."""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from trackers.findmy_client import FailureCategory
from trackers.signals import report_failure
from trackers.worker import worker_name

from .geocoding import Backfill, immediate_pass
from .resolver import Resolver

NEWEST_TASK_SECONDS = 50  # a minutely schedule; overlapping runs are safe (cell leases)
BACKFILL_TASK_SECONDS = 240  # every 5 minutes; a second run finds the advisory lock taken


def _deadline(seconds: float) -> float:
    # Inside django-q2's task timeout (PROCESSING_TIMEOUT) whatever it is set to.
    return time.monotonic() + min(seconds, settings.PROCESSING_TIMEOUT * 0.8)


def _resolver() -> Resolver | None:
    """This process's resolver; None (and a failure record, not a crash every minute) when
    the geocoder is not configured, e.g. GEOCODER=nominatim without GEOCODER_USER_AGENT."""
    try:
        return Resolver(worker_name("qcluster-geocoder"))
    except ImproperlyConfigured as exc:
        report_failure(
            FailureCategory.GEOCODE,
            f"geocoding is not configured: {exc}",
            fingerprint="geocode:config",
        )
        return None


def geocode_newest() -> dict[str, Any]:
    """New reports against the cache, the newest and alerts' reports looked up, for ~50 s."""
    resolver = _resolver()
    if resolver is None:
        return {"result": "not configured"}
    deadline = _deadline(NEWEST_TASK_SECONDS)
    carry: set[int] = set()
    passes = 0
    while time.monotonic() < deadline:
        before = sum(resolver.summary.outcomes.values())
        immediate_pass(
            resolver,
            check_processing=passes == 0,
            carry=carry,
            seconds=max(deadline - time.monotonic(), 0.0),
        )
        passes += 1
        if sum(resolver.summary.outcomes.values()) == before and not carry:
            time.sleep(min(1.0, max(deadline - time.monotonic(), 0)))
    return {"passes": passes, "summary": resolver.summary.line()}


def geocode_backfill() -> dict[str, Any]:
    """The off-peak backfill (does nothing outside GEOCODE_BACKFILL_WINDOW)."""
    resolver = _resolver()
    if resolver is None:
        return {"result": "not configured"}
    run = Backfill(resolver)
    run.run(deadline=_deadline(BACKFILL_TASK_SECONDS))
    return {"result": run.reason, "batches": run.batches, "summary": resolver.summary.line()}
