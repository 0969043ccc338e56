"""Reports per second through processing (geofences, events), against the fetch rate.

    .venv/bin/python bench/process.py [--trackers 10000] [--fences 1000]
        [--reports-per-tracker 10] [--repeat 3] [--view-trackers 100000]

A fleet of trackers of one owner, with 1,000 circle fences of that owner (so every tracker is
checked against every fence), many of them at places the simulated trackers dwell at, so
that enter and exit events really happen. Reports come from the simulator's itineraries and
are loaded with COPY (not timed). Then, in one process, `geofences.worker.run_pass()`
processes every pending report: claim, evidence from PostGIS, the state machine, events,
deliveries, the commit. Repeated after resetting the processing state; medians.

The baseline, measured in the same run: bench/ingest.py's end-to-end fetch figure (decrypt
and ingest in one process, pipelined). The aim: one processor keeps up with at least two
fetch workers, i.e. processing at least 2x the end-to-end fetch rate per core.

Geocoding is not part of processing (geofencing never waits for addresses): the geocoder
runs on its own, so a warm or cold geocode cache does not change these figures.

Also: the refresh time of the latest-location materialized view at `--view-trackers`
trackers (one report each added to the same table), when the view exists.

Runs in its own scratch database (trackerfleet_bench_process), dropped at the end.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _setup

DB_NAME = "trackerfleet_bench_process"
CPU_MODE = {"mode": "machine"}
CPU_LABELS = {
    "database": "this process and the bench database's backends",
    "machine": "the whole machine's, PostgreSQL included",
}


def build(trackers: int, fences: int, reports_per_tracker: int) -> tuple[list[int], int]:
    """Trackers, fences and reports in the database; returns tracker ids and report count."""
    from django.contrib.auth import get_user_model
    from django.contrib.gis.geos import Point
    from django.db import connection

    from findmy_sim.simulator import SimulatedTracker
    from geofences.models import FenceKind, Geofence
    from trackers.models import Tracker

    owner = get_user_model().objects.create(username="bench-owner")
    rows = Tracker.objects.bulk_create(
        [
            Tracker(
                owner=owner,
                name=f"bench-{i:06d}",
                key_material={},
                hashed_adv_key=f"bench-{i:06d}",
                is_active=False,
            )
            for i in range(trackers)
        ],
        batch_size=5000,
    )
    sims = [SimulatedTracker(None, seed=f"bench-process-{i}") for i in range(trackers)]
    step = max(1, trackers // fences)
    Geofence.objects.bulk_create(
        [
            Geofence(
                owner=owner,
                name=f"fence-{j}",
                kind=FenceKind.CIRCLE,
                center=Point(lon, lat, srid=4326),
                shape=Point(lon, lat, srid=4326),
                radius_m=150 + 50 * (j % 5),
            )
            for j, (lat, lon) in enumerate(
                sims[(j * step) % trackers].places[0] for j in range(fences)
            )
        ]
    )
    now = time.time()
    buffer = io.StringIO()
    n = 0
    for tracker, sim in zip(rows, sims, strict=True):
        first = math.floor((now - reports_per_tracker * sim.period - sim.phase) / sim.period)
        for slot in range(first, first + reports_per_tracker):
            fix = sim.fix(slot)
            payload = os.urandom(88).hex()
            buffer.write(
                f"{tracker.id}\t{fix.timestamp.isoformat()}\tSRID=4326;POINT({fix.longitude} "
                f"{fix.latitude})\t{fix.accuracy}\t{fix.confidence}\t{fix.status}\t"
                f"\\\\x{payload}\t{fix.timestamp.isoformat()}\n"
            )
            n += 1
    with connection.cursor() as cursor:
        with cursor.copy(
            "COPY locations_locationreport (tracker_id, timestamp, point, horizontal_accuracy, "
            "confidence, status, payload, fetched_at) FROM STDIN"
        ) as copy:
            copy.write(buffer.getvalue())
        cursor.execute("ANALYZE")
    return [t.id for t in rows], n


def reset() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE geofences_alertdelivery, geofences_geofenceevent CASCADE")
        cursor.execute("TRUNCATE geofences_geofencestate, locations_trackerprocessing")
        # Every report back in the processing queue, as ingest leaves it.
        cursor.execute("TRUNCATE locations_queuedreport")
        cursor.execute(
            "INSERT INTO locations_queuedreport (report_id, tracker_id, stored_at) "
            "SELECT id, tracker_id, fetched_at FROM locations_locationreport"
        )
        cursor.execute("VACUUM ANALYZE locations_locationreport, locations_queuedreport")


def busy_timed(fn) -> tuple[float, float, object]:
    """(wall seconds, CPU seconds, result): this process and every PostgreSQL backend of the
    bench database (worker threads' included), so load on the rest of the machine does not
    count (`--cpu machine` counts the whole machine instead: run on a quiet machine)."""
    if CPU_MODE["mode"] == "machine":
        busy0, _ = _setup.machine_cpu_seconds()
        wall, _cpu, result = _setup.timed(fn)
        busy1, _ = _setup.machine_cpu_seconds()
        return wall, busy1 - busy0, result
    with _setup.DatabaseCpu(DB_NAME) as cpu:
        wall, _cpu, result = _setup.timed(fn)
    return wall, cpu.seconds, result


# What processing leaves for (auto)vacuum: the queue rows it deleted, the processing rows and
# states it rewrote, the events it added. Timed with the run (`--cleanup`): autovacuum would do
# this work later, and the PostgreSQL this bench is measured on may have it switched off.
CLEANUP_SQL = (
    "VACUUM (ANALYZE) locations_queuedreport, locations_trackerprocessing, "
    "geofences_geofencestate, geofences_geofenceevent"
)


def process_once(cleanup: bool) -> dict[str, float]:
    from django.db import connection

    from geofences.worker import run_pass

    def work():
        summary = run_pass("bench")
        if cleanup:
            with connection.cursor() as cursor:
                cursor.execute(CLEANUP_SQL)
        return summary

    wall, busy, summary = busy_timed(work)
    return {
        "wall": wall,
        "busy": busy,
        "reports": summary.reports,
        "events": summary.events,
        "batches": summary.batches,
    }


def fetch_baseline(repeat: int) -> dict[str, tuple[float, float]]:
    """bench/ingest.py's end-to-end stages in this run: (reports/s wall, reports per CPU
    second, counted as for processing), sequential and pipelined, medians."""
    from bench import ingest

    batches = ingest.build_fleet(300, 25, prefix="bench-process-fetch")
    ids = [t.id for b in batches for t in b.claim.trackers]
    total = sum(len(b.raw) for b in batches)
    out = {}
    for name, fn in (
        ("sequential", ingest._decrypt_and_ingest),
        ("pipelined", ingest._decrypt_and_ingest_pipelined),
    ):
        walls, busies = [], []
        for _ in range(repeat):
            ingest._reset(ids)
            wall, busy, stored = busy_timed(lambda fn=fn: fn(batches))
            if stored != total:
                raise RuntimeError(f"{name}: stored {stored} of {total}")
            walls.append(wall)
            busies.append(busy)
        out[name] = (total / _setup.median(walls), total / _setup.median(busies))
    ingest._cleanup(ids)
    return out


def latency(samples: int) -> list[float]:
    """Seconds from a report's commit to its processing, with an idle `process_locations`
    running in its own process: one report at a time, at random moments."""
    import random
    import subprocess

    from django.db import connection
    from django.utils import timezone

    from locations.ingest import ingest
    from trackers.models import Tracker
    from trackers.payloads import DecryptedReport

    env = {**os.environ, **_setup.worker_environment(DB_NAME)}
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "process_locations", "--name", "bench-latency"],
        cwd=_setup.REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        tracker = Tracker.objects.order_by("id").values_list("id", flat=True).first()
        time.sleep(5)  # Django loaded, the first (empty) poll done
        waits = []
        for _ in range(samples):
            time.sleep(random.uniform(0.2, 1.5))
            report = DecryptedReport(
                hashed_id="bench",
                payload=os.urandom(88),
                timestamp=timezone.now(),
                latitude=52.52,
                longitude=13.405,
                accuracy=10,
                confidence=2,
                status=0,
            )
            ingest([(tracker, report)], fetched_at=timezone.now())
            stored = time.monotonic()
            with connection.cursor() as cursor:
                while True:
                    # Processed: its queue row is gone.
                    cursor.execute(
                        "SELECT NOT EXISTS (SELECT 1 FROM locations_queuedreport AS q "
                        "JOIN locations_locationreport AS r ON r.id = q.report_id "
                        "WHERE r.tracker_id = %s AND r.payload = %s)",
                        [tracker, report.payload],
                    )
                    if cursor.fetchone()[0]:
                        break
                    if time.monotonic() - stored > 30:
                        raise RuntimeError("a report waited 30 s for processing")
                    time.sleep(0.02)
            waits.append(time.monotonic() - stored)
        return waits
    finally:
        proc.terminate()
        proc.wait(30)


def view_refresh(trackers: int) -> float | None:
    """Median seconds of REFRESH MATERIALIZED VIEW CONCURRENTLY at `trackers` trackers."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass('locations_latestlocation') IS NOT NULL")
        if not cursor.fetchone()[0]:
            return None
        cursor.execute(
            """
            INSERT INTO trackers_tracker (name, kind, key_material, hashed_adv_key, is_active,
                consecutive_failures, claimed_by, created_at)
            SELECT 'view-' || g, 'static', '', 'view-' || g, false, 0, '', now()
            FROM generate_series(1, %s) AS g
            """,
            [trackers],
        )
        cursor.execute(
            """
            INSERT INTO locations_locationreport (tracker_id, timestamp, point,
                horizontal_accuracy, confidence, status, payload, fetched_at)
            SELECT id, now() - random() * interval '1 day',
                ST_SetSRID(ST_MakePoint(random() * 360 - 180, random() * 170 - 85), 4326),
                20, 2, 0, decode(md5(id::text), 'hex'), now()
            FROM trackers_tracker WHERE name LIKE 'view-%%'
            """
        )
        cursor.execute("ANALYZE")
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            cursor.execute("REFRESH MATERIALIZED VIEW CONCURRENTLY locations_latestlocation")
            times.append(time.perf_counter() - t0)
        return _setup.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trackers", type=int, default=10_000)
    parser.add_argument("--fences", type=int, default=1_000)
    parser.add_argument("--reports-per-tracker", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--view-trackers", type=int, default=100_000)
    parser.add_argument("--latency-samples", type=int, default=40)
    parser.add_argument(
        "--cpu",
        choices=["database", "machine"],
        default="machine",
        help="CPU seconds counted: the whole machine's (PostgreSQL's background work included; "
        "needs a quiet machine), or only this process and the bench database's backends",
    )
    args = parser.parse_args(argv)
    CPU_MODE["mode"] = args.cpu
    print(f"bench/process.py on {_setup.code_version()}; load {_setup.load()}")
    with _setup.scratch_database(DB_NAME):
        t0 = time.perf_counter()
        _, total = build(args.trackers, args.fences, args.reports_per_tracker)
        print(
            f"built {args.trackers:,} trackers, {args.fences:,} fences, {total:,} reports in "
            f"{time.perf_counter() - t0:.1f} s (not timed)"
        )
        runs, cleaned = [], []
        for i in range(args.repeat):
            for cleanup, into in ((False, runs), (True, cleaned)):
                reset()
                run = process_once(cleanup)
                if run["reports"] != total:
                    raise RuntimeError(f"processed {run['reports']} of {total} reports")
                into.append(run)
                print(
                    f"  repeat {i + 1}/{args.repeat}{' + VACUUM' if cleanup else ''}: "
                    f"{run['wall']:.2f} s wall, {run['busy']:.2f} CPU seconds ({args.cpu}), "
                    f"{run['events']:,} events"
                )
        fetch = fetch_baseline(args.repeat)
        rate = total / _setup.median([r["wall"] for r in runs])
        per_core = total / _setup.median([r["busy"] for r in runs])
        # The more efficient of the two fetch modes per CPU second: the stricter comparison.
        fetch_core = max(fetch["pipelined"][1], fetch["sequential"][1])
        clean_rate = total / _setup.median([r["wall"] for r in cleaned])
        clean_core = total / _setup.median([r["busy"] for r in cleaned])
        rows = [
            ("processing (geofences, events, deliveries)", rate, per_core, per_core / fetch_core),
            (
                "processing + the VACUUM (ANALYZE) it leaves",
                clean_rate,
                clean_core,
                clean_core / fetch_core,
            ),
            (
                "baseline: fetch end to end, pipelined (bench/ingest c')",
                *fetch["pipelined"],
                fetch["pipelined"][1] / fetch_core,
            ),
            (
                "baseline: fetch end to end, sequential (bench/ingest c)",
                *fetch["sequential"],
                fetch["sequential"][1] / fetch_core,
            ),
        ]
        print()
        print(
            _setup.table(
                ["", "reports/s", "per CPU second", "vs best fetch per core"],
                rows,
                f"Processing: {args.trackers:,} trackers, {args.fences:,} fences, "
                f"{total:,} reports, one process, median of {args.repeat} "
                f"(CPU: {CPU_LABELS[args.cpu]})",
            )
        )
        print(f"events per run: {runs[0]['events']:,}; batches: {runs[0]['batches']:,}")
        print(
            "aim: processing per core >= 2x the end-to-end fetch rate per core: "
            f"{'met' if per_core >= 2 * fetch_core else 'NOT met'} ({per_core / fetch_core:.1f}x; "
            f"with the VACUUM it leaves: {clean_core / fetch_core:.1f}x, "
            f"{'met' if clean_core >= 2 * fetch_core else 'NOT met'})"
        )
        waits = sorted(latency(args.latency_samples))
        p95 = waits[max(0, math.ceil(0.95 * len(waits)) - 1)]
        print(
            f"latency, stored -> processed, idle processor ({len(waits)} reports): "
            f"median {_setup.median(waits):.2f} s, p95 {p95:.2f} s, max {waits[-1]:.2f} s "
            f"(aim: p95 under 5 s)"
        )
        refresh = view_refresh(args.view_trackers)
        if refresh is None:
            print("latest-location view: not present in this version")
        else:
            print(
                f"latest-location view: REFRESH CONCURRENTLY at {args.view_trackers:,} "
                f"extra trackers: {refresh:.2f} s (median of 3)"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
