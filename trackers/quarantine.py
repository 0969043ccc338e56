"""Which trackers a failure counts against, and when a tracker is parked (quarantined).

An upstream error may be caused by one tracker in a batch: it counts against all of them,
the claim's halving batches (queue._pick) isolate the culprit, and it is quarantined once it
has failed QUARANTINE_AFTER times, the last time alone. Account- or network-wide faults say
nothing about the trackers and count against none. Key material that cannot be read will
not get better by itself: such a tracker is parked at once.
"""

from __future__ import annotations

from django.conf import settings
from django.db.models import F
from django.db.models.functions import Now

from .findmy_client import FailureCategory, FetchError
from .leases import TRACKER_LEASE
from .models import Tracker
from .queue import Claim, ClaimedTracker
from .signals import report_failure


def release_after_failure(claim: Claim, error: FetchError) -> None:
    """Give the batch back after a failed request, counting the failure where it belongs."""
    trackers = Tracker.objects.filter(id__in=claim.tracker_ids)
    if error.category != FailureCategory.UPSTREAM:
        TRACKER_LEASE.release(trackers, claim.token)
        return
    failures = F("consecutive_failures") + 1
    alone = len(claim.trackers) == 1
    if alone and claim.trackers[0].consecutive_failures + 1 >= settings.QUARANTINE_AFTER:
        tracker_id = claim.trackers[0].id
        if TRACKER_LEASE.release(
            trackers, claim.token, quarantined_at=Now(), consecutive_failures=failures
        ):
            report_failure(
                error.category,
                f"quarantined after {settings.QUARANTINE_AFTER} failed fetches: {error.message}",
                fingerprint=f"tracker:{tracker_id}",
                tracker_id=tracker_id,
                account_id=claim.account_id,
            )
        return
    TRACKER_LEASE.release(trackers, claim.token, consecutive_failures=failures)


def quarantine_unusable(claim: Claim, tracker: ClaimedTracker, reason: str) -> None:
    """Park a tracker whose key material findmy cannot read (an operator re-imports its keys
    and lifts the quarantine), and take it out of the claim."""
    claim.trackers.remove(tracker)
    TRACKER_LEASE.release(Tracker.objects.filter(id=tracker.id), claim.token, quarantined_at=Now())
    report_failure(
        FailureCategory.INVALID_KEY,
        reason,
        fingerprint=f"tracker:{tracker.id}",
        tracker_id=tracker.id,
        account_id=claim.account_id,
    )
