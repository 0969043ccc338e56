"""The processing loop: claim trackers with pending reports, process them, repeat.

`manage.py process_locations` runs it long-running (a new report is processed about a
second after it is stored); `--once` processes everything pending and exits; django-q2's
`process-locations` schedule runs bounded passes of the same code from qcluster.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection
from django.db.models import Count
from django.utils import timezone

from locations import processing
from trackers.loop import run_loop
from trackers.signals import report_failure
from trackers.worker import worker_name

from .models import AlertDelivery, DeliveryStatus, Geofence
from .processor import LeaseLost, ProcessResult, process

log = logging.getLogger(__name__)


@dataclass
class ProcessSummary:
    batches: int = 0
    reports: int = 0
    late: int = 0
    events: int = 0
    deliveries: int = 0
    lost: int = 0
    kinds: dict[str, int] = field(default_factory=dict)

    def add(self, result: ProcessResult) -> None:
        self.batches += 1
        self.reports += result.reports
        self.late += result.late
        self.events += result.events
        self.deliveries += result.deliveries
        for kind, n in result.kinds.items():
            self.kinds[kind] = self.kinds.get(kind, 0) + n

    def line(self) -> str:
        return (
            f"reports={self.reports} late={self.late} events={self.events} "
            f"deliveries={self.deliveries} batches={self.batches}"
        )


def process_claim(claim: processing.ProcessingClaim) -> ProcessResult | None:
    """Process a claim; on a lost lease or an unexpected error, nothing of it is written."""
    try:
        return process(claim)
    except LeaseLost:
        log.warning(
            "processing lease lost; another processor does it", extra={"worker": claim.worker}
        )
        return None
    except DatabaseError:
        raise
    except Exception as exc:
        log.exception("unexpected error while processing", extra={"worker": claim.worker})
        processing.release(claim)
        report_failure(
            "unexpected",
            f"processing: {type(exc).__name__}: {exc}",
            fingerprint=f"processing:{type(exc).__name__}",
            detail={"trackers": claim.tracker_ids, "worker": claim.worker},
        )
        return None


def run_pass(
    worker: str, *, stop: threading.Event | None = None, deadline: float | None = None
) -> ProcessSummary:
    """Process until nothing is pending (or stop/deadline)."""
    summary = ProcessSummary()
    while not (stop and stop.is_set()) and (deadline is None or time.monotonic() < deadline):
        claim = processing.claim(worker)
        if claim is None:
            break
        result = process_claim(claim)
        if result is None:
            summary.lost += 1
            if summary.lost > 50:  # everything pending is held by others or failing
                break
            continue
        summary.add(result)
    return summary


@dataclass
class Backlog:
    """Reports waiting for processing, and how long the oldest has waited since it was stored."""

    reports: int
    oldest_stored_at: dt.datetime | None
    checked_at: dt.datetime  # the database clock

    @property
    def oldest_age_seconds(self) -> float | None:
        if self.oldest_stored_at is None:
            return None
        return max((self.checked_at - self.oldest_stored_at).total_seconds(), 0.0)


def backlog() -> Backlog:
    """The processing queue's length and age."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*), min(stored_at), CURRENT_TIMESTAMP FROM locations_queuedreport"
        )
        return Backlog(*cursor.fetchone())


def figures() -> dict[str, Any]:
    """The geofence service's heartbeat figures."""
    queue = backlog()
    deliveries = dict(
        AlertDelivery.objects.filter(status__in=[DeliveryStatus.PENDING, DeliveryStatus.FAILED])
        .values_list("status")
        .annotate(n=Count("id"))
        .order_by()
    )
    return {
        "active_geofences": Geofence.objects.filter(is_active=True).count(),
        "pending_reports": queue.reports,
        "oldest_pending_report_age_seconds": queue.oldest_age_seconds,
        # Events raised and not sent yet: their pending deliveries.
        "pending_events": deliveries.get(DeliveryStatus.PENDING, 0),
        "failed_deliveries": deliveries.get(DeliveryStatus.FAILED, 0),
        "last_pass_at": timezone.now().isoformat(),
    }


class Processor:
    """One long-running processor; the signal handlers only set a flag."""

    def __init__(self, name: str | None = None) -> None:
        self.name = name or worker_name("processor")
        self.stop = threading.Event()

    def run_forever(self) -> None:
        run_loop(
            name=self.name,
            service_name="geofence_service",
            stop=self.stop,
            one_pass=lambda: run_pass(self.name, stop=self.stop).batches > 0,
            idle_seconds=settings.PROCESS_IDLE_SLEEP,
            figures=figures,
            key=self,
        )
