"""/health/live, /status/*, /metrics, the fetch control endpoints, API tokens and the schema."""

from __future__ import annotations

import base64
import datetime as dt
import io
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis
from django.contrib.auth.models import Permission
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone
from knox.models import AuthToken
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.throttling import ScopedRateThrottle

from findmy_sim.simulator import SimulatorThread
from locations.models import LocationReport
from monitoring.attempts import log_attempt
from monitoring.failures import record_failure
from monitoring.models import FetchAttempt, ServiceInstance
from trackers.api.views import NOTHING_TO_FETCH
from trackers.models import AccountStatus, AppleAccount, Tracker

from ..factories import AppleAccountFactory, ProductionRunFactory, TrackerFactory, UserFactory
from ..test_settings import GOOD, run_check

pytestmark = pytest.mark.django_db

# Each control endpoint and the permission it needs.
CONTROL = {
    "/fetch/batch": "fetch_now",
    "/fetch/tracker/1": "fetch_now",
    "/queue/initialize": "reset_queue",
}
CONTROL_URLS = list(CONTROL)
PASSWORD = "correct horse battery staple"  # UserFactory's


@pytest.fixture(autouse=True)
def _own_throttle_cache(settings: Any) -> None:
    # The throttle counts per user id in the default cache, which is Redis shared with other
    # test runs (whose user ids repeat): each test counts in a cache of its own.
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": uuid.uuid4().hex,
        }
    }


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


def user_with(*codenames: str, **fields: Any) -> Any:
    """A user holding the given trackers permissions (fetch_now, reset_queue, view_tracker)."""
    user = UserFactory(**fields)
    user.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="trackers", codename__in=codenames)
    )
    return user


def bearer(user: Any, expiry: dt.timedelta | None = None) -> str:
    _, token = AuthToken.objects.create(user=user, expiry=expiry)
    return f"Bearer {token}"


@pytest.fixture
def operator(client: Client) -> Client:
    """Logged in as a user with both control permissions: not a superuser, not staff."""
    client.force_login(user_with("fetch_now", "reset_queue"))
    return client


# --- /health/live -----------------------------------------------------------------------
def test_live_answers_ok_without_touching_the_database(
    client: Client, django_assert_num_queries: Callable[..., Any]
) -> None:
    with django_assert_num_queries(0):
        response = client.get("/health/live")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_live_ignores_stray_credentials_and_accept_headers(client: Client) -> None:
    response = client.get(
        "/health/live", HTTP_AUTHORIZATION="Bearer nonsense", HTTP_ACCEPT="text/plain"
    )
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


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
    assert liveness == {"alive": "alive", "stale": "stale", "dead": "dead", "stopped": "stopped"}
    assert body["counts"] == {"alive": 1, "stale": 1, "dead": 1, "stopped": 1}


def test_worker_status_shows_an_instance_stopped_long_ago_as_stopped(client: Client) -> None:
    instance("gone", ago(hours=3), stopped_at=ago(hours=3))
    (shown,) = client.get("/status/worker").json()["instances"]
    assert (shown["liveness"], shown["stopped_at"] is not None) == ("stopped", True)


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


def test_metrics_answer_a_scraper_that_asks_for_text_only(client: Client) -> None:
    accept = "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4"
    response = client.get("/metrics", HTTP_ACCEPT=accept)
    assert (response.status_code, response["Content-Type"]) == (200, CONTENT_TYPE_LATEST)


def test_metrics_count_stopped_workers_apart(client: Client) -> None:
    instance("stopped", ago(seconds=10), stopped_at=ago(seconds=5))
    samples = scrape(client)
    assert samples[("trackerfleet_workers", (("liveness", "stopped"),))] == 1
    assert samples[("trackerfleet_workers", (("liveness", "dead"),))] == 0


# --- control: authentication, permissions, throttling ------------------------------------
@pytest.mark.parametrize("url", CONTROL_URLS)
def test_control_needs_credentials_and_never_asks_for_basic(client: Client, url: str) -> None:
    response = client.post(url)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"
    assert "credentials" in response.json()["detail"]


@pytest.mark.parametrize("url", CONTROL_URLS)
def test_control_refuses_a_staff_user_without_the_permission(client: Client, url: str) -> None:
    client.force_login(user_with("view_tracker", "change_tracker", is_staff=True))
    response = client.post(url)
    assert response.status_code == 403
    assert f"trackers.{CONTROL[url]}" in response.json()["detail"]


@pytest.mark.parametrize(("url", "codename"), CONTROL.items())
def test_control_needs_its_own_permission_not_the_other(
    client: Client, url: str, codename: str
) -> None:
    other = "reset_queue" if codename == "fetch_now" else "fetch_now"
    client.force_login(user_with(other))
    assert client.post(url).status_code == 403


@pytest.mark.parametrize(
    ("url", "codename", "answer"),
    [
        ("/fetch/batch", "fetch_now", 409),  # allowed in; nothing to fetch
        ("/fetch/tracker/999999", "fetch_now", 404),
        ("/queue/initialize", "reset_queue", 200),
    ],
)
def test_control_lets_a_user_with_the_permission_in(
    client: Client, url: str, codename: str, answer: int
) -> None:
    client.force_login(user_with(codename))
    assert client.post(url).status_code == answer


def test_control_lets_a_superuser_in(client: Client) -> None:
    client.force_login(UserFactory(is_superuser=True))
    assert client.post("/queue/initialize").status_code == 200


def test_control_accepts_a_bearer_token(client: Client) -> None:
    token = bearer(user_with("reset_queue"))
    response = client.post("/queue/initialize", HTTP_AUTHORIZATION=token)
    assert response.status_code == 200


def test_control_refuses_basic_auth_with_valid_credentials(client: Client) -> None:
    user_with("reset_queue", "fetch_now", username="ops", is_staff=True, is_superuser=True)
    basic = base64.b64encode(f"ops:{PASSWORD}".encode()).decode()
    TrackerFactory(last_processed_at=ago(minutes=1))
    response = client.post("/queue/initialize", HTTP_AUTHORIZATION=f"Basic {basic}")
    assert response.status_code == 401
    assert not response["WWW-Authenticate"].lower().startswith("basic")
    assert Tracker.objects.eligible().due().count() == 0  # nothing was reset


@pytest.mark.parametrize("expiry", [dt.timedelta(seconds=-1), None], ids=["expired", "unknown"])
def test_control_refuses_an_expired_or_unknown_token(
    client: Client, expiry: dt.timedelta | None
) -> None:
    user = user_with("reset_queue")
    token = bearer(user, expiry) if expiry else "Bearer " + "0" * 64
    response = client.post("/queue/initialize", HTTP_AUTHORIZATION=token)
    assert (response.status_code, response["WWW-Authenticate"]) == (401, "Bearer")
    assert response.json()["detail"] == "Invalid token."


def test_control_refuses_a_token_of_an_inactive_user(client: Client) -> None:
    user = user_with("reset_queue")
    token = bearer(user)
    user.is_active = False
    user.save()
    assert client.post("/queue/initialize", HTTP_AUTHORIZATION=token).status_code == 401


def test_control_is_throttled_per_user(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(ScopedRateThrottle.THROTTLE_RATES, "control", "2/min")
    first, second = bearer(user_with("reset_queue")), bearer(user_with("reset_queue"))
    answers = [client.post("/queue/initialize", HTTP_AUTHORIZATION=first) for _ in range(3)]
    assert [r.status_code for r in answers] == [200, 200, 429]
    assert "throttled" in answers[2].json()["detail"]
    assert 0 < int(answers[2]["Retry-After"]) <= 60
    assert client.post("/queue/initialize", HTTP_AUTHORIZATION=second).status_code == 200


@pytest.mark.parametrize("rate", ["lots", "0/min", "30/fortnight"])
def test_a_malformed_throttle_rate_stops_the_start(rate: str) -> None:
    result = run_check(**GOOD, CONTROL_THROTTLE_RATE=rate)
    assert result.returncode != 0
    assert "CONTROL_THROTTLE_RATE must look like 30/min" in result.stderr


def test_throttle_counts_in_redis_shared_by_every_web_process(
    client: Client, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = f"test-{uuid.uuid4().hex}"
    settings.CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": f"{settings.REDIS_URL.rsplit('/', 1)[0]}/0",
            "KEY_PREFIX": prefix,
        }
    }
    monkeypatch.setitem(ScopedRateThrottle.THROTTLE_RATES, "control", "1/min")
    token = bearer(user_with("reset_queue"))
    codes = [client.post("/queue/initialize", HTTP_AUTHORIZATION=token).status_code for _ in "ab"]
    server = redis.Redis.from_url(settings.CACHES["default"]["LOCATION"])
    try:
        assert codes == [200, 429]
        assert len(server.keys(f"{prefix}:*throttle_control_*")) == 1
    finally:
        server.delete(*server.keys(f"{prefix}:*") or [prefix])
        server.close()


def test_control_rejects_get(operator: Client) -> None:
    response = operator.get("/fetch/batch")
    assert (response.status_code, "detail" in response.json()) == (405, True)


@pytest.mark.parametrize("max_keys", [0, 65, "many", None])
def test_fetch_batch_rejects_a_bad_max_keys(operator: Client, max_keys: object) -> None:
    response = operator.post(
        "/fetch/batch", {"max_keys": max_keys}, content_type="application/json"
    )
    assert response.status_code == 400
    assert list(response.json()) == ["max_keys"]


def test_fetch_batch_rejects_malformed_json(operator: Client) -> None:
    response = operator.post("/fetch/batch", "{", content_type="application/json")
    assert (response.status_code, "JSON" in response.json()["detail"]) == (400, True)


def test_fetch_batch_without_due_trackers_is_a_conflict(operator: Client) -> None:
    AppleAccountFactory()
    TrackerFactory(last_processed_at=ago(minutes=1))
    response = operator.post("/fetch/batch")
    assert (response.status_code, response.json()) == (409, {"detail": NOTHING_TO_FETCH})


def test_fetch_batch_without_a_ready_account_is_a_conflict(operator: Client) -> None:
    AppleAccountFactory(status=AccountStatus.NEEDS_LOGIN)
    tracker = TrackerFactory()
    response = operator.post("/fetch/batch")
    assert response.status_code == 409
    tracker.refresh_from_db()
    assert tracker.lease_until is None


def test_fetch_unknown_tracker_is_not_found(operator: Client) -> None:
    response = operator.post("/fetch/tracker/999999")
    assert (response.status_code, "detail" in response.json()) == (404, True)


def test_fetch_tracker_with_a_non_integer_id_is_not_found(operator: Client) -> None:
    response = operator.post("/fetch/tracker/abc")
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
    operator: Client, fields: dict[str, Any], reason: str
) -> None:
    AppleAccountFactory()
    if "claim_token" in fields:
        fields = {**fields, "lease_until": ago(minutes=-5)}
    tracker = TrackerFactory(**fields)
    response = operator.post(f"/fetch/tracker/{tracker.pk}")
    assert response.status_code == 409
    assert reason in response.json()["detail"]


def test_fetch_tracker_outside_its_production_run_says_why(operator: Client) -> None:
    run = ProductionRunFactory(name="2030 batch", starts_at=ago(days=-30))
    tracker = TrackerFactory(production_run=run)
    response = operator.post(f"/fetch/tracker/{tracker.pk}")
    assert response.status_code == 409
    assert "outside its production run '2030 batch'" in response.json()["detail"]


def test_fetch_tracker_without_a_ready_account_changes_nothing(operator: Client) -> None:
    AppleAccountFactory(status=AccountStatus.DISABLED)
    processed = ago(minutes=1)
    tracker = TrackerFactory(last_processed_at=processed)
    response = operator.post(f"/fetch/tracker/{tracker.pk}")
    assert (response.status_code, "no account may send" in response.json()["detail"]) == (409, True)
    tracker.refresh_from_db()
    assert (tracker.last_processed_at, tracker.lease_until) == (processed, None)


# --- control: real fetches through the simulator ----------------------------------------
def test_fetch_tracker_stores_what_the_simulator_served(
    operator: Client,
    simulator: SimulatorThread,
    sim_account: AppleAccount,
    make_fleet: Callable[..., list],
) -> None:
    # Both due; the other one would come first in an unrestricted claim.
    (other, _), (tracker, _) = make_fleet(2)
    response = operator.post(f"/fetch/tracker/{tracker.pk}")
    served = simulator.simulator.served_payloads()
    assert response.status_code == 200, response.content
    stored = LocationReport.objects.filter(tracker=tracker).count()
    assert stored > 0
    assert stored == len(served[tracker.hashed_adv_key]) == response.json()["new"]
    assert other.hashed_adv_key not in served


def test_fetch_tracker_finishes_the_claim(
    operator: Client, sim_account: AppleAccount, make_fleet: Callable[..., list]
) -> None:
    ((tracker, _),) = make_fleet(1, last_processed_at=ago(days=1))
    body = operator.post(f"/fetch/tracker/{tracker.pk}").json()
    tracker.refresh_from_db()
    assert (body["tracker"], body["outcome"], body["finished"]) == (tracker.pk, "ok", 1)
    assert tracker.lease_until is None
    assert tracker.last_processed_at > ago(minutes=1)


def test_fetch_batch_fetches_up_to_max_keys(
    operator: Client, sim_account: AppleAccount, make_fleet: Callable[..., list]
) -> None:
    make_fleet(3)
    response = operator.post("/fetch/batch", {"max_keys": 2}, content_type="application/json")
    body = response.json()
    assert (response.status_code, body["trackers"], body["outcome"]) == (200, 2, "ok")
    assert body["new"] == LocationReport.objects.count() > 0
    assert Tracker.objects.filter(last_processed_at__isnull=True).count() == 1
    assert FetchAttempt.objects.get().worker.startswith("api:")


# --- control: /queue/initialize ---------------------------------------------------------
def test_queue_initialize_releases_expired_leases(operator: Client) -> None:
    lease = {"claimed_by": "w:1", "claim_token": uuid.uuid4()}
    expired = TrackerFactory(**lease, lease_until=ago(minutes=1))
    held = TrackerFactory(**lease, lease_until=ago(minutes=-5))
    response = operator.post("/queue/initialize")
    assert (response.status_code, response.json()["released"]) == (200, 1)
    expired.refresh_from_db()
    held.refresh_from_db()
    assert (expired.claimed_by, expired.claim_token, expired.lease_until) == ("", None, None)
    assert held.claimed_by == "w:1"


def test_queue_initialize_makes_eligible_trackers_due(operator: Client) -> None:
    TrackerFactory.create_batch(2, last_processed_at=ago(minutes=1))
    TrackerFactory()
    parked = TrackerFactory(last_processed_at=ago(minutes=1), quarantined_at=ago(minutes=1))
    response = operator.post("/queue/initialize")
    assert response.json() == {"released": 0, "made_due": 2}
    assert Tracker.objects.eligible().due().count() == 3
    parked.refresh_from_db()
    assert parked.last_processed_at is not None


# --- API tokens -------------------------------------------------------------------------
def create_token(*args: str) -> str:
    out = io.StringIO()
    call_command("create_api_token", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue().strip()


def test_create_api_token_prints_a_token_that_works(client: Client) -> None:
    user_with("reset_queue", username="ops-script")
    token = create_token("ops-script")
    response = client.post("/queue/initialize", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200


def test_create_api_token_stores_only_a_hash(client: Client) -> None:
    user_with("reset_queue", username="ops-script")
    token = create_token("ops-script")
    stored = AuthToken.objects.values().get()
    assert token not in str(stored)
    assert stored["token_key"] == token[:15]  # knox's lookup prefix, not enough to log in
    response = client.post("/queue/initialize", HTTP_AUTHORIZATION=f"Bearer {token[:15]}")
    assert response.status_code == 401


@pytest.mark.parametrize(("args", "hours"), [((), 720), (("--expiry-hours", "2"), 2)])
def test_create_api_token_sets_the_expiry(args: tuple[str, ...], hours: int) -> None:
    UserFactory(username="ops-script")
    create_token("ops-script", *args)
    expiry = AuthToken.objects.get().expiry
    assert abs((expiry - timezone.now()) - dt.timedelta(hours=hours)) < dt.timedelta(minutes=1)


def test_create_api_token_with_zero_hours_never_expires() -> None:
    UserFactory(username="ops-script")
    create_token("ops-script", "--expiry-hours", "0")
    assert AuthToken.objects.get().expiry is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("nobody",), "no user named 'nobody'"),
        (("ops-script", "--expiry-hours", "-1"), "--expiry-hours"),
        (("retired",), "inactive"),
    ],
)
def test_create_api_token_refuses_bad_input(args: tuple[str, ...], message: str) -> None:
    UserFactory(username="ops-script")
    UserFactory(username="retired", is_active=False)
    with pytest.raises(CommandError, match=message):
        create_token(*args)
    assert not AuthToken.objects.exists()


# --- schema -----------------------------------------------------------------------------
def get_schema(client: Client, **headers: str) -> Any:
    return client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json", **headers)


def test_openapi_schema_is_not_for_anonymous_users(client: Client) -> None:
    response = client.get("/api/schema/")  # YAML by default, but a refusal is plain JSON
    assert (response.status_code, response["WWW-Authenticate"]) == (401, "Bearer")
    assert response["Content-Type"] == "application/json"
    assert "detail" in response.json()


def test_openapi_schema_is_not_for_users_who_are_not_staff(client: Client) -> None:
    client.force_login(user_with("fetch_now", "reset_queue"))
    response = get_schema(client)
    assert (response.status_code, "detail" in response.json()) == (403, True)


def test_openapi_schema_is_for_staff(client: Client) -> None:
    client.force_login(UserFactory(is_staff=True))
    response = get_schema(client)
    assert response.status_code == 200
    paths = response.json()["paths"]
    assert {"/health", "/health/live", "/metrics", "/fetch/batch", "/queue/initialize"} <= set(
        paths
    )
    assert "/fetch/tracker/{id}" in paths


def test_openapi_schema_is_served_to_a_staff_token(client: Client) -> None:
    response = get_schema(client, HTTP_AUTHORIZATION=bearer(UserFactory(is_staff=True)))
    assert response.status_code == 200


def test_openapi_schema_documents_bearer_tokens_and_no_basic_auth(client: Client) -> None:
    client.force_login(UserFactory(is_staff=True))
    schemes = get_schema(client).json()["components"]["securitySchemes"]
    assert schemes["knoxApiToken"] == {"type": "http", "scheme": "bearer"}
    assert "basicAuth" not in schemes


@pytest.mark.parametrize("path", ["/fetch/batch", "/fetch/tracker/{id}", "/queue/initialize"])
def test_openapi_schema_documents_the_control_refusals(client: Client, path: str) -> None:
    client.force_login(UserFactory(is_staff=True))
    post = get_schema(client).json()["paths"][path]["post"]
    assert {"401", "403", "429", "503"} <= set(post["responses"])
    assert {"knoxApiToken": []} in post["security"]


def test_openapi_schema_shows_public_endpoints_without_security(client: Client) -> None:
    client.force_login(UserFactory(is_staff=True))
    paths = get_schema(client).json()["paths"]
    for path in ("/health", "/health/live", "/status/queue", "/status/worker", "/metrics"):
        assert paths[path]["get"]["security"] == [{}], path
