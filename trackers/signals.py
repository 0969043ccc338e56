"""What the fetch path tells the rest of the service: the one way out of this app.

The trackers app never imports monitoring (monitoring reads the fleet; the reverse would be
an import cycle). It sends these signals instead; monitoring's receivers record failure
records, the fetch audit log and heartbeats. Receivers run synchronously, in the sender's
thread and transaction, and their errors propagate (`send`, not `send_robust`): a failure
record that could not be written is never silently lost.
"""

from __future__ import annotations

from django.dispatch import Signal

# Something failed: kwargs category, message, fingerprint, account_id, tracker_id, detail.
failure = Signal()
# One fetch request ended: kwargs account_id, worker, started_at, finished_at, trackers,
# outcome, new_reports, duplicate_reports, failed_reports, error.
fetch_attempt = Signal()
# A long-running process started / stopped: kwargs service_name, figures (a callable
# returning the process's own heartbeat figures), key (any hashable naming the process).
process_started = Signal()
process_stopped = Signal()


def report_failure(
    category: str,
    message: str,
    *,
    fingerprint: str,
    account_id: int | None = None,
    tracker_id: int | None = None,
    detail: dict | None = None,
) -> None:
    """Record a failure (a dead letter): counted by (category, fingerprint), never raised."""
    failure.send(
        sender=None,
        category=category,
        message=message,
        fingerprint=fingerprint,
        account_id=account_id,
        tracker_id=tracker_id,
        detail=detail or {},
    )
