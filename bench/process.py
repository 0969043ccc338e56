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
        cursor.execute("UPDATE locations_locationreport SET processed_at = NULL")
        cursor.execute("VACUUM ANALYZE locations_locationreport")


def process_once() -> dict[str, float]:
    from django.db import connection

    from geofences.worker import run_pass

    connection.ensure_connection()
    backend = _setup.backend_pid()
    db0 = _setup.proc_cpu_seconds(backend)
    wall, cpu, summary = _setup.timed(lambda: run_pass("bench"))
    db = _setup.proc_cpu_seconds(backend) - db0
    return {
        "wall": wall,
        "cpu": cpu,
        "db": db,
        "reports": summary.reports,
        "events": summary.events,
        "batches": summary.batches,
    }


def fetch_baseline() -> tuple[float, float]:
    """bench/ingest.py's end-to-end figures (reports/s, one process): sequential, pipelined."""
    from bench import ingest

    figures = ingest.measure(trackers=300, reports_per_tracker=25, repeat=3, log=False)
    return figures.rate("c"), figures.rate("cp")


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
    args = parser.parse_args(argv)
    print(f"bench/process.py on {_setup.code_version()}; load {_setup.load()}")
    with _setup.scratch_database(DB_NAME):
        t0 = time.perf_counter()
        _, total = build(args.trackers, args.fences, args.reports_per_tracker)
        print(
            f"built {args.trackers:,} trackers, {args.fences:,} fences, {total:,} reports in "
            f"{time.perf_counter() - t0:.1f} s (not timed)"
        )
        runs = []
        for i in range(args.repeat):
            reset()
            run = process_once()
            if run["reports"] != total:
                raise RuntimeError(f"processed {run['reports']} of {total} reports")
            runs.append(run)
            print(
                f"  repeat {i + 1}/{args.repeat}: {run['wall']:.2f} s wall, "
                f"{run['cpu']:.2f} s CPU, {run['db']:.2f} s PostgreSQL CPU, "
                f"{run['events']:,} events"
            )
        sequential, pipelined = fetch_baseline()
        wall = _setup.median([r["wall"] for r in runs])
        cores = _setup.median([(r["cpu"] + r["db"]) for r in runs])
        rate = total / wall
        per_core = total / cores
        rows = [
            ("processing, one process (wall)", rate, rate / pipelined),
            ("processing per core (process + PostgreSQL CPU)", per_core, per_core / pipelined),
            ("baseline: fetch end to end, pipelined (bench/ingest c')", pipelined, 1.0),
            (
                "baseline: fetch end to end, sequential (bench/ingest c)",
                sequential,
                sequential / pipelined,
            ),
        ]
        print()
        print(
            _setup.table(
                ["", "reports/s", "vs fetch"],
                rows,
                f"Processing: {args.trackers:,} trackers, {args.fences:,} fences, "
                f"{total:,} reports, median of {args.repeat}",
            )
        )
        print(f"events per run: {runs[0]['events']:,}; batches: {runs[0]['batches']:,}")
        print(
            f"aim: processing per core >= 2x the fetch rate: "
            f"{'met' if per_core >= 2 * pipelined else 'NOT met'} ({per_core / pipelined:.1f}x)"
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
