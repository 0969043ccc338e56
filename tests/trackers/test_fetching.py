"""End to end through the real findmy library against the local Find My simulator."""

from __future__ import annotations

import base64
import datetime as dt

import pytest
from django.core.management import call_command

from locations.models import LocationReport
from monitoring.models import FailureRecord, FetchAttempt
from trackers.fetch import process_claim
from trackers.models import AccountStatus, Tracker
from trackers.queue import claim_work
from trackers.worker import run_pass

pytestmark = pytest.mark.django_db


def stored_payloads() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for hashed_id, payload in LocationReport.objects.values_list(
        "tracker__hashed_adv_key", "payload"
    ):
        out.setdefault(hashed_id, set()).add(base64.b64encode(bytes(payload)).decode())
    return out


def test_fetch_stores_exactly_what_the_network_returned(simulator, sim_account, make_fleet):
    make_fleet(70)

    summary = run_pass("test")

    served = simulator.simulator.served_payloads()
    assert summary.trackers == 70
    assert summary.requests == 2  # 64 keys at most per request
    assert summary.new == sum(len(p) for p in served.values()) > 70
    assert stored_payloads() == served
    assert not Tracker.objects.filter(last_processed_at=None).exists()


def test_second_fetch_adds_nothing(simulator, sim_account, make_fleet):
    make_fleet(10)
    first = run_pass("test")
    Tracker.objects.update(last_processed_at=None)

    second = run_pass("test")

    assert second.new == 0
    assert second.duplicates == first.new
    assert LocationReport.objects.count() == first.new


def test_requests_never_exceed_64_keys(simulator, sim_account, make_fleet, settings):
    make_fleet(130)
    summary = run_pass("test")
    assert summary.requests == 3
    assert sorted(FetchAttempt.objects.values_list("trackers", flat=True)) == [2, 64, 64]


def test_last_seen_is_the_newest_report(simulator, sim_account, make_fleet):
    [(tracker, _)] = make_fleet(1)
    run_pass("test")
    tracker.refresh_from_db()
    newest = LocationReport.objects.filter(tracker=tracker).order_by("-timestamp").first()
    assert tracker.last_seen_at == newest.timestamp
    assert tracker.last_position == newest.point


def test_older_report_does_not_move_last_seen(simulator, sim_account, make_fleet):
    [(tracker, _)] = make_fleet(1)
    future = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)
    Tracker.objects.filter(pk=tracker.pk).update(last_seen_at=future)
    run_pass("test")
    tracker.refresh_from_db()
    assert tracker.last_seen_at == future
    assert LocationReport.objects.filter(tracker=tracker).exists()


def test_account_state_is_saved_after_use(simulator, sim_account, make_fleet):
    make_fleet(1)
    before = sim_account.state
    run_pass("test")
    sim_account.refresh_from_db()
    assert sim_account.state["login"] == before["login"]
    assert sim_account.last_request_at is not None
    assert sim_account.requests_total == 1


@pytest.mark.parametrize(
    ("fault", "category", "status"),
    [
        ("401", "auth", AccountStatus.NEEDS_LOGIN),
        ("429", "rate_limited", AccountStatus.BACKING_OFF),
        ("500", "upstream", AccountStatus.ACTIVE),
        ("503", "upstream", AccountStatus.ACTIVE),
        ("bad_status", "upstream", AccountStatus.ACTIVE),
        ("slow", "timeout", AccountStatus.ACTIVE),
        ("empty", "empty", AccountStatus.ACTIVE),
    ],
)
def test_fault_is_recorded_and_classified_without_partial_write(
    simulator, sim_account, make_fleet, fault, category, status
):
    make_fleet(3)
    simulator.simulator.set_fault(fault)

    result = process_claim(claim_work("test"))

    assert result.outcome == category
    record = FailureRecord.objects.get(fingerprint=f"account:{sim_account.pk}")
    assert record.category == category
    assert record.account == sim_account
    assert not LocationReport.objects.exists()
    # Released, not processed: the next claim takes these trackers again.
    assert not Tracker.objects.exclude(last_processed_at=None).exists()
    assert not Tracker.objects.exclude(lease_until=None).exists()
    sim_account.refresh_from_db()
    assert sim_account.status == status
    assert sim_account.request_token is None
    assert FetchAttempt.objects.get().outcome == category


@pytest.mark.parametrize("fault", ["undecryptable", "truncated"])
def test_bad_payload_is_kept_as_a_failure_and_the_rest_is_stored(
    simulator, sim_account, make_fleet, fault
):
    make_fleet(2)
    simulator.simulator.set_fault(fault)

    result = process_claim(claim_work("test"))

    served = sum(len(p) for p in simulator.simulator.served_payloads().values())
    category = "decrypt" if fault == "undecryptable" else "invalid_payload"
    records = FailureRecord.objects.filter(category=category)
    assert result.outcome == "ok"
    assert records.count() == 2  # the first payload of each tracker was spoiled
    assert LocationReport.objects.count() == served - 2
    kept = {base64.b64decode(r.detail["payload_b64"]) for r in records}
    assert {len(p) for p in kept} <= ({88, 89} if fault == "undecryptable" else {40})
    assert not Tracker.objects.filter(last_processed_at=None).exists()


def test_transient_fault_recovers_within_the_retry_budget(
    simulator, sim_account, make_fleet, settings
):
    settings.FETCH_RETRY_MAX_WAIT = 30
    make_fleet(2)
    simulator.simulator.set_fault("503", count=1)

    result = process_claim(claim_work("test"))

    assert result.outcome == "ok"
    assert result.requests == 2
    assert LocationReport.objects.exists()


def test_retry_waits_for_the_account_interval(simulator, sim_account, make_fleet, settings):
    settings.FETCH_RETRY_MAX_WAIT = 30
    settings.ACCOUNT_MIN_REQUEST_INTERVAL = 300  # a retry would have to wait 5 minutes
    make_fleet(2)
    simulator.simulator.set_fault("503", count=1)

    result = process_claim(claim_work("test"))

    assert result.outcome == "upstream"
    assert simulator.simulator.stats()["requests"] == 1


# The command's heartbeat thread writes through its own connection, outside the test's
# transaction: commit and flush instead, so no instance row leaks into later tests.
@pytest.mark.django_db(transaction=True)
def test_fetch_trackers_once_prints_a_summary(simulator, sim_account, make_fleet, capsys):
    make_fleet(3)
    call_command("fetch_trackers", "--once")
    out = capsys.readouterr().out
    new = LocationReport.objects.count()
    assert f"trackers=3 requests=1 new_reports={new} duplicate_reports=0 failures=0" in out


def test_fetch_trackers_without_account_is_an_error(db):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="add_apple_account"):
        call_command("fetch_trackers", "--once")


def test_unusable_key_material_is_recorded_not_a_crash(simulator, sim_account, make_fleet):
    [(broken, _), (fine, _)] = make_fleet(2)
    Tracker.objects.filter(pk=broken.pk).update(key_material={"type": "keypair"})

    result = process_claim(claim_work("test"))

    assert result.outcome == "ok"
    assert FailureRecord.objects.filter(category="invalid_key", tracker=broken).exists()
    assert not LocationReport.objects.filter(tracker=broken).exists()
    assert LocationReport.objects.filter(tracker=fine).exists()
