"""Claiming: fairness, eligibility, leases, account limits, breakers and quarantine."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from django.db import connection, transaction
from django.utils import timezone

from monitoring.models import FailureRecord
from trackers.fetch import finish, process_claim
from trackers.models import AccountStatus, AppleAccount, Tracker
from trackers.queue import claim_work, release
from trackers.worker import run_pass

from ..factories import AppleAccountFactory, ProductionRunFactory, TrackerFactory

pytestmark = pytest.mark.django_db

HOUR = dt.timedelta(hours=1)


def ago(**kwargs: float) -> dt.datetime:
    return timezone.now() - dt.timedelta(**kwargs)


def test_most_starved_trackers_are_claimed_first(sim_account):
    recent = TrackerFactory(last_processed_at=ago(hours=2))
    oldest = TrackerFactory(last_processed_at=ago(days=3))
    never = TrackerFactory(last_processed_at=None)
    claim = claim_work("w", max_keys=2)
    assert [t.id for t in claim.trackers] == [never.id, oldest.id]
    assert recent.id not in {t.id for t in claim.trackers}


def test_only_due_eligible_trackers_are_claimed(sim_account, settings):
    settings.FETCH_INTERVAL = 3600
    due = TrackerFactory(last_processed_at=ago(hours=2))
    TrackerFactory(last_processed_at=ago(minutes=10))  # rested too little
    TrackerFactory(is_active=False)
    TrackerFactory(quarantined_at=timezone.now())
    TrackerFactory(production_run=ProductionRunFactory(starts_at=timezone.now() + HOUR))
    TrackerFactory(production_run=ProductionRunFactory(starts_at=ago(days=9), ends_at=ago(days=1)))
    running = TrackerFactory(production_run=ProductionRunFactory(starts_at=ago(days=1)))
    claim = claim_work("w")
    assert {t.id for t in claim.trackers} == {due.id, running.id}


def test_edits_take_effect_on_the_next_claim(sim_account):
    tracker = TrackerFactory(is_active=False)
    assert claim_work("w") is None
    Tracker.objects.filter(pk=tracker.pk).update(is_active=True)
    assert [t.id for t in claim_work("w").trackers] == [tracker.id]


def test_a_claim_is_a_lease(sim_account, settings):
    settings.PROCESSING_TIMEOUT = 300
    tracker = TrackerFactory()
    claim = claim_work("worker-a")
    tracker.refresh_from_db()
    assert tracker.claimed_by == "worker-a"
    assert tracker.claim_token == claim.token
    assert tracker.lease_until > timezone.now() + dt.timedelta(seconds=290)


def test_leased_trackers_are_not_claimed_again(sim_account):
    AppleAccountFactory()  # a second account that may send
    TrackerFactory.create_batch(3)
    first = claim_work("a")
    assert claim_work("b") is None
    release(first)
    assert len(claim_work("b").trackers) == 3


def test_expired_lease_is_reclaimed(sim_account):
    TrackerFactory.create_batch(2)
    dead = claim_work("dead-worker")
    Tracker.objects.update(lease_until=ago(seconds=1))
    AppleAccount.objects.update(request_lease_until=ago(seconds=1))
    again = claim_work("new-worker")
    assert {t.id for t in again.trackers} == {t.id for t in dead.trackers}
    assert again.token != dead.token


def test_worker_that_lost_its_lease_cannot_finish(sim_account):
    TrackerFactory.create_batch(2)
    dead = claim_work("slow-worker")
    Tracker.objects.update(lease_until=ago(seconds=1))
    AppleAccount.objects.update(request_lease_until=ago(seconds=1))
    claim_work("new-worker")

    dead.load_secrets()
    assert finish(dead, dead.account_state) == 0
    assert not Tracker.objects.exclude(last_processed_at=None).exists()
    assert set(Tracker.objects.values_list("claimed_by", flat=True)) == {"new-worker"}


def test_locked_rows_are_skipped_not_waited_for(transactional_db, sim_account):
    locked, free = TrackerFactory(), TrackerFactory()
    holding, done = threading.Event(), threading.Event()

    def hold_lock() -> None:
        with transaction.atomic():
            list(Tracker.objects.select_for_update().filter(pk=locked.pk))
            holding.set()
            done.wait(10)
        connection.close()

    thread = threading.Thread(target=hold_lock)
    thread.start()
    try:
        assert holding.wait(10)
        claim = claim_work("w")
    finally:
        done.set()
        thread.join()
    assert [t.id for t in claim.trackers] == [free.id]


def test_one_request_per_account_at_a_time(sim_account):
    TrackerFactory.create_batch(70)
    first = claim_work("a")
    assert claim_work("b") is None  # the only account has a request in flight
    release(first)
    assert claim_work("b") is not None


def test_minimum_interval_between_requests_of_an_account(
    simulator, sim_account, make_fleet, settings
):
    settings.ACCOUNT_MIN_REQUEST_INTERVAL = 300
    make_fleet(70)
    process_claim(claim_work("w"))
    assert claim_work("w") is None  # 6 trackers still due, but the account must rest
    second = AppleAccountFactory(
        anisette_url=simulator.anisette_url, fetch_endpoint=simulator.fetch_url
    )
    claim = claim_work("w")
    assert claim.account_id == second.id
    assert len(claim.trackers) == 6


def test_breaker_opens_on_repeated_upstream_errors_and_closes_on_recovery(
    simulator, sim_account, make_fleet, settings
):
    settings.BREAKER_FAILURE_THRESHOLD = 3
    settings.BREAKER_COOLDOWN = 600
    make_fleet(2)
    simulator.simulator.set_fault("503")
    for _ in range(3):
        process_claim(claim_work("w"))
    sim_account.refresh_from_db()
    assert sim_account.status == AccountStatus.BACKING_OFF
    assert sim_account.breaker_state == "open"
    assert sim_account.backoff_until > timezone.now() + dt.timedelta(seconds=590)
    assert claim_work("w") is None  # the circuit is open for every worker

    simulator.simulator.set_fault("none")
    AppleAccount.objects.update(backoff_until=ago(seconds=1))  # the cool-down has passed
    assert sim_account.__class__.objects.get().breaker_state == "half-open"
    assert process_claim(claim_work("w")).outcome == "ok"
    sim_account.refresh_from_db()
    assert sim_account.status == AccountStatus.ACTIVE
    assert sim_account.consecutive_failures == 0


def test_half_open_failure_doubles_the_cooldown(simulator, sim_account, make_fleet, settings):
    settings.BREAKER_FAILURE_THRESHOLD = 1
    settings.BREAKER_COOLDOWN = 100
    make_fleet(1)
    simulator.simulator.set_fault("500")
    process_claim(claim_work("w"))
    AppleAccount.objects.update(backoff_until=ago(seconds=1))
    process_claim(claim_work("w"))
    sim_account.refresh_from_db()
    remaining = (sim_account.backoff_until - timezone.now()).total_seconds()
    assert 190 < remaining <= 200


def test_auth_failure_parks_the_account(simulator, sim_account, make_fleet):
    make_fleet(2)
    simulator.simulator.set_fault("401")
    process_claim(claim_work("w"))
    simulator.simulator.set_fault("none")
    assert claim_work("w") is None
    sim_account.refresh_from_db()
    assert sim_account.status == AccountStatus.NEEDS_LOGIN
    assert simulator.simulator.stats()["requests"] == 1


def test_poison_tracker_is_quarantined_without_holding_back_the_rest(
    simulator, sim_account, make_fleet, settings
):
    settings.QUARANTINE_AFTER = 3
    settings.BREAKER_FAILURE_THRESHOLD = 1000  # keep the account out of this test
    fleet = make_fleet(12)
    poison = fleet[5][0]
    simulator.simulator.set_fault("poison", ids=[poison.hashed_adv_key])

    for _ in range(12):
        run_pass("w")

    poison.refresh_from_db()
    assert poison.quarantined_at is not None
    healthy = Tracker.objects.exclude(pk=poison.pk)
    assert not healthy.filter(last_processed_at=None).exists()
    assert not healthy.filter(quarantined_at__isnull=False).exists()
    assert all(t.reports.exists() for t in healthy)
    assert FailureRecord.objects.filter(fingerprint=f"tracker:{poison.pk}").exists()


def test_a_pass_waits_for_a_dead_workers_lease_and_takes_its_trackers(
    simulator, sim_account, make_fleet, settings
):
    make_fleet(4)
    dead = claim_work("dead-worker", max_keys=2)  # never processed: the worker died
    Tracker.objects.filter(claim_token=dead.token).update(
        lease_until=timezone.now() + dt.timedelta(seconds=2)
    )
    AppleAccount.objects.update(request_lease_until=None, request_token=None)

    summary = run_pass("survivor")

    assert summary.trackers == 4
    assert not Tracker.objects.filter(last_processed_at=None).exists()
    assert set(Tracker.objects.values_list("claimed_by", flat=True)) == {""}
