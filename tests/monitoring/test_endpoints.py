"""/status/queue, /status/worker, /metrics and the staff-only fetch control endpoints."""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from findmy_sim.simulator import SimulatorThread
from locations.models import LocationReport
from monitoring.attempts import log_attempt
from monitoring.failures import record_failure
from monitoring.models import FetchAttempt, ServiceInstance
from trackers.api.views import NOTHING_TO_FETCH
from trackers.models import AccountStatus, AppleAccount, Tracker

from ..factories import AppleAccountFactory, ProductionRunFactory, TrackerFactory, UserFactory

pytestmark = pytest.mark.django_db

CONTROL_URLS = ["/fetch/batch", "/fetch/tracker/1", "/queue/initialize"]


def ago(**kwargs: float) -> dt.datetime:
    return timezone.now() - dt.timedelta(**kwargs)


def instance(name: str, beat: dt.datetime, **fields: Any) -> ServiceInstance:
    return ServiceInstance.objects.create(
        service_name="fetch_trackers",
        instance_id=name,
        hostname="host-a",
        pid=4242,
        started_at=beat - dt.timedelta(hours=1),
        last_heartbeat=beat,
        heartbeat_count=7,
        **fields,
    )


def attempt(
    account: AppleAccount,
    outcome: str,
    seconds: float,
    new: int = 0,
    dup: int = 0,
    started: dt.datetime | None = None,
):
    started = started or ago(minutes=5)
    return log_attempt(
        account_id=account.pk,
        worker="w",
        started_at=started,
        finished_at=started + dt.timedelta(seconds=seconds),
        trackers=3,
        outcome=outcome,
        new_reports=new,
        duplicate_reports=dup,
    )


def scrape(client: Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics by (name, sorted labels)."""
    response = client.get("/metrics")
    assert response.status_code == 200
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


@pytest.fixture
def staff(client: Client) -> Client:
    client.force_login(UserFactory(is_staff=True))
    return client


# --- /status/queue ----------------------------------------------------------------------
@pytest.fixture
def known_fleet() -> None:
    """5 eligible (2 never processed, 1 fresh, 1 two hours old, 1 leased), 3 not eligible."""
    AppleAccountFactory()
    TrackerFactory.create_batch(2)
    TrackerFactory(last_processed_at=ago(minutes=1))
    TrackerFactory(last_processed_at=ago(hours=2))
    TrackerFactory(
        last_processed_at=ago(minutes=1),
        claimed_by="worker:x:1",
        claim_token=uuid.uuid4(),
        lease_until=ago(minutes=-5),
    )
    TrackerFactory(quarantined_at=ago(hours=1))
    TrackerFactory(is_active=False)
    TrackerFactory(production_run=ProductionRunFactory(starts_at=ago(days=-1)))


def test_queue_status_counts_a_known_fleet(client: Client, known_fleet: None) -> None:
    body = client.get("/status/queue").json()
    counts = {k: body[k] for k in ("eligible", "due", "leased", "quarantined", "never_processed")}
    assert counts == {"eligible": 5, "due": 3, "leased": 1, "quarantined": 1, "never_processed": 2}


def test_queue_status_reports_the_oldest_processed_tracker(
    client: Client, known_fleet: None
) -> None:
    body = client.get("/status/queue").json()
    assert 7100 < body["oldest_processed_age_seconds"] < 7300
    oldest = dt.datetime.fromisoformat(body["oldest_processed_at"])
    assert abs((oldest - ago(hours=2)).total_seconds()) < 60


def test_queue_status_computes_cycle_capacity(client: Client, settings: Any) -> None:
    settings.ACCOUNT_MIN_REQUEST_INTERVAL = 300
    settings.FETCH_CYCLE_HOURS = 12
    AppleAccountFactory.create_batch(2)
    AppleAccountFactory(status=AccountStatus.NEEDS_LOGIN)
    TrackerFactory()
    body = client.get("/status/queue").json()
    # 2 usable accounts x 64 keys x (12 h / 300 s = 144 requests).
    assert (body["accounts_usable"], body["cycle_capacity"]) == (2, 18432)
    assert (body["capacity_ok"], body["fetch_cycle_hours"]) == (True, 12)


def test_queue_status_flags_a_fleet_beyond_capacity(client: Client, settings: Any) -> None:
    settings.ACCOUNT_MIN_REQUEST_INTERVAL = 12 * 3600
    settings.MAX_KEYS_PER_BATCH = 1
    AppleAccountFactory()
    TrackerFactory.create_batch(2)
    body = client.get("/status/queue").json()
    assert (body["cycle_capacity"], body["eligible"], body["capacity_ok"]) == (1, 2, False)


# --- /status/worker ---------------------------------------------------------------------
def test_worker_status_reports_liveness(client: Client) -> None:
    instance("alive", ago(seconds=10))
    instance("stale", ago(seconds=120))
    instance("dead", ago(minutes=10))
    instance("stopped", ago(seconds=10), stopped_at=ago(seconds=5))
    body = client.get("/status/worker").json()
    liveness = {i["instance_id"]: i["liveness"] for i in body["instances"]}
    assert liveness == {"alive": "alive", "stale": "stale", "dead": "dead", "stopped": "dead"}
    assert body["counts"] == {"alive": 1, "stale": 1, "dead": 2}


def test_worker_status_shows_heartbeat_figures(client: Client) -> None:
    payload = {"instance_id": "w1", "memory_usage_mb": 52.5, "queue_size": 9}
    instance("w1", ago(seconds=10), payload=payload)
    (shown,) = client.get("/status/worker").json()["instances"]
    assert shown["figures"] == {"memory_usage_mb": 52.5, "queue_size": 9}
    assert (shown["hostname"], shown["pid"], shown["heartbeat_count"]) == ("host-a", 4242, 7)


def test_worker_status_forgets_instances_silent_for_a_day(client: Client) -> None:
    instance("old", ago(days=2))
    body = client.get("/status/worker").json()
    assert (body["instances"], body["counts"]["dead"]) == ([], 0)


# --- /metrics ---------------------------------------------------------------------------
@pytest.fixture
def attempts() -> AppleAccount:
    account = AppleAccountFactory(name="main")
    attempt(account, "ok", 0.2, new=5, dup=1)
    attempt(account, "ok", 0.7, new=2)
    attempt(account, "ok", 3, dup=4)
    attempt(account, "auth", 40)
    return account


def test_metrics_count_fetch_requests_by_outcome(client: Client, attempts: AppleAccount) -> None:
    samples = scrape(client)
    outcome = "trackerfleet_fetch_requests_total"
    assert samples[(outcome, (("outcome", "ok"),))] == 3
    assert samples[(outcome, (("outcome", "auth"),))] == 1
    assert samples[(outcome, (("outcome", "rate_limited"),))] == 0


def test_metrics_count_reports(client: Client, attempts: AppleAccount) -> None:
    samples = scrape(client)
    assert samples[("trackerfleet_reports_ingested_total", ())] == 7
    assert samples[("trackerfleet_reports_duplicate_total", ())] == 5


def test_metrics_histogram_of_batch_durations(client: Client, attempts: AppleAccount) -> None:
    samples = scrape(client)
    buckets = {
        dict(labels)["le"]: value
        for (name, labels), value in samples.items()
        if name == "trackerfleet_batch_duration_seconds_bucket"
    }
    assert (buckets["0.1"], buckets["0.25"], buckets["1.0"], buckets["5.0"]) == (0, 1, 2, 3)
    assert (buckets["30.0"], buckets["60.0"], buckets["+Inf"]) == (3, 4, 4)
    assert samples[("trackerfleet_batch_duration_seconds_count", ())] == 4
    assert samples[("trackerfleet_batch_duration_seconds_sum", ())] == pytest.approx(43.9)


def test_metrics_gauge_the_queue(client: Client, known_fleet: None) -> None:
    samples = scrape(client)
    assert samples[("trackerfleet_due_trackers", ())] == 3
    assert samples[("trackerfleet_trackers", (("state", "eligible"),))] == 5
    assert samples[("trackerfleet_trackers", (("state", "leased"),))] == 1
    assert samples[("trackerfleet_trackers", (("state", "quarantined"),))] == 1
    assert 7100 < samples[("trackerfleet_oldest_processed_age_seconds", ())] < 7300


def test_metrics_show_each_accounts_breaker_state(client: Client) -> None:
    AppleAccountFactory(name="a-closed")
    AppleAccountFactory(name="b-open", status="backing_off", backoff_until=ago(minutes=-5))
    AppleAccountFactory(name="c-half", status="backing_off", backoff_until=ago(minutes=5))
    AppleAccountFactory(name="d-locked", status=AccountStatus.NEEDS_LOGIN)
    samples = scrape(client)
    current = {
        dict(labels)["account"]: dict(labels)["state"]
        for (name, labels), value in samples.items()
        if name == "trackerfleet_account_breaker_state" and value == 1
    }
    assert current == {
        "a-closed": "closed",
        "b-open": "open",
        "c-half": "half-open",
        "d-locked": "locked",
    }


def test_metrics_count_open_failures_and_workers(client: Client) -> None:
    record_failure("upstream", "500", fingerprint="account:1")
    instance("alive", ago(seconds=10))
    instance("dead", ago(minutes=10))
    samples = scrape(client)
    assert samples[("trackerfleet_failures_open", (("category", "upstream"),))] == 1
    assert samples[("trackerfleet_failures_open", (("category", "auth"),))] == 0
    assert samples[("trackerfleet_workers", (("liveness", "alive"),))] == 1
    assert samples[("trackerfleet_workers", (("liveness", "dead"),))] == 1


def test_metrics_use_the_prometheus_text_format(client: Client) -> None:
    response = client.get("/metrics")
    assert response["Content-Type"] == CONTENT_TYPE_LATEST


# --- control: authentication and validation ---------------------------------------------
@pytest.mark.parametrize("url", CONTROL_URLS)
def test_control_needs_credentials(client: Client, url: str) -> None:
    response = client.post(url)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Basic")
    assert "credentials" in response.json()["detail"]


@pytest.mark.parametrize("url", CONTROL_URLS)
def test_control_is_for_staff_only(client: Client, url: str) -> None:
    client.force_login(UserFactory(is_staff=False))
    response = client.post(url)
    assert (response.status_code, "detail" in response.json()) == (403, True)


def test_control_accepts_basic_auth(client: Client) -> None:
    UserFactory(username="ops", is_staff=True)
    token = base64.b64encode(b"ops:correct horse battery staple").decode()
    response = client.post("/queue/initialize", HTTP_AUTHORIZATION=f"Basic {token}")
    assert response.status_code == 200


def test_control_rejects_get(staff: Client) -> None:
    response = staff.get("/fetch/batch")
    assert (response.status_code, "detail" in response.json()) == (405, True)


@pytest.mark.parametrize("max_keys", [0, 65, "many", None])
def test_fetch_batch_rejects_a_bad_max_keys(staff: Client, max_keys: object) -> None:
    response = staff.post("/fetch/batch", {"max_keys": max_keys}, content_type="application/json")
    assert response.status_code == 400
    assert list(response.json()) == ["max_keys"]


def test_fetch_batch_rejects_malformed_json(staff: Client) -> None:
    response = staff.post("/fetch/batch", "{", content_type="application/json")
    assert (response.status_code, "JSON" in response.json()["detail"]) == (400, True)


def test_fetch_batch_without_due_trackers_is_a_conflict(staff: Client) -> None:
    AppleAccountFactory()
    TrackerFactory(last_processed_at=ago(minutes=1))
    response = staff.post("/fetch/batch")
    assert (response.status_code, response.json()) == (409, {"detail": NOTHING_TO_FETCH})


def test_fetch_batch_without_a_ready_account_is_a_conflict(staff: Client) -> None:
    AppleAccountFactory(status=AccountStatus.NEEDS_LOGIN)
    tracker = TrackerFactory()
    response = staff.post("/fetch/batch")
    assert response.status_code == 409
    tracker.refresh_from_db()
    assert tracker.lease_until is None


def test_fetch_unknown_tracker_is_not_found(staff: Client) -> None:
    response = staff.post("/fetch/tracker/999999")
    assert (response.status_code, "detail" in response.json()) == (404, True)


def test_fetch_tracker_with_a_non_integer_id_is_not_found(staff: Client) -> None:
    response = staff.post("/fetch/tracker/abc")
    assert (response.status_code, response.json()) == (404, {"detail": "Not found."})


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"quarantined_at": dt.datetime(2025, 1, 1, tzinfo=dt.UTC)}, "quarantined"),
        ({"is_active": False}, "inactive"),
        ({"claim_token": uuid.uuid4(), "claimed_by": "worker:b:7"}, "leased by worker:b:7"),
    ],
)
def test_fetch_tracker_that_cannot_be_fetched_says_why(
    staff: Client, fields: dict[str, Any], reason: str
) -> None:
    AppleAccountFactory()
    if "claim_token" in fields:
        fields = {**fields, "lease_until": ago(minutes=-5)}
    tracker = TrackerFactory(**fields)
    response = staff.post(f"/fetch/tracker/{tracker.pk}")
    assert response.status_code == 409
    assert reason in response.json()["detail"]


def test_fetch_tracker_outside_its_production_run_says_why(staff: Client) -> None:
    run = ProductionRunFactory(name="2030 batch", starts_at=ago(days=-30))
    tracker = TrackerFactory(production_run=run)
    response = staff.post(f"/fetch/tracker/{tracker.pk}")
    assert response.status_code == 409
    assert "outside its production run '2030 batch'" in response.json()["detail"]


def test_fetch_tracker_without_a_ready_account_changes_nothing(staff: Client) -> None:
    AppleAccountFactory(status=AccountStatus.DISABLED)
    processed = ago(minutes=1)
    tracker = TrackerFactory(last_processed_at=processed)
    response = staff.post(f"/fetch/tracker/{tracker.pk}")
    assert (response.status_code, "no account may send" in response.json()["detail"]) == (409, True)
    tracker.refresh_from_db()
    assert (tracker.last_processed_at, tracker.lease_until) == (processed, None)


# --- control: real fetches through the simulator ----------------------------------------
def test_fetch_tracker_stores_what_the_simulator_served(
    staff: Client,
    simulator: SimulatorThread,
    sim_account: AppleAccount,
    make_fleet: Callable[..., list],
) -> None:
    # Both due; the other one would come first in an unrestricted claim.
    (other, _), (tracker, _) = make_fleet(2)
    response = staff.post(f"/fetch/tracker/{tracker.pk}")
    served = simulator.simulator.served_payloads()
    assert response.status_code == 200, response.content
    stored = LocationReport.objects.filter(tracker=tracker).count()
    assert stored > 0
    assert stored == len(served[tracker.hashed_adv_key]) == response.json()["new"]
    assert other.hashed_adv_key not in served


def test_fetch_tracker_finishes_the_claim(
    staff: Client, sim_account: AppleAccount, make_fleet: Callable[..., list]
) -> None:
    ((tracker, _),) = make_fleet(1, last_processed_at=ago(days=1))
    body = staff.post(f"/fetch/tracker/{tracker.pk}").json()
    tracker.refresh_from_db()
    assert (body["tracker"], body["outcome"], body["finished"]) == (tracker.pk, "ok", 1)
    assert tracker.lease_until is None
    assert tracker.last_processed_at > ago(minutes=1)


def test_fetch_batch_fetches_up_to_max_keys(
    staff: Client, sim_account: AppleAccount, make_fleet: Callable[..., list]
) -> None:
    make_fleet(3)
    response = staff.post("/fetch/batch", {"max_keys": 2}, content_type="application/json")
    body = response.json()
    assert (response.status_code, body["trackers"], body["outcome"]) == (200, 2, "ok")
    assert body["new"] == LocationReport.objects.count() > 0
    assert Tracker.objects.filter(last_processed_at__isnull=True).count() == 1
    assert FetchAttempt.objects.get().worker.startswith("api:")


# --- control: /queue/initialize ---------------------------------------------------------
def test_queue_initialize_releases_expired_leases(staff: Client) -> None:
    lease = {"claimed_by": "w:1", "claim_token": uuid.uuid4()}
    expired = TrackerFactory(**lease, lease_until=ago(minutes=1))
    held = TrackerFactory(**lease, lease_until=ago(minutes=-5))
    response = staff.post("/queue/initialize")
    assert (response.status_code, response.json()["released"]) == (200, 1)
    expired.refresh_from_db()
    held.refresh_from_db()
    assert (expired.claimed_by, expired.claim_token, expired.lease_until) == ("", None, None)
    assert held.claimed_by == "w:1"


def test_queue_initialize_makes_eligible_trackers_due(staff: Client) -> None:
    TrackerFactory.create_batch(2, last_processed_at=ago(minutes=1))
    TrackerFactory()
    parked = TrackerFactory(last_processed_at=ago(minutes=1), quarantined_at=ago(minutes=1))
    response = staff.post("/queue/initialize")
    assert response.json() == {"released": 0, "made_due": 2}
    assert Tracker.objects.eligible().due().count() == 3
    parked.refresh_from_db()
    assert parked.last_processed_at is not None


# --- schema -----------------------------------------------------------------------------
def test_openapi_schema_lists_the_endpoints(client: Client) -> None:
    response = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    paths = response.json()["paths"]
    assert {"/health", "/metrics", "/fetch/tracker/{id}", "/queue/initialize"} <= set(paths)
