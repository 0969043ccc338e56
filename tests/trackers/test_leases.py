"""The lease helper every queue uses: only the holder's token changes a leased row."""

from __future__ import annotations

import uuid

import pytest
from django.utils import timezone

from trackers.leases import TRACKER_LEASE
from trackers.models import Tracker

from ..factories import TrackerFactory

pytestmark = pytest.mark.django_db


def test_a_lease_is_taken_and_released_by_its_token():
    tracker = TrackerFactory()
    token = uuid.uuid4()
    Tracker.objects.filter(pk=tracker.pk).update(**TRACKER_LEASE.take("w1", token, 60))
    assert Tracker.objects.filter(TRACKER_LEASE.leased(), pk=tracker.pk).exists()

    assert TRACKER_LEASE.release(Tracker.objects.all(), token, consecutive_failures=2) == 1

    tracker.refresh_from_db()
    assert (tracker.claimed_by, tracker.claim_token, tracker.lease_until) == ("", None, None)
    assert tracker.consecutive_failures == 2


def test_a_lost_lease_changes_nothing():
    tracker = TrackerFactory()
    mine, theirs = uuid.uuid4(), uuid.uuid4()
    Tracker.objects.filter(pk=tracker.pk).update(**TRACKER_LEASE.take("w2", theirs, 60))

    assert TRACKER_LEASE.release(Tracker.objects.all(), mine, consecutive_failures=9) == 0

    tracker.refresh_from_db()
    assert (tracker.claimed_by, tracker.consecutive_failures) == ("w2", 0)


def test_expired_leases_are_released_and_live_ones_kept():
    expired, live = TrackerFactory(), TrackerFactory()
    Tracker.objects.filter(pk=expired.pk).update(
        claimed_by="dead", claim_token=uuid.uuid4(), lease_until=timezone.now()
    )
    Tracker.objects.filter(pk=live.pk).update(**TRACKER_LEASE.take("alive", uuid.uuid4(), 60))

    assert TRACKER_LEASE.release_expired(Tracker.objects.all()) == 1
    assert set(Tracker.objects.filter(TRACKER_LEASE.unleased()).values_list("pk", flat=True)) == {
        expired.pk
    }
