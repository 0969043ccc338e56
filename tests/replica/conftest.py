"""A real streaming replica for the router's tests.

`scripts/replica start` makes (or resumes) a hot standby of the local cluster on port 5433;
the test database that pytest-django creates on the primary reaches it through WAL like any
other database. The replica's aliases are added once that database exists: they connect to
port 5433 with the test database's name, which is what Django makes of a replica alias with
`TEST: {"MIRROR": "default"}` (settings.py: set_as_test_mirror() gives it the test database's
NAME and keeps its HOST and PORT), and MIRROR keeps Django from creating or flushing anything
on them. They are added here, not through DATABASE_REPLICA_URL, because the settings are read
before any fixture runs, and so that the rest of the suite runs without replicas.

If the replica cannot be started, the tests fail with the script's message.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from django.db import connections

from tracker_project import replicas

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "replica"
REPLICA_PORT = int(os.environ.get("REPLICA_PORT", "5433"))
# replica1 and replica2 are the same server (two aliases: round robin); replica3 has no server.
ALIASES = ("replica1", "replica2", "replica3")


def run_script(command: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(SCRIPT), command],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "REPLICA_PORT": str(REPLICA_PORT)},
    )


def start_replica() -> None:
    # Connections of this process to a replica that was stopped are dead.
    for alias in ALIASES:
        if hasattr(connections._connections, alias):
            connections[alias].close()
    result = run_script("start")
    if result.returncode != 0:
        pytest.fail(
            f"scripts/replica start failed (exit {result.returncode}):\n"
            f"{result.stdout}{result.stderr}",
            pytrace=False,
        )


def stop_replica() -> None:
    result = run_script("stop")
    assert result.returncode == 0, result.stdout + result.stderr


def superuser_sql(sql: str) -> str:
    """Run SQL on the replica as the postgres superuser (over its Unix socket)."""
    cmd = ["psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "/var/run/postgresql"]
    cmd += ["-p", str(REPLICA_PORT), "-d", "postgres", "-c", sql]
    root = os.geteuid() == 0
    prefix = ["runuser", "-u", "postgres", "--"] if root else ["sudo", "-u", "postgres", "--"]
    result = subprocess.run(
        prefix + cmd, cwd="/", capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def replica_server() -> Iterator[None]:
    """The replica on REPLICA_PORT, started by the script when it is not running; left as it
    was found at the end (a replica this session created is destroyed again)."""
    before = run_script("status").returncode  # 0 running, 3 stopped, 4 not created
    start_replica()
    yield
    if before == 3:
        stop_replica()
    elif before != 0:
        run_script("destroy")


def _wait_for_database(name: str, user: str, password: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(
                host="127.0.0.1",
                port=REPLICA_PORT,
                dbname=name,
                user=user,
                password=password,
                connect_timeout=2,
            ):
                return
        except psycopg.OperationalError as exc:
            if time.monotonic() > deadline:
                pytest.fail(f"the test database {name} never reached the replica: {exc}")
            time.sleep(0.2)


@pytest.fixture(scope="package")
def replica_aliases(
    replica_server: None, django_db_setup: None, django_db_blocker: object
) -> Iterator[None]:
    """replica1..3 in django.db.connections, pointing at the test database on the replica."""
    primary = connections["default"].settings_dict
    _wait_for_database(primary["NAME"], primary["USER"], primary["PASSWORD"])
    for alias in ALIASES:
        port = REPLICA_PORT if alias != "replica3" else free_port()
        connections.settings[alias] = {
            **primary,
            "HOST": "127.0.0.1",
            "PORT": port,
            "OPTIONS": {**primary["OPTIONS"], "connect_timeout": 2},
            "TEST": {**primary["TEST"], "MIRROR": "default"},
        }
    yield
    for alias in ALIASES:
        if hasattr(connections._connections, alias):
            connections[alias].close()
            del connections[alias]
        del connections.settings[alias]
    replicas.forget_verdicts()


@pytest.fixture
def use_replicas(replica_aliases: None, settings: object) -> Iterator[Callable[..., None]]:
    """Turn the router on for the given aliases (default: replica1)."""

    def use(*aliases: str) -> None:
        settings.DATABASE_REPLICAS = list(aliases or ["replica1"])
        replicas.forget_verdicts()

    use()
    yield use
    replicas.forget_verdicts()


@pytest.fixture
def paused_replay() -> Iterator[Callable[[], None]]:
    """pause(): the replica stops replaying WAL (it keeps receiving it) until the test ends."""
    paused = []

    def pause() -> None:
        superuser_sql("SELECT pg_wal_replay_pause()")
        paused.append(True)

    yield pause
    if paused:
        superuser_sql("SELECT pg_wal_replay_resume()")


def wait_until_replayed(timeout: float = 30) -> None:
    """Until the replica has replayed everything the primary has written so far."""
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT pg_current_wal_lsn()::text")
        target = cursor.fetchone()[0]
    deadline = time.monotonic() + timeout
    while True:
        with connections["replica1"].cursor() as cursor:
            cursor.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", [target])
            if cursor.fetchone()[0]:
                return
        assert time.monotonic() < deadline, f"the replica did not replay up to {target}"
        time.sleep(0.05)
