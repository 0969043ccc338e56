"""The fetch path under hostile or broken conditions: endpoints that may not receive an
account's tokens, impossible reports, a long-unfetched accessory, unexpected errors."""

from __future__ import annotations

import base64
import datetime as dt
import secrets

import pytest
from cryptography.fernet import Fernet
from django.db import connection
from django.utils import timezone
from findmy import FindMyAccessory

from findmy_sim.simulator import FindMySimulator, RollingKey, SimulatorThread
from locations.models import LocationReport
from monitoring.models import FailureRecord, FetchAttempt
from trackers.endpoints import EndpointNotAllowed, check_endpoint
from trackers.fetch import process_claim
from trackers.fields import fernet
from trackers.models import AccountStatus, AppleAccount, Tracker
from trackers.payloads import Fix
from trackers.queue import claim_work
from trackers.worker import run_pass

from ..factories import AppleAccountFactory, TrackerFactory

pytestmark = pytest.mark.django_db


# --- 1. endpoints -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "url",
    [
        "https://gateway.icloud.com/findmyservice/v2/fetch",
        "https://anisette.example.com:6969",
        "http://127.0.0.1:8765",
        "http://127.8.9.1/anisette",
        "http://[::1]:8765/",
        "http://localhost:6969",
    ],
)
def test_https_and_loopback_endpoints_are_allowed(url):
    assert check_endpoint(url) == url


@pytest.mark.parametrize(
    "url",
    [
        "http://evil.example.com/fetch",
        "http://10.0.0.5:6969",
        "http://0.0.0.0:8765",
        "ftp://127.0.0.1/",
        "https://user:secret@example.com/",
        "https:///nohost",
        "http://127.0.0.1:99999/",
    ],
)
def test_other_endpoints_are_refused(url):
    with pytest.raises(EndpointNotAllowed):
        check_endpoint(url)


def test_a_listed_host_may_be_plain_http(settings):
    settings.FINDMY_ALLOWED_ENDPOINT_HOSTS = ["anisette.lan"]
    assert check_endpoint("http://anisette.lan:6969")
    with pytest.raises(EndpointNotAllowed):
        check_endpoint("http://other.lan:6969")


def sneaky_url(simulator: SimulatorThread, path: str = "") -> str:
    # 0.0.0.0 reaches the simulator on 127.0.0.1 (Linux), but is not a loopback address:
    # without the check, findmy would send the account's tokens there.
    return f"http://0.0.0.0:{simulator.port}{path}"


@pytest.mark.parametrize("field", ["fetch_endpoint", "anisette_url"])
def test_an_account_edited_in_the_database_to_plain_http_sends_nothing(
    simulator, sim_account, make_fleet, field
):
    [(tracker, _)] = make_fleet(1)
    bad = sneaky_url(simulator, "/anisette" if field == "anisette_url" else "")
    AppleAccount.objects.filter(pk=sim_account.pk).update(**{field: bad})

    summary = run_pass("test")

    assert simulator.simulator.stats()["requests"] == 0
    assert summary.requests == 0
    failure = FailureRecord.objects.get(category="endpoint")
    assert "0.0.0.0" in failure.last_error  # noqa: S104 - a URL host, not a bind
    sim_account.refresh_from_db()
    assert (sim_account.status, sim_account.request_token) == (AccountStatus.DISABLED, None)
    tracker.refresh_from_db()
    assert (tracker.lease_until, tracker.consecutive_failures) == (None, 0)
    assert not FetchAttempt.objects.exists()


def test_an_allowed_host_is_fetched_from(simulator, sim_account, make_fleet, settings):
    # The positive control of the test above: the same URL, listed, does reach the network.
    settings.FINDMY_ALLOWED_ENDPOINT_HOSTS = ["0.0.0.0"]  # noqa: S104 - a URL host, not a bind
    make_fleet(1)
    AppleAccount.objects.filter(pk=sim_account.pk).update(fetch_endpoint=sneaky_url(simulator))

    summary = run_pass("test")

    assert (summary.requests, summary.failures) == (1, 0)
    assert simulator.simulator.stats()["requests"] == 1


# --- 4. impossible reports ----------------------------------------------------------------
def fix(when: dt.datetime, lat: float = 52.52, lon: float = 13.405) -> Fix:
    return Fix(timestamp=when, latitude=lat, longitude=lon, accuracy=10)


def test_impossible_reports_are_kept_as_failures_never_stored(simulator, sim_account, settings):
    settings.REPORT_CLOCK_TOLERANCE_SECONDS = 300
    [tracker] = [TrackerFactory()]
    key_json = tracker.key_material
    from findmy import KeyPair

    key = KeyPair.from_json(key_json)
    now = timezone.now().replace(microsecond=0)
    good = [fix(now - dt.timedelta(hours=2)), fix(now + dt.timedelta(seconds=60))]
    bad = [
        fix(now + dt.timedelta(days=2)),  # in the future
        fix(dt.datetime(2015, 6, 1, tzinfo=dt.UTC)),  # before Find My existed
        fix(now - dt.timedelta(hours=1), lat=95.0),  # off the globe
        fix(now - dt.timedelta(hours=1), lon=-190.0),
    ]
    sim = simulator.simulator
    good_payloads = set(sim.add_crafted(key.adv_key_bytes, good))
    bad_payloads = set(sim.add_crafted(key.adv_key_bytes, bad))

    summary = run_pass("test")

    stored = {bytes(p) for p in LocationReport.objects.values_list("payload", flat=True)}
    assert stored == good_payloads
    failures = FailureRecord.objects.filter(category="invalid_report")
    kept = {base64.b64decode(f.detail["payload_b64"]) for f in failures}
    assert kept == bad_payloads
    assert summary.failures == 4
    assert {f.tracker_id for f in failures} == {tracker.pk}
    future = failures.get(last_error__contains="future")
    assert future.detail["decoded"]["timestamp"] == (now + dt.timedelta(days=2)).isoformat()
    tracker.refresh_from_db()
    assert tracker.last_seen_at == now + dt.timedelta(seconds=60)  # never the future one


# --- 3. accessories catch up -------------------------------------------------------------
@pytest.fixture
def long_history_simulator():
    server = SimulatorThread(FindMySimulator(history_hours=24 * 5, anchored=True)).start()
    yield server
    server.stop()


def test_an_accessory_unfetched_for_three_days_gets_all_three_days(
    long_history_simulator, tmp_path
):
    simulator = long_history_simulator
    AppleAccountFactory(anisette_url=simulator.anisette_url, fetch_endpoint=simulator.fetch_url)
    accessory = FindMyAccessory(
        master_key=secrets.token_bytes(28),
        skn=secrets.token_bytes(32),
        sks=secrets.token_bytes(32),
        paired_at=timezone.now() - dt.timedelta(days=10),
        name="AirTag",
    )
    from trackers.keyfiles import entry_from_accessory

    tracker = entry_from_accessory(accessory, "AirTag").to_tracker()
    tracker.last_processed_at = timezone.now() - dt.timedelta(days=3)
    tracker.save()
    simulator.simulator.add_accessories([accessory])

    summary = run_pass("test")

    sim = simulator.simulator
    rolling_ids = {h for h, e in sim.trackers.items() if isinstance(e, RollingKey)}
    served = {
        base64.b64decode(p)
        for h, ps in sim.served_payloads().items()
        if h in rolling_ids
        for p in ps
    }
    reports = LocationReport.objects.filter(tracker=tracker)
    times = sorted(reports.values_list("timestamp", flat=True))
    assert {bytes(p) for p in reports.values_list("payload", flat=True)} == served
    # Every report the simulator holds for those 3 days (reports every 30 to 90 minutes).
    expected = set()
    start = (timezone.now() - dt.timedelta(days=3, hours=1)).timestamp()
    for entry in (e for e in sim.trackers.values() if isinstance(e, RollingKey)):
        expected.update(entry.payloads_between(start, timezone.now().timestamp()))
    missing = expected - {base64.b64encode(p).decode() for p in served}
    assert not missing
    assert times[0] <= timezone.now() - dt.timedelta(days=2, hours=23)
    assert summary.requests >= 5  # 3 days of 15-minute keys do not fit in one request
    assert sim.stats()["max_ids_per_request"] <= 64
    tracker.refresh_from_db()
    assert (tracker.window_top, tracker.window_next_index) == (None, None)
    assert tracker.last_processed_at > timezone.now() - dt.timedelta(minutes=5)


def test_a_partial_window_leaves_the_accessory_due(simulator, sim_account):
    accessory = FindMyAccessory(
        master_key=secrets.token_bytes(28),
        skn=secrets.token_bytes(32),
        sks=secrets.token_bytes(32),
        paired_at=timezone.now() - dt.timedelta(days=5),
        name="AirTag",
    )
    from trackers.keyfiles import entry_from_accessory

    tracker = entry_from_accessory(accessory, "AirTag").to_tracker()
    before = timezone.now() - dt.timedelta(days=2)
    tracker.last_processed_at = before
    tracker.save()
    simulator.simulator.add_accessories([accessory])

    claim = claim_work("test")
    result = process_claim(claim)

    tracker.refresh_from_db()
    assert result.outcome == "ok"
    assert tracker.last_processed_at == before  # not processed: its window is not complete
    assert tracker.window_top is not None
    newest = accessory.get_max_index(timezone.now())
    assert newest - 64 < tracker.window_next_index < newest - 50
    assert Tracker.objects.eligible().due().unleased().filter(pk=tracker.pk).exists()


# --- 5. the unexpected ---------------------------------------------------------------------
def write_with_another_key(model, pk: int, column: str, value: str) -> None:
    token = Fernet(Fernet.generate_key()).encrypt(value.encode()).decode()
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {model._meta.db_table} SET {column} = %s WHERE id = %s",  # noqa: S608
            [token, pk],
        )


def test_an_unreadable_account_state_is_recorded_and_the_batch_released(
    simulator, sim_account, make_fleet, settings
):
    settings.WORKER_ERROR_BACKOFF = 1
    fleet = make_fleet(3)
    write_with_another_key(AppleAccount, sim_account.pk, "state", "{}")

    summary = run_pass("test")

    assert summary.by_outcome == {"unexpected": 1}
    failure = FailureRecord.objects.get(category="unexpected")
    assert "Traceback" in failure.last_error
    assert "FIELD_ENCRYPTION_KEY" in failure.last_error
    assert sorted(failure.detail["trackers"]) == sorted(t.pk for t, _ in fleet)
    assert not Tracker.objects.filter(lease_until__isnull=False).exists()
    # (refresh_from_db would decrypt the state: read the lease column alone)
    account = AppleAccount.objects.filter(pk=sim_account.pk)
    assert account.values_list("request_token", flat=True).get() is None
    assert simulator.simulator.stats()["requests"] == 0


def test_unreadable_key_material_parks_only_that_tracker(simulator, sim_account, make_fleet):
    [(good, _), (bad, _)] = make_fleet(2)
    write_with_another_key(Tracker, bad.pk, "key_material", "{}")

    summary = run_pass("test")

    quarantined = Tracker.objects.filter(pk=bad.pk).values_list("quarantined_at", flat=True)
    assert quarantined.get() is not None
    assert FailureRecord.objects.get(tracker=bad).category == "invalid_key"
    assert LocationReport.objects.filter(tracker=good).exists()
    assert summary.by_outcome == {"ok": 1}
    assert fernet()  # the configured keys still work for everything else
