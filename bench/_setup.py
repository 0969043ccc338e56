"""Shared benchmark plumbing: a scratch database, Django set up against it, tables of figures.

Benchmarks never touch the main database's data: each one creates its own database on the
same server (from template1, which carries PostGIS), migrates it, and drops it at the end
(or at the start, if a crashed run left it behind).
"""

from __future__ import annotations

import os
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

_CLK_TCK = os.sysconf("SC_CLK_TCK")
REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


_MAIN_URL_VAR = "BENCH_MAIN_DATABASE_URL"


def main_database_url() -> str:
    """DATABASE_URL as the application sees it (the environment first, then `.env`).

    Remembered in BENCH_MAIN_DATABASE_URL once DATABASE_URL is pointed at a bench database.
    """
    import environ

    if os.environ.get(_MAIN_URL_VAR):
        return os.environ[_MAIN_URL_VAR]
    env = environ.Env()
    if (REPO_ROOT / ".env").is_file():
        environ.Env.read_env(REPO_ROOT / ".env", overwrite=False)
    return env.str("DATABASE_URL")


def scratch_url(name: str) -> str:
    """The main DATABASE_URL pointed at another database on the same server."""
    parts = urlsplit(main_database_url())
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, ""))


def _libpq_dsn(url: str) -> str:
    # psycopg wants postgresql://; Django's URL says postgis://.
    parts = urlsplit(url)
    return urlunsplit(("postgresql", parts.netloc, parts.path, parts.query, ""))


def _admin_connection():  # -> psycopg.Connection
    """A connection for CREATE/DROP DATABASE: to `postgres`, else the main database.

    Only connects: nothing in the main database is read or written.
    """
    import psycopg

    try:
        return psycopg.connect(_libpq_dsn(scratch_url("postgres")), autocommit=True)
    except psycopg.OperationalError:
        return psycopg.connect(_libpq_dsn(main_database_url()), autocommit=True)


def _guard(name: str) -> None:
    main = urlsplit(main_database_url()).path.lstrip("/")
    if name == main or not name.startswith(f"{main}_bench"):
        raise SystemExit(f"refusing to create or drop {name!r}: not a bench database of {main!r}")


def create_scratch_database(name: str) -> None:
    from psycopg import sql

    _guard(name)
    with _admin_connection() as conn:
        # FORCE: a crashed earlier run may have left connections behind.
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template1").format(sql.Identifier(name)))


def drop_scratch_database(name: str) -> None:
    from psycopg import sql

    _guard(name)
    from django.db import connections

    connections.close_all()
    with _admin_connection() as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def worker_environment(db_name: str) -> dict[str, str]:
    """Environment for any process of a benchmark (set before django.setup())."""
    return {
        _MAIN_URL_VAR: main_database_url(),
        "DATABASE_URL": scratch_url(db_name),
        "DJANGO_SETTINGS_MODULE": "tracker_project.settings",
        # As in production: DEBUG would make Django keep every query's text in memory.
        "DEBUG": "false",
        # The account interval protects real Apple accounts; the simulator needs no pause.
        "ACCOUNT_MIN_REQUEST_INTERVAL": "0",
        "FETCH_RETRY_MAX_WAIT": "0",
        "LOG_LEVEL": "WARNING",
        "LOG_FORMAT": "text",
    }


def setup_django(db_name: str, *, migrate: bool = False) -> None:
    os.environ.update(worker_environment(db_name))
    import django

    django.setup()
    if migrate:
        from django.core.management import call_command

        call_command("migrate", verbosity=0)


@contextmanager
def scratch_database(name: str) -> Iterator[None]:
    """Create, migrate and finally drop a bench database; Django is set up against it."""
    t0 = time.perf_counter()
    create_scratch_database(name)
    try:
        setup_django(name, migrate=True)
        print(f"scratch database {name}: created and migrated in {time.perf_counter() - t0:.1f} s")
        yield
    finally:
        drop_scratch_database(name)
        print(f"scratch database {name}: dropped")


# --- the machine ---------------------------------------------------------------------------
def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return (total - idle) / _CLK_TCK, total / _CLK_TCK


def proc_cpu_seconds(pid: int) -> float:
    """user+system CPU seconds of any local process (PostgreSQL backends included)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def backend_pid() -> int:
    """The PostgreSQL backend serving Django's connection in this process."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


class OtherLoad:
    """How many cores processes other than this one and its backend kept busy meanwhile."""

    def __init__(self) -> None:
        self._backend = backend_pid()
        self._start = self._sample()

    def _sample(self) -> tuple[float, float, float]:
        busy, total = machine_cpu_seconds()
        ours = time.process_time() + proc_cpu_seconds(self._backend)
        return busy, total, ours

    def cores(self) -> float:
        busy, total, ours = self._sample()
        b0, t0, o0 = self._start
        per_core = (total - t0) / (os.cpu_count() or 1)  # seconds elapsed
        return max(0.0, (busy - b0) - (ours - o0)) / per_core if per_core else float("nan")


class DatabaseCpu:
    """CPU seconds spent for one database: this process (all its threads) and every
    PostgreSQL backend connected to `db_name`, whoever opened it (worker threads, child
    processes). Other load on the machine (other databases, other programs) is not counted.

    Backends are found by their process title ("postgres: ... <user> <db_name> ..."); a
    sampler thread reads them every `interval` seconds, so a backend that exits during the
    measurement loses at most its last interval. PostgreSQL's shared background processes
    (WAL writer, checkpointer, autovacuum) are not counted.
    """

    def __init__(self, db_name: str, interval: float = 0.1) -> None:
        self._needle = f" {db_name} ".encode()
        self._interval = interval
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _backends(self) -> list[int]:
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                title = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if title.startswith(b"postgres: ") and self._needle in title.replace(b"\0", b" "):
                pids.append(int(entry.name))
        return pids

    def _sample(self, start: bool = False) -> None:
        for pid in self._backends():
            cpu = proc_cpu_seconds(pid)
            if cpu != cpu:  # nan: gone
                continue
            # A backend first seen after the start was born during the measurement.
            self._first.setdefault(pid, cpu if start else 0.0)
            self._last[pid] = cpu

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()
        # The sampler's own CPU is the measurement's, not the benchmark's.
        self._sampler_cpu = time.thread_time()

    def __enter__(self) -> DatabaseCpu:
        self._process0 = time.process_time()
        self._sample(start=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        self.process = time.process_time() - self._process0 - self._sampler_cpu
        self.backends = sum(self._last[pid] - self._first[pid] for pid in self._last)
        self.seconds = self.process + self.backends


def code_version() -> str:
    """The commit measured, and whether uncommitted changes were measured with it (read-only)."""
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    # Porcelain lines are "XY path"; the benchmarks' own files do not count.
    changed = [
        line
        for line in git("status", "--porcelain").splitlines()
        if not line[3:].startswith("bench")
    ]
    return f"commit {commit}" + (
        f" + uncommitted changes in {len(changed)} paths" if changed else ""
    )


def load() -> str:
    """Load average, and how many cores other processes keep busy right now (1 s sample)."""
    busy0, total0 = machine_cpu_seconds()
    time.sleep(1)
    busy1, total1 = machine_cpu_seconds()
    busy = (busy1 - busy0) / (total1 - total0) * (os.cpu_count() or 1)
    return " ".join(f"{x:.2f}" for x in os.getloadavg()) + f"; cores busy now: {busy:.2f}"


# --- figures ------------------------------------------------------------------------------
def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def timed(fn: Callable[[], object]) -> tuple[float, float, object]:
    """(wall seconds, this process's CPU seconds, result) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], title: str = "") -> str:
    """A plain text table: first column left-aligned, the others right-aligned."""
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    out = [title] if title else []
    out += [line(cells[0]), rule, *(line(r) for r in cells[1:])]
    return "\n".join(out)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
