"""Rolling-key accessories (AirTags) end to end: key windows, batching, alignment, bad keys."""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
from pathlib import Path

import pytest
from django.core.management import call_command
from django.utils import timezone
from findmy import FindMyAccessory
from findmy.keys import KeyPairType

from findmy_sim.simulator import ACCESSORY_INTERVAL, RollingKey
from locations.models import LocationReport
from monitoring.models import FailureRecord, FetchAttempt
from trackers import rolling
from trackers.models import Tracker, TrackerKind
from trackers.worker import run_pass

pytestmark = pytest.mark.django_db


def new_accessory(paired_days_ago: float = 3) -> FindMyAccessory:
    return FindMyAccessory(
        master_key=secrets.token_bytes(28),
        skn=secrets.token_bytes(32),
        sks=secrets.token_bytes(32),
        paired_at=timezone.now() - dt.timedelta(days=paired_days_ago),
        name="AirTag",
    )


def import_accessories(tmp_path: Path, simulator, accessories: list[FindMyAccessory]):
    """Through the real import command, and known to the simulator."""
    path = tmp_path / "accessories.json"
    path.write_text(json.dumps([a.to_json() for a in accessories]))
    call_command("import_trackers", str(path))
    simulator.simulator.add_accessories(accessories)
    return list(Tracker.objects.filter(kind=TrackerKind.ACCESSORY).order_by("id"))


def served_for(simulator, tracker: Tracker) -> set[bytes]:
    """Every payload the simulator handed out under any rolling key of this accessory."""
    sim = simulator.simulator
    mine = {
        hashed_id
        for hashed_id, entry in sim.trackers.items()
        if isinstance(entry, RollingKey) and entry.accessory.seed == tracker.hashed_adv_key
    }
    return {
        base64.b64decode(p)
        for hashed_id, ps in sim.served_payloads().items()
        if hashed_id in mine
        for p in ps
    }


def stored_for(tracker: Tracker) -> set[bytes]:
    return {
        bytes(p)
        for p in LocationReport.objects.filter(tracker=tracker).values_list("payload", flat=True)
    }


# --- which keys are asked for -----------------------------------------------------------
def test_a_new_accessory_asks_for_its_newest_keys_within_the_budget():
    accessory = new_accessory()
    now = timezone.now()
    plan = rolling.plan_keys(accessory, None, now, budget=64)
    newest = accessory.get_max_index(now)
    indices = {index for _, index in plan.keys.values()}
    assert 60 <= len(plan) <= 64
    assert newest in indices  # the current key is always asked for
    assert min(indices) > newest - 64  # newest first: the oldest are left out
    assert len(plan.secondary) >= 1
    assert all(k.key_type == KeyPairType.PRIMARY for k, _ in map(plan.keys.get, plan.primary))


def test_a_recently_fetched_accessory_asks_only_since_then_with_an_overlap():
    accessory = new_accessory()
    now = timezone.now()
    plan = rolling.plan_keys(accessory, now - dt.timedelta(minutes=30), now, budget=64)
    # 30 minutes since the last fetch, the hour of overlap, the drift margin: 8 or 9 keys.
    assert 8 <= len(plan.primary) <= 9
    assert rolling.estimated_keys(now - dt.timedelta(minutes=30), now, 64) >= len(plan)


@pytest.mark.parametrize("budget", [1, 2, 5])
def test_a_small_budget_still_asks_for_the_current_key(budget):
    accessory = new_accessory()
    now = timezone.now()
    plan = rolling.plan_keys(accessory, None, now, budget=budget)
    current = rolling.primary_key(accessory, accessory.get_max_index(now)).hashed_adv_key_b64
    assert len(plan) == budget
    assert plan.primary[0] == current


def test_the_estimate_never_exceeds_a_request():
    now = timezone.now()
    assert rolling.estimated_keys(None, now, 64) == 64
    assert rolling.estimated_keys(now - dt.timedelta(days=3), now, 64) == 64


# --- fetching ---------------------------------------------------------------------------
def test_accessory_reports_are_fetched_decrypted_and_stored(simulator, sim_account, tmp_path):
    [tracker] = import_accessories(tmp_path, simulator, [new_accessory()])

    summary = run_pass("test")

    stored = stored_for(tracker)
    # Never fetched, paired 3 days ago: every index since pairing, newest first, 64 a request.
    assert summary.requests == 5
    assert simulator.simulator.stats()["max_ids_per_request"] <= 64
    assert len(stored) >= 16  # the simulator's 24 hours of a report every 30 to 90 minutes
    assert stored == served_for(simulator, tracker)
    times = LocationReport.objects.filter(tracker=tracker).values_list("timestamp", flat=True)
    assert max(times) - min(times) > dt.timedelta(hours=20)
    tracker.refresh_from_db()
    assert tracker.last_seen_at == max(times)


def test_alignment_is_saved_after_a_fetch(simulator, sim_account, tmp_path):
    accessory = new_accessory()
    [tracker] = import_accessories(tmp_path, simulator, [accessory])

    run_pass("test")

    tracker.refresh_from_db()
    saved = FindMyAccessory.from_json(tracker.key_material)
    newest = LocationReport.objects.filter(tracker=tracker).order_by("-timestamp").first()
    expected_index = int(
        (newest.timestamp - accessory.paired_at).total_seconds() // ACCESSORY_INTERVAL
    )
    assert tracker.key_material["alignment_index"] == expected_index
    assert saved.get_max_index(newest.timestamp) == expected_index
    assert saved.master_key == accessory.master_key  # the secret itself is unchanged


def test_a_second_fetch_adds_nothing_and_asks_for_few_keys(
    simulator, sim_account, tmp_path, settings
):
    settings.FETCH_INTERVAL = 600
    [tracker] = import_accessories(tmp_path, simulator, [new_accessory()])
    first = run_pass("test")
    requests_before = simulator.simulator.stats()["requests"]
    simulator.simulator.max_ids_per_request = 0
    Tracker.objects.update(last_processed_at=timezone.now() - dt.timedelta(minutes=20))

    second = run_pass("test", wait_for_accounts=False)

    assert first.new > 0
    assert (second.new, second.requests) == (0, 1)
    assert simulator.simulator.stats()["requests"] == requests_before + 1
    assert simulator.simulator.stats()["max_ids_per_request"] <= 12
    assert LocationReport.objects.filter(tracker=tracker).count() == first.new


def test_accessories_share_a_request_with_static_keys(simulator, sim_account, make_fleet, tmp_path):
    make_fleet(50)
    accessories = import_accessories(tmp_path, simulator, [new_accessory(), new_accessory()])
    Tracker.objects.filter(kind=TrackerKind.ACCESSORY).update(
        last_processed_at=timezone.now() - dt.timedelta(hours=2)
    )
    Tracker.objects.update(last_processed_at=timezone.now() - dt.timedelta(hours=2))

    summary = run_pass("test")

    # 50 static keys + 2 x (about 12 keys for 3 hours) = more than one request, never > 64.
    assert summary.trackers == 52
    assert summary.requests == 2
    assert simulator.simulator.stats()["max_ids_per_request"] <= 64
    for tracker in accessories:
        assert stored_for(tracker) == served_for(simulator, tracker) != set()


def test_unusable_accessory_key_material_is_quarantined_not_fatal(
    simulator, sim_account, make_fleet, tmp_path
):
    [(good, _)] = make_fleet(1)
    [bad] = import_accessories(tmp_path, simulator, [new_accessory()])
    material = dict(bad.key_material, master_key="00")  # no longer a 28-byte key
    Tracker.objects.filter(pk=bad.pk).update(key_material=material)

    summary = run_pass("test")

    bad.refresh_from_db()
    assert bad.quarantined_at is not None
    assert bad.lease_until is None
    failure = FailureRecord.objects.get(tracker=bad)
    assert failure.category == "invalid_key"
    assert LocationReport.objects.filter(tracker=good).exists()
    assert summary.failures == 1


def test_a_batch_of_only_unusable_keys_sends_no_request(simulator, sim_account, tmp_path):
    [bad] = import_accessories(tmp_path, simulator, [new_accessory()])
    Tracker.objects.filter(pk=bad.pk).update(key_material={"type": "accessory"})

    run_pass("test")

    bad.refresh_from_db()
    assert bad.quarantined_at is not None
    assert simulator.simulator.stats()["requests"] == 0
    assert not FetchAttempt.objects.exists()
    sim_account.refresh_from_db()
    assert sim_account.request_token is None  # the account is free again
