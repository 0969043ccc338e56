"""Workers as separate processes against the simulator: sharing, crashes, shutdown, qcluster.

These tests commit their data (transactional_db) so that worker processes, started with
`manage.py fetch_trackers` against the test database, can see it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.db import connection
from findmy import KeyPair

from findmy_sim.simulator import SimulatorThread, account_state
from locations.models import LocationReport
from monitoring.models import FetchAttempt, ServiceInstance
from trackers.fetch import SHUTDOWN_GRACE_SECONDS
from trackers.models import AppleAccount, Tracker
from trackers.queue import database_now

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def worker_env() -> dict[str, str]:
    db = connection.settings_dict
    env = os.environ.copy()
    env.update(
        DATABASE_URL=(
            f"postgis://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
        ),
        ACCOUNT_MIN_REQUEST_INTERVAL="0",
        FETCH_RETRY_MAX_WAIT="0",
        PROCESSING_TIMEOUT="10",
        HEARTBEAT_INTERVAL="1",
        WORKER_IDLE_SLEEP="1",
        LOG_LEVEL="WARNING",
        LOG_FORMAT="text",
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture
def spawn(worker_env: dict[str, str]) -> Iterator[Callable[..., subprocess.Popen]]:
    started: list[subprocess.Popen] = []

    def start(*args: str, **env: str) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env={**worker_env, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group: qcluster's children die with it
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)


def bulk_fleet(simulator: SimulatorThread, n: int) -> list[Tracker]:
    keys = [KeyPair.new() for _ in range(n)]
    simulator.simulator.add_keys(k.adv_key_bytes for k in keys)
    return Tracker.objects.bulk_create(
        [
            Tracker(
                name=f"t{i}", key_material=dict(k.to_json()), hashed_adv_key=k.hashed_adv_key_b64
            )
            for i, k in enumerate(keys)
        ],
        batch_size=2000,
    )


def accounts(simulator: SimulatorThread, n: int) -> None:
    for i in range(n):
        AppleAccount.objects.create(
            name=f"acc{i}",
            state=account_state(simulator.anisette_url, f"acc{i}@example.com"),
            anisette_url=simulator.anisette_url,
            fetch_endpoint=simulator.fetch_url,
        )


def stored_equals_served(simulator: SimulatorThread) -> None:
    served = simulator.simulator.served_payloads()
    stored: dict[str, set[str]] = {}
    for hashed_id, payload in LocationReport.objects.values_list(
        "tracker__hashed_adv_key", "payload"
    ).iterator():
        stored.setdefault(hashed_id, set()).add(base64.b64encode(bytes(payload)).decode())
    assert {k: v for k, v in served.items() if v} == stored
    assert LocationReport.objects.count() == sum(len(v) for v in served.values())


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def read_lines(proc: subprocess.Popen, sink: list[str]) -> threading.Thread:
    def pump() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            sink.append(line)

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    return thread


def test_four_workers_share_10000_trackers_fairly_and_safely(simulator, spawn):
    simulator.simulator.history_seconds = 2 * 3600  # a few reports each keeps this quick
    bulk_fleet(simulator, 10_000)
    accounts(simulator, 8)

    workers = [
        spawn("fetch_trackers", "--once", "--name", f"w{i}", ACCOUNT_MIN_REQUEST_INTERVAL="1")
        for i in range(4)
    ]
    outputs = [w.communicate(timeout=600)[0] for w in workers]

    assert [w.returncode for w in workers] == [0, 0, 0, 0], outputs
    stats = simulator.simulator.stats()
    assert stats["id_overlaps"] == 0  # no tracker was ever in two requests at once
    assert stats["ids_requested_twice"] == 0  # each tracker fetched once in the cycle
    assert not Tracker.objects.filter(last_processed_at=None).exists()
    for name, account in stats["accounts"].items():
        assert account["max_in_flight"] == 1, name
        assert account["min_gap_seconds"] >= 1.0, name
    assert set(FetchAttempt.objects.values_list("worker", flat=True)) == {
        "w0",
        "w1",
        "w2",
        "w3",
    }
    stored_equals_served(simulator)


def test_kill_9_mid_batch_loses_nothing_and_the_lease_expires(simulator, spawn):
    simulator.simulator.latency = 0.3
    bulk_fleet(simulator, 1500)
    accounts(simulator, 4)
    victim = spawn("fetch_trackers", "--name", "victim")
    others = [spawn("fetch_trackers", "--name", f"w{i}") for i in range(2)]

    wait_for(
        lambda: (
            Tracker.objects.filter(claimed_by="victim").exists()
            and FetchAttempt.objects.filter(worker="victim").exists()
        ),
        180,
        "the victim to be in the middle of its second batch",
    )
    held = set(Tracker.objects.filter(claimed_by="victim").values_list("id", flat=True))
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    assert held

    replacement = spawn("fetch_trackers", "--name", "replacement")
    lines: list[str] = []
    read_lines(replacement, lines)
    # Productive: measured from the moment the worker is up (Python and Django loaded, which
    # on a starved CI machine alone can take many seconds) to its first stored batch.
    wait_for(lambda: any("started" in x for x in lines), 180, "the restarted worker to start")
    up = time.monotonic()
    wait_for(
        lambda: FetchAttempt.objects.filter(worker="replacement", outcome="ok").exists(),
        120,
        "the restarted worker's first batch",
    )
    productive_after = time.monotonic() - up
    wait_for(
        lambda: not Tracker.objects.filter(last_processed_at=None).exists(), 600, "a full cycle"
    )
    for proc in [*others, replacement]:
        proc.send_signal(signal.SIGTERM)
    assert [p.wait(60) for p in [*others, replacement]] == [0, 0, 0]

    assert productive_after < 30
    # The victim's leased trackers were taken over once the lease expired, and finished.
    taken_over = Tracker.objects.filter(id__in=held)
    assert not taken_over.filter(last_processed_at=None).exists()
    assert not taken_over.exclude(claimed_by="").exists()
    stored_equals_served(simulator)


def test_sigterm_always_ends_in_a_clean_exit(simulator, spawn):
    simulator.simulator.latency = 0.4
    bulk_fleet(simulator, 300)
    accounts(simulator, 2)
    rng = random.Random(7)
    for attempt in range(20):
        lines: list[str] = []
        proc = spawn("fetch_trackers", "--name", f"t{attempt}", FETCH_INTERVAL="0")
        read_lines(proc, lines)
        wait_for(lambda out=lines: any("started" in x for x in out), 120, "the worker to start")
        time.sleep(rng.uniform(0, 1.5))
        proc.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        assert proc.wait(60) == 0, "".join(lines)
        # A request in flight gets SHUTDOWN_GRACE_SECONDS; then the batch is stored or released.
        assert time.monotonic() - stopped < SHUTDOWN_GRACE_SECONDS + 9
    # Nothing is left leased: every batch in hand was finished or released.
    assert not Tracker.objects.leased().exists()
    assert not AppleAccount.objects.exclude(request_token=None).exists()
    stored_equals_served(simulator)


def test_heartbeats_are_published_while_idle_and_during_a_long_fetch(simulator, spawn):
    import redis
    from django.conf import settings

    # Empty answers keep findmy retrying for about 30 s: one long fetch.
    simulator.simulator.set_fault("empty")
    accounts(simulator, 1)  # no trackers yet: the worker starts idle
    client = redis.Redis.from_url(settings.REDIS_HEALTH_URL)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe("heartbeat:service:fetch_trackers")
    proc = spawn("fetch_trackers", "--name", "hb")

    idle_beats = []
    deadline = time.monotonic() + 120
    while len(idle_beats) < 2 and time.monotonic() < deadline:
        message = pubsub.get_message(timeout=1)
        if message:
            idle_beats.append(json.loads(message["data"]))
    bulk_fleet(simulator, 5)
    wait_for(lambda: simulator.simulator.stats()["requests"] >= 1, 120, "the long fetch")
    beats = []
    # Beats that arrive while the request is in flight (HEARTBEAT_INTERVAL=1).
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        message = pubsub.get_message(timeout=1)
        if message:
            beats.append(json.loads(message["data"]))
    in_flight = Tracker.objects.filter(claimed_by="hb").exists()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0

    assert len(idle_beats) >= 2
    assert len(beats) >= 4
    assert in_flight  # the fetch was still running after these beats arrived
    beats = idle_beats + beats
    for key in (
        "service_name",
        "instance_id",
        "timestamp",
        "uptime_seconds",
        "heartbeat_count",
        "memory_usage_mb",
        "cpu_usage_percent",
        "queue_size",
        "last_successful_operation",
        "api_status",
    ):
        assert key in beats[-1], key
    assert [b["heartbeat_count"] for b in beats] == sorted(b["heartbeat_count"] for b in beats)
    instance = ServiceInstance.objects.get(instance_id=beats[0]["instance_id"])
    assert instance.stopped_at is not None  # a clean exit marks the instance stopped
    assert instance.heartbeat_count >= 4


def test_qcluster_schedule_drives_the_same_fetching(simulator, spawn):
    from django_q.models import Schedule

    from trackers.schedules import ensure_schedules

    ensure_schedules(Schedule)  # the migration made it; transactional tests truncate tables
    bulk_fleet(simulator, 20)
    accounts(simulator, 1)
    proc = spawn("qcluster", Q_WORKERS="1")
    lines: list[str] = []
    read_lines(proc, lines)
    try:
        wait_for(
            lambda: FetchAttempt.objects.filter(worker__startswith="qcluster:").exists(),
            300,
            "the scheduled fetch: " + "".join(lines[-20:]),
        )
        wait_for(
            lambda: ServiceInstance.objects.filter(
                service_name="qcluster", payload__api_status="ok"
            ).exists(),
            200,
            "a qcluster heartbeat reporting the fetch",
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    assert not Tracker.objects.filter(last_processed_at=None).exists()
    stored_equals_served(simulator)
    # A clean stop shows as stopped, not as a worker that went silent.
    instances = ServiceInstance.objects.filter(service_name="qcluster")
    assert instances.exists()
    assert not instances.filter(stopped_at=None).exists()


def test_sigterm_during_a_stuck_request_releases_the_batch(simulator, spawn):
    simulator.simulator.set_fault("empty")  # findmy would retry for about 30 s
    bulk_fleet(simulator, 10)
    accounts(simulator, 1)
    proc = spawn("fetch_trackers", "--name", "stuck")
    wait_for(lambda: simulator.simulator.stats()["requests"] >= 1, 120, "the first request")
    proc.send_signal(signal.SIGTERM)
    stopped = time.monotonic()

    assert proc.wait(60) == 0
    # Not findmy's 30 s of retries: the grace period, then the batch is released.
    assert time.monotonic() - stopped < SHUTDOWN_GRACE_SECONDS + 9
    assert not Tracker.objects.leased().exists()
    assert not Tracker.objects.exclude(last_processed_at=None).exists()
    assert not AppleAccount.objects.exclude(request_token=None).exists()


def test_a_worker_started_before_any_account_waits_beating_then_fetches(simulator, spawn):
    bulk_fleet(simulator, 5)
    proc = spawn("fetch_trackers", "--name", "early")

    def api_status() -> str | None:
        beat = ServiceInstance.objects.filter(service_name="fetch_trackers").first()
        return beat.payload.get("api_status") if beat else None

    wait_for(lambda: api_status() == "no_account", 120, "a no_account heartbeat")
    assert proc.poll() is None  # it stays up
    accounts(simulator, 1)  # no restart

    wait_for(lambda: LocationReport.objects.exists(), 120, "the first reports")
    wait_for(lambda: api_status() == "ok", 60, "an ok heartbeat")
    assert proc.poll() is None


def terminate_other_backends() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return cursor.fetchone()[0]


def test_a_worker_survives_losing_its_database_connections(simulator, spawn):
    accounts(simulator, 1)
    fleet = bulk_fleet(simulator, 20)
    proc = spawn("fetch_trackers", "--name", "survivor", FETCH_INTERVAL="0")
    wait_for(lambda: FetchAttempt.objects.count() >= 2, 120, "the worker to fetch")
    wait_for(lambda: ServiceInstance.objects.exists(), 60, "a heartbeat")

    killed = 0
    for _ in range(3):  # mid-claim, mid-request, mid-heartbeat: wherever it happens to be
        killed += terminate_other_backends()
        time.sleep(0.7)
    after_kill = database_now()
    beats = ServiceInstance.objects.get().heartbeat_count

    assert killed >= 2
    # It reconnects and fetches every tracker again (no lease outlives PROCESSING_TIMEOUT)...
    wait_for(
        lambda: (
            not Tracker.objects.filter(
                id__in=[t.id for t in fleet], last_processed_at__lt=after_kill
            ).exists()
        ),
        120,
        "every tracker fetched after the connections were killed",
    )
    # ...and its heartbeat goes on, from the same process.
    wait_for(
        lambda: ServiceInstance.objects.get().heartbeat_count >= beats + 3, 60, "more heartbeats"
    )
    assert proc.poll() is None
