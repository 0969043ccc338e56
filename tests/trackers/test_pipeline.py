"""The pipelined pass: batch n stored in a background thread while batch n+1 is fetched.

Transactional: the store thread has its own connection and must see committed data.
"""

from __future__ import annotations

import base64

import pytest
from django.db import connection

from locations.models import LocationReport
from monitoring.models import FetchAttempt
from trackers.models import Tracker
from trackers.worker import run_pass

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_pipelined_pass_stores_exactly_what_was_served(
    simulator, sim_account, make_fleet, settings
):
    settings.FETCH_PIPELINE = True
    settings.MAX_KEYS_PER_BATCH = 16  # several batches, so that stores overlap fetches
    make_fleet(70)
    assert not connection.in_atomic_block  # otherwise run_pass would not pipeline

    summary = run_pass("pipelined")

    served = {(h, p) for h, ps in simulator.simulator.served_payloads().items() for p in ps}
    stored = {
        (h, base64.b64encode(bytes(p)).decode())
        for h, p in LocationReport.objects.values_list("tracker__hashed_adv_key", "payload")
    }
    assert stored == served
    assert (summary.trackers, summary.batches, summary.new) == (70, 5, len(served))
    assert FetchAttempt.objects.count() == 5
    assert not Tracker.objects.filter(last_processed_at=None).exists()
    assert not Tracker.objects.filter(lease_until__isnull=False).exists()
