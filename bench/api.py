"""Latency of the location API under concurrent clients, cached and uncached, and exports.

    .venv/bin/python bench/api.py [--trackers 10000] [--reports 10000000] [--days 30]
        [--clients 8] [--requests 800] [--workers 4] [--busy-reports 100000] [--keep]

Loads `--reports` reports over `--trackers` trackers of one owner, spread evenly over the
last `--days` days in time order (as a fleet's reports arrive: a tracker's rows are scattered
over the table), each tracker around a home somewhere in Europe. The rows are generated in
this process and streamed into one COPY (text, points as hex EWKB); the report table's
secondary indexes are dropped first and built again after the load (both timed), then
VACUUM ANALYZE. Then gunicorn serves the project against the bench database (`--workers`
sync workers, as in production), and `--clients` threads, each with one keep-alive
connection (urllib3), send `--requests` requests per scenario, as the owner (a token):

* baselines: `GET /health/live` (no database, no Redis, no authentication) and
  `GET /api/v1/me` (the cheapest authenticated answer: token, throttles, envelope, no query
  of its own);
* one tracker, one day, JSON: uncached (every request another tracker and day, so every
  one misses) and cached (one query, repeated);
* the fleet, one hour, 1x1 degree bbox, JSON: uncached (another hour each time) and cached;
* a 30-day GeoJSON export of one tracker (another tracker each time): points/s, and the
  gunicorn workers' RSS sampled with psutil every 20 ms (before vs peak);
* one client exporting the whole fleet's busiest day as GeoJSON: the large export, for
  points/s and flat memory;
* one client exporting the busy tracker's `--days` (`--busy-reports` reports, one every 26 s
  by default, its rows scattered among the fleet's) as GeoJSON, 3 times: the 30-day export of
  one tracker as one stream, for points/s and flat memory (the fleet's trackers have about
  1,000 points in 30 days, an answer too small to measure a stream by).

Printed: p50/p99 per scenario, the search cache's hits and misses per scenario (read from
Redis: uncached must be all misses, cached all hits), EXPLAIN ANALYZE of the two searches at
this size, and the aims: uncached one-day p99 < 50 ms, cached within 2x of the baselines,
exports >= 50,000 points/s per stream with flat memory. Runs in its own scratch database
(trackerfleet_bench_api), dropped at the end unless `--keep`. Needs REDIS_URL (the cache).
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import math
import os
import random
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _setup

DB_NAME = "trackerfleet_bench_api"
# Homes of the trackers: western and central Europe (lon, lat).
AREA = ((-10.0, 35.0), (30.0, 60.0))
COPY_SQL = (
    'COPY locations_locationreport (tracker_id, "timestamp", point, horizontal_accuracy, '
    "confidence, status, payload, fetched_at) FROM STDIN"
)


# --- the data -----------------------------------------------------------------------------
def create_fleet(trackers: int) -> tuple[int, list[int], int, str]:
    """The owner, its trackers (ids), the busy tracker (id) and a token for the owner."""
    from django.contrib.auth import get_user_model
    from django.db import connection

    from api.auth import create_token

    owner = get_user_model().objects.create(username="bench-owner")
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO trackers_tracker (owner_id, name, kind, key_material, hashed_adv_key,
                is_active, consecutive_failures, claimed_by, created_at)
            SELECT %s, 'bench-' || g, 'static', '', 'bench-' || g, false, 0, '', now()
            FROM generate_series(1, %s) AS g
            """,
            [owner.id, trackers],
        )
    from trackers.models import Tracker

    ids = list(Tracker.objects.order_by("id").values_list("id", flat=True))
    busy = Tracker.objects.create(owner=owner, name="bench-busy", key_material={}, is_active=False)
    _, token = create_token(owner, "bench", None)
    return owner.id, ids, busy.id, token


def secondary_indexes() -> list[tuple[str, str]]:
    """(name, CREATE INDEX ...) of the report table's indexes that back no constraint."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT i.indexname, i.indexdef FROM pg_indexes AS i
            WHERE i.tablename = 'locations_locationreport' AND NOT EXISTS (
                SELECT 1 FROM pg_constraint AS c WHERE c.conname = i.indexname)
            """
        )
        return cursor.fetchall()


def rows(
    tracker_ids: Sequence[int],
    reports: int,
    start: dt.datetime,
    days: int,
    busy: tuple[int, int] | None = None,
):
    """The reports as COPY text lines, in time order, tracker chosen at random per report;
    `busy` (tracker id, reports): one tracker that reports that often over the same days, its
    rows interleaved with the fleet's (scattered over the table as they would be)."""
    if busy is not None and busy[1]:
        busy_id, busy_reports = busy
        every = max(reports // busy_reports, 1)
        busy_home = (14.0, 50.0)
        for line_number, line in enumerate(rows(tracker_ids, reports, start, days)):
            yield line
            if line_number % every == 0 and line_number // every < busy_reports:
                _tracker, moment, _point, rest = line.split("\t", 3)
                point = struct.pack("<BIIdd", 1, 0x20000001, 4326, *busy_home).hex()
                payload = f"\\\\xbb{line_number:016x}"
                fields = rest.split("\t")
                fields[3] = payload
                yield "\t".join([str(busy_id), moment, point, *fields])
        return
    rng = random.Random(7)
    (lon0, lat0), (lon1, lat1) = AREA
    homes = [(rng.uniform(lon0, lon1), rng.uniform(lat0, lat1)) for _ in tracker_ids]
    step = days * 86400 / reports
    pack = struct.Struct("<BIIdd").pack
    ewkb_point = 0x20000001  # Point with an SRID
    n = len(tracker_ids)
    for i in range(reports):
        k = rng.randrange(n)
        lon, lat = homes[k]
        moment = (start + dt.timedelta(seconds=i * step)).isoformat()
        point = pack(
            1, ewkb_point, 4326, lon + rng.uniform(-0.05, 0.05), lat + rng.uniform(-0.05, 0.05)
        ).hex()
        accuracy = rng.choice((5, 10, 20, 35, 65, 120, 400))
        yield (f"{tracker_ids[k]}\t{moment}\t{point}\t{accuracy}\t2\t0\t\\\\x{i:016x}\t{moment}\n")


def load(
    tracker_ids: Sequence[int],
    reports: int,
    start: dt.datetime,
    days: int,
    busy: tuple[int, int] | None = None,
) -> dict:
    """COPY the reports (indexes dropped), build the indexes again, VACUUM ANALYZE; timings."""
    from django.db import connection

    indexes = secondary_indexes()
    timings: dict[str, float] = {}
    with connection.cursor() as cursor:
        for name, _ in indexes:
            cursor.execute(f'DROP INDEX "{name}"')
        t0 = time.perf_counter()
        buffer = io.StringIO()
        with cursor.copy(COPY_SQL) as copy:
            for line in rows(tracker_ids, reports, start, days, busy):
                buffer.write(line)
                if buffer.tell() > 1 << 20:
                    copy.write(buffer.getvalue())
                    buffer.seek(0)
                    buffer.truncate()
            copy.write(buffer.getvalue())
        timings["copy"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _, definition in indexes:
            cursor.execute(definition)
        timings["indexes"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        cursor.execute("VACUUM ANALYZE locations_locationreport")
        # The trackers too, as autovacuum would after their bulk insert: without statistics
        # the planner takes an owner's 10,000 trackers for a handful.
        cursor.execute("ANALYZE trackers_tracker")
        timings["vacuum"] = time.perf_counter() - t0
    timings["indexes_built"] = len(indexes)
    return timings


def explain(sql_of: Callable[[], object]) -> str:
    """EXPLAIN (ANALYZE, BUFFERS) of a queryset, as the API builds it."""
    from django.db import connection

    queryset = sql_of()
    sql, params = queryset.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", params)
        return "\n".join(f"    {line}" for (line,) in cursor.fetchall())


# --- the server ---------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_gunicorn(port: int, workers: int) -> subprocess.Popen:
    env = {
        **os.environ,
        **_setup.worker_environment(DB_NAME),
        # The bench is one token sending thousands of requests a minute.
        "API_THROTTLE_USER_RATE": "1000000/s",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
    }
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "gunicorn", "tracker_project.wsgi:application",
            "--bind", f"127.0.0.1:{port}", "--workers", str(workers),
            "--log-level", "warning", "--timeout", "300",
        ],
        cwd=_setup.REPO_ROOT,
        env=env,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError("gunicorn exited at start") from None
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("gunicorn did not start within 60 s")


class RssSampler(threading.Thread):
    """Peak RSS of each gunicorn worker while it runs (psutil, every 20 ms)."""

    def __init__(self, master_pid: int) -> None:
        super().__init__(daemon=True)
        import psutil

        self.workers = psutil.Process(master_pid).children()
        self.peak = {w.pid: 0 for w in self.workers}
        self.stop_event = threading.Event()

    def sample(self) -> dict[int, int]:
        out = {}
        for w in self.workers:
            try:
                out[w.pid] = w.memory_info().rss
            except Exception:  # noqa: BLE001  (a worker restarted: keep the others)
                out[w.pid] = 0
        return out

    def run(self) -> None:
        while not self.stop_event.is_set():
            for pid, rss in self.sample().items():
                self.peak[pid] = max(self.peak[pid], rss)
            time.sleep(0.02)

    def stop(self) -> dict[int, int]:
        self.stop_event.set()
        self.join()
        return self.peak


# --- the clients --------------------------------------------------------------------------
@dataclass
class Result:
    name: str
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    points: int = 0
    wall: float = 0.0
    hits: int = 0
    misses: int = 0
    rss_before: int = 0
    rss_peak: int = 0

    def pct(self, q: float) -> float:
        values = sorted(self.latencies)
        if not values:
            return float("nan")
        return values[max(0, math.ceil(q * len(values)) - 1)] * 1000


def run(
    name: str, port: int, paths: Sequence[str], clients: int, token: str | None, stream: bool
) -> Result:
    """Send every path once, `clients` at a time; each client keeps its connection."""
    import urllib3

    result = Result(name)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    lock = threading.Lock()
    position = iter(range(len(paths)))
    marker = b'{"type":"Feature"'

    def client() -> None:
        pool = urllib3.HTTPConnectionPool(
            "127.0.0.1", port, maxsize=1, retries=False, timeout=urllib3.Timeout(300)
        )
        while True:
            with lock:
                i = next(position, None)
            if i is None:
                return
            t0 = time.perf_counter()
            response = pool.request("GET", paths[i], headers=headers, preload_content=not stream)
            points = 0
            if stream:
                tail = b""
                for chunk in response.stream(65536):
                    data = tail + chunk
                    points += data.count(marker)
                    tail = data[-(len(marker) - 1) :]
                    points -= tail.count(marker)  # never: the tail is shorter than the marker
                response.release_conn()
            elapsed = time.perf_counter() - t0
            with lock:
                result.latencies.append(elapsed)
                result.points += points
                if response.status != 200:
                    result.errors += 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result.wall = time.perf_counter() - t0
    return result


def cache_counters() -> tuple[int, int]:
    from api import search_cache

    figures = search_cache.counters() or {"hits": 0, "misses": 0}
    return figures["hits"], figures["misses"]


def clear_cache_keys() -> int:
    """Delete this bench database's search cache entries and counters from Redis."""
    from locations import generations

    client = generations.redis_client()
    if client is None:
        return 0
    keys = list(client.scan_iter(match=f"{generations.namespace()}:*", count=1000))
    for i in range(0, len(keys), 1000):
        client.delete(*keys[i : i + 1000])
    return len(keys)


# --- the scenarios ------------------------------------------------------------------------
def day_url(tracker: int, day: dt.datetime) -> str:
    query = {"starts_at": day.isoformat(), "ends_at": (day + dt.timedelta(days=1)).isoformat()}
    return f"/api/v1/trackers/{tracker}/locations?{urlencode(query)}"


def bbox_url(hour: dt.datetime, lon: float, lat: float) -> str:
    query = {
        "starts_at": hour.isoformat(),
        "ends_at": (hour + dt.timedelta(hours=1)).isoformat(),
        "bbox": f"{lon:.3f},{lat:.3f},{lon + 1:.3f},{lat + 1:.3f}",
    }
    return f"/api/v1/locations?{urlencode(query)}"


def export_url(tracker: int, start: dt.datetime, days: int, fleet: bool = False) -> str:
    query = {
        "starts_at": start.isoformat(),
        "ends_at": (start + dt.timedelta(days=days)).isoformat(),
        "format": "geojson",
    }
    path = "/api/v1/locations" if fleet else f"/api/v1/trackers/{tracker}/locations"
    return f"{path}?{urlencode(query)}"


def scenarios(
    tracker_ids: Sequence[int], start: dt.datetime, days: int, n: int
) -> list[tuple[str, list[str], bool, bool]]:
    """(name, paths, authenticated, streamed); the uncached ones never repeat a query."""
    rng = random.Random(11)
    pairs = rng.sample(range(len(tracker_ids) * days), min(n, len(tracker_ids) * days))
    one_day = [day_url(tracker_ids[p // days], start + dt.timedelta(days=p % days)) for p in pairs]
    hours = rng.sample(range(days * 24), min(n, days * 24))
    (lon0, lat0), (lon1, lat1) = AREA
    boxes = [
        bbox_url(
            start + dt.timedelta(hours=h), rng.uniform(lon0, lon1 - 1), rng.uniform(lat0, lat1 - 1)
        )
        for h in hours
    ]
    exports = [
        export_url(t, start, days)
        for t in rng.sample(list(tracker_ids), min(n // 4 or 1, len(tracker_ids)))
    ]
    return [
        ("baseline: GET /health/live", ["/health/live"] * n, False, False),
        ("baseline: GET /api/v1/me (token)", ["/api/v1/me"] * n, True, False),
        ("one tracker, one day, uncached", one_day, True, False),
        ("one tracker, one day, cached", [one_day[0]] * n, True, False),
        ("fleet, one hour, bbox 1x1 deg, uncached", boxes, True, False),
        ("fleet, one hour, bbox 1x1 deg, cached", [boxes[0]] * n, True, False),
        (f"one tracker, {days}-day GeoJSON export", exports, True, True),
    ]  # fmt: skip


def measure(
    args: argparse.Namespace, tracker_ids: list[int], busy_id: int, token: str, start: dt.datetime
) -> list[Result]:
    port = free_port()
    server = start_gunicorn(port, args.workers)
    results = []
    try:
        plan = scenarios(tracker_ids, start, args.days, args.requests)
        # Warm up every worker (imports, connections) with a request of each kind.
        for _, paths, auth, stream in plan:
            run(
                "warm-up",
                port,
                paths[-args.workers * 2 :],
                args.clients,
                token if auth else None,
                stream,
            )
        # The cached scenarios' one query is now cached; the uncached ones' first paths are not.
        clear_cache_keys()
        for name, paths, auth, stream in plan:
            if "cached" in name and "uncached" not in name:
                run("prime", port, paths[:1], 1, token, stream)
            hits0, misses0 = cache_counters()
            sampler = RssSampler(server.pid)
            before = sum(sampler.sample().values())
            sampler.start()
            result = run(name, port, paths, args.clients, token if auth else None, stream)
            peak = sampler.stop()
            result.rss_before, result.rss_peak = before, sum(peak.values())
            hits1, misses1 = cache_counters()
            result.hits, result.misses = hits1 - hits0, misses1 - misses0
            results.append(result)
            print(f"  {name}: {len(result.latencies)} requests in {result.wall:.1f} s")
        # One client each: the fleet's whole first day as one GeoJSON export, and the busy
        # tracker's whole history (`--busy-reports` points) 3 times.
        single = [
            ("fleet, one day, GeoJSON export (1 client)", [export_url(0, start, 1, fleet=True)]),
            (
                f"busy tracker, {args.days}-day GeoJSON export (1 client)",
                [export_url(busy_id, start, args.days)] * 3,
            ),
        ]
        for name, paths in single:
            sampler = RssSampler(server.pid)
            before = sampler.sample()
            sampler.start()
            result = run(name, port, paths, 1, token, True)
            peak = sampler.stop()
            result.rss_before = max(before.values())
            result.rss_peak = max(peak.values())
            results.append(result)
    finally:
        server.terminate()
        server.wait(30)
    return results


def report(results: list[Result], args: argparse.Namespace) -> None:
    base = results[0]
    rows = []
    for r in results:
        per_request = r.points / sum(r.latencies) if r.points else float("nan")
        rows.append(
            (
                r.name,
                len(r.latencies),
                r.errors,
                r.pct(0.50),
                r.pct(0.99),
                len(r.latencies) / r.wall if r.wall else float("nan"),
                r.pct(0.50) / base.pct(0.50),
                f"{r.hits}/{r.misses}" if r.hits or r.misses else "-",
                r.points / r.wall if r.points else float("nan"),
                per_request,
                f"{r.rss_before / 2**20:.0f} -> {r.rss_peak / 2**20:.0f}" if r.rss_peak else "-",
            )
        )
    print()
    print(
        _setup.table(
            [
                "scenario", "requests", "errors", "p50 ms", "p99 ms", "req/s",
                "p50 vs baseline", "cache hits/misses", "points/s (all clients)",
                "points/s per request", "RSS MiB before -> peak",
            ],
            rows,
            f"API: {args.trackers:,} trackers, {args.reports:,} reports over {args.days} days; "
            f"{args.clients} clients, gunicorn {args.workers} sync workers "
            "(RSS: workers summed; for the 1-client export, the largest worker)",
        )
    )  # fmt: skip
    api_base = results[1]
    uncached_day = results[2]
    cached = [results[3], results[5]]
    exports = [results[7], results[8]]  # one stream each (one client)
    print()
    print(
        f"aim: uncached one-day p99 < 50 ms: {uncached_day.pct(0.99):.1f} ms: "
        f"{'met' if uncached_day.pct(0.99) < 50 else 'NOT met'}"
    )
    # The aim's trivial endpoint is the API's own (token, throttle, envelope, no query):
    # everything a cached answer must do besides the lookup. /health/live (no authentication,
    # no DRF) is printed beside it as the web stack's floor.
    for r in cached:
        p50, p99 = r.pct(0.5) / api_base.pct(0.5), r.pct(0.99) / api_base.pct(0.99)
        print(
            f"aim: cached within 2x of the trivial endpoint, {api_base.name} ({r.name}): "
            f"p50 {p50:.1f}x, p99 {p99:.1f}x: {'met' if max(p50, p99) <= 2 else 'NOT met'}; "
            f"against {base.name}: p50 {r.pct(0.5) / base.pct(0.5):.1f}x, "
            f"p99 {r.pct(0.99) / base.pct(0.99):.1f}x"
        )
    for r in exports:
        rate = r.points / sum(r.latencies) if r.latencies else 0
        growth = (r.rss_peak - r.rss_before) / 2**20
        print(
            f"aim: export >= 50,000 points/s with flat memory ({r.name}): {rate:,.0f} points/s "
            f"per stream, RSS +{growth:.0f} MiB: {'met' if rate >= 50_000 else 'NOT met'}"
        )
    many = results[6]
    print(
        f"{many.name}, {args.clients} clients at once: {many.points / many.wall:,.0f} points/s in "
        f"all, RSS +{(many.rss_peak - many.rss_before) / 2**20:.0f} MiB (workers summed)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trackers", type=int, default=10_000)
    parser.add_argument("--reports", type=int, default=10_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=800, help="per scenario")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn sync workers")
    parser.add_argument(
        "--busy-reports",
        type=int,
        default=100_000,
        help="reports of one busy tracker (one every 26 s over 30 days), exported whole",
    )
    parser.add_argument("--keep", action="store_true", help="keep the bench database")
    args = parser.parse_args(argv)
    print(f"bench/api.py on {_setup.code_version()}; load {_setup.load()}")
    t0 = time.perf_counter()
    _setup.create_scratch_database(DB_NAME)
    try:
        _setup.setup_django(DB_NAME, migrate=True)
        print(
            f"scratch database {DB_NAME}: created and migrated in {time.perf_counter() - t0:.1f} s"
        )
        from django.conf import settings

        if not settings.REDIS_URL:
            raise SystemExit("bench/api.py needs REDIS_URL: the search cache lives in Redis")
        clear_cache_keys()
        owner, tracker_ids, busy_id, token = create_fleet(args.trackers)
        end = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        start = end - dt.timedelta(days=args.days)
        timings = load(tracker_ids, args.reports, start, args.days, (busy_id, args.busy_reports))
        print(
            f"loaded {args.reports:,} reports (+{args.busy_reports:,} of the busy tracker): "
            f"COPY {timings['copy']:.1f} s "
            f"({args.reports / timings['copy']:,.0f} rows/s, generated in this process), "
            f"{timings['indexes_built']} indexes built again {timings['indexes']:.1f} s, "
            f"VACUUM ANALYZE {timings['vacuum']:.1f} s"
        )
        print_plans(owner, tracker_ids, start)
        results = measure(args, tracker_ids, busy_id, token, start)
        report(results, args)
    finally:
        cleared = clear_cache_keys()
        if args.keep:
            print(f"scratch database {DB_NAME}: kept (--keep); {cleared} cache keys deleted")
        else:
            _setup.drop_scratch_database(DB_NAME)
            print(f"scratch database {DB_NAME}: dropped; {cleared} cache keys deleted")
    return 0


def print_plans(owner_id: int, tracker_ids: Sequence[int], start: dt.datetime) -> None:
    """EXPLAIN ANALYZE of the two searches as the API runs them, at this size."""
    import dataclasses

    from django.contrib.auth import get_user_model
    from django.http import QueryDict

    from api.filters import parse_location_query
    from api.views.locations import report_rows

    owner = get_user_model().objects.get(pk=owner_id)
    day = QueryDict(mutable=True)
    day.update(
        {
            "starts_at": (start + dt.timedelta(days=3)).isoformat(),
            "ends_at": (start + dt.timedelta(days=4)).isoformat(),
        }
    )
    one = dataclasses.replace(
        parse_location_query(day, allow_tracker=True),
        trackers=(tracker_ids[len(tracker_ids) // 2],),
    )
    hour = QueryDict(mutable=True)
    hour.update(
        {
            "starts_at": (start + dt.timedelta(days=5)).isoformat(),
            "ends_at": (start + dt.timedelta(days=5, hours=1)).isoformat(),
            "bbox": "10,48,11,49",
        }
    )
    box = parse_location_query(hour, allow_tracker=True)
    print("EXPLAIN ANALYZE, one tracker, one day (first page):")
    print(explain(lambda: report_rows(owner, one).order_by("timestamp", "id")[:101]))
    print("EXPLAIN ANALYZE, the fleet, one hour, bbox 10,48,11,49 (first page):")
    print(explain(lambda: report_rows(owner, box).order_by("timestamp", "id")[:101]))  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
