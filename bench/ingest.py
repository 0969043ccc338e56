"""Reports per second through decrypt + ingest, against a raw COPY of the same rows.

    .venv/bin/python bench/ingest.py [--trackers 1000] [--reports-per-tracker 25] [--repeat 5]

A fleet of simulated trackers gets real encrypted payloads (generation is not timed); the
payloads then go, 64 trackers at a time as a worker takes them, through:

  (a0) findmy's decryption alone (`decrypt_payload`, keys already parsed)
  (a)  the worker's decryption (`trackers.fetch.decrypt_all`: key parse, dedupe, decrypt)
  (b)  `locations.ingest.ingest()` into an empty table, then again (all duplicates)
  (c)  decrypt + ingest end to end, one batch after the other
  (c') decrypt + ingest end to end, pipelined: batch n is stored in a background thread
       (locations.pipeline.BackgroundStore) while the main thread decrypts batch n+1
  and the baseline: psycopg 3 `COPY ... FROM STDIN` of the same rows into the same table
  (same indexes and unique constraint), per batch and in one statement, and a binary COPY
  per batch (points as EWKB).

Runs in its own scratch database (trackerfleet_bench_ingest), dropped at the end.
"""

from __future__ import annotations

import argparse
import base64
import os
import struct
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _setup

DB_NAME = "trackerfleet_bench_ingest"
BATCH_TRACKERS = 64  # trackers per claim, as the worker takes them (MAX_KEYS_PER_BATCH)
COPY_SQL = (
    "COPY locations_locationreport (tracker_id, timestamp, point, horizontal_accuracy, "
    "confidence, status, payload, fetched_at) FROM STDIN"
)
COPY_BINARY_SQL = COPY_SQL + " (FORMAT BINARY)"
COPY_BINARY_TYPES = ["int8", "timestamptz", "bytea", "int2", "int2", "int2", "bytea", "timestamptz"]
EWKB_POINT = struct.Struct("<BIIdd")  # little endian, Point with SRID flag, SRID, x, y


@dataclass
class Batch:
    """One claim's worth of work: 64 trackers and the raw (hashed id, payload) pairs."""

    claim: object  # trackers.queue.Claim
    raw: list[tuple[str, bytes]]
    keys: dict[str, object]  # hashed id -> findmy KeyPair
    decrypted: list = field(default_factory=list)


@dataclass
class Stage:
    name: str
    rows: int
    walls: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return _setup.median(self.walls)

    @property
    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds else float("nan")

    @property
    def cpu_share(self) -> float:
        """This process's CPU over wall time: the rest is PostgreSQL (or waiting on it)."""
        return 100 * _setup.median(self.cpus) / self.seconds if self.seconds else float("nan")


@dataclass
class IngestFigures:
    trackers: int
    reports: int
    batches: int
    repeat: int
    stages: dict[str, Stage]
    tracker_ids: list[int]
    other_cores: float  # cores other processes kept busy during the timed stages

    def rate(self, key: str) -> float:
        return self.stages[key].rate


# --- the fleet ------------------------------------------------------------------------------
def build_fleet(n: int, reports_per_tracker: int, prefix: str = "bench-ingest") -> list[Batch]:
    """n trackers in the database (inactive: no fetch worker claims them) and their payloads."""
    from django.utils import timezone
    from findmy import KeyPair

    from findmy_sim.simulator import SimulatedTracker
    from trackers.models import Tracker
    from trackers.queue import Claim, ClaimedTracker

    keys = [KeyPair.new() for _ in range(n)]
    trackers = Tracker.objects.bulk_create(
        [
            Tracker(
                name=f"{prefix}-{i:06d}",
                key_material=dict(k.to_json()),
                hashed_adv_key=k.hashed_adv_key_b64,
                is_active=False,
            )
            for i, k in enumerate(keys)
        ],
        batch_size=2000,
    )
    now = time.time()
    batches = []
    for start in range(0, n, BATCH_TRACKERS):
        chunk = list(
            zip(
                trackers[start : start + BATCH_TRACKERS],
                keys[start : start + BATCH_TRACKERS],
                strict=True,
            )
        )
        raw: list[tuple[str, bytes]] = []
        for tracker, key in chunk:
            sim = SimulatedTracker(key.adv_key_bytes)
            # A window of M report periods holds about M reports (periods are 30-90 minutes).
            for p in sim.payloads_between(now - reports_per_tracker * sim.period, now):
                raw.append((tracker.hashed_adv_key, base64.b64decode(p)))
        claim = Claim(
            worker="bench",
            token=uuid.uuid4(),
            request_token=uuid.uuid4(),
            account_id=0,  # only used when recording a failure; the bench fails loudly instead
            account_name="bench",
            fetch_endpoint="",
            anisette_url="",
            trackers=[ClaimedTracker(t.id, t.hashed_adv_key, 0) for t, _ in chunk],
            # What Claim.load_secrets() reads from the database before the fetch.
            key_material={t.id: dict(k.to_json()) for t, k in chunk},
        )
        claim.plan_request(timezone.now())  # what process_claim() does before the request
        batches.append(Batch(claim, raw, {t.hashed_adv_key: k for t, k in chunk}))
    return batches


def _reset(tracker_ids: list[int]) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        # CASCADE: what refers to reports (geofence events, processing state) goes with them.
        cursor.execute("TRUNCATE locations_locationreport CASCADE")
        cursor.execute(
            "UPDATE trackers_tracker SET last_seen_at = NULL, last_position = NULL, "
            "last_accuracy = NULL WHERE id = ANY(%s)",
            [tracker_ids],
        )


def _count() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM locations_locationreport")
        return cursor.fetchone()[0]


# --- the timed stages -----------------------------------------------------------------------
def _decrypt_payload_only(batches: list[Batch]) -> int:
    from trackers.payloads import decrypt_payload

    n = 0
    for b in batches:
        for hashed_id, payload in b.raw:
            decrypt_payload(payload, hashed_id, b.keys[hashed_id])
            n += 1
    return n


def _decrypt_all(batches: list[Batch]) -> int:
    from trackers.fetch import decrypt_all

    n = 0
    for b in batches:
        b.decrypted, failures = decrypt_all(b.claim, b.raw)
        if failures:
            raise RuntimeError(f"{failures} payloads failed to decrypt")
        n += len(b.decrypted)
    return n


def _ingest(batches: list[Batch]) -> tuple[int, int]:
    from django.utils import timezone

    from locations.ingest import ingest

    new = dup = 0
    for b in batches:
        result = ingest(b.decrypted, fetched_at=timezone.now())
        new, dup = new + result.new, dup + result.duplicates
    return new, dup


def _decrypt_and_ingest(batches: list[Batch]) -> int:
    from django.utils import timezone

    from locations.ingest import ingest
    from trackers.fetch import decrypt_all

    new = 0
    for b in batches:
        decrypted, _ = decrypt_all(b.claim, b.raw)
        new += ingest(decrypted, fetched_at=timezone.now()).new
    return new


def _decrypt_and_ingest_pipelined(batches: list[Batch]) -> int:
    from django.utils import timezone

    from locations.ingest import ingest
    from locations.pipeline import BackgroundStore
    from trackers.fetch import decrypt_all

    new = 0
    with BackgroundStore() as store:  # its thread and connection are set up inside the timing
        for b in batches:
            decrypted, _ = decrypt_all(b.claim, b.raw)
            stored = store.submit(ingest, decrypted, fetched_at=timezone.now())
            new += stored.new if stored else 0
        new += store.drain().new
    return new


def _copy_rows(batch: Batch, fetched_at: object):
    for tracker_id, r in batch.decrypted:
        yield (
            tracker_id,
            r.timestamp,
            f"SRID=4326;POINT({r.longitude!r} {r.latitude!r})",
            r.accuracy,
            r.confidence,
            r.status,
            r.payload,
            fetched_at,
        )


def _copy(batches: list[Batch], *, one_statement: bool) -> int:
    from django.db import connection
    from django.utils import timezone

    connection.ensure_connection()
    pg = connection.connection  # the psycopg 3 connection (autocommit: one COPY, one commit)
    n = 0
    with pg.cursor() as cursor:
        groups = [batches] if one_statement else [[b] for b in batches]
        for group in groups:
            fetched_at = timezone.now()
            with cursor.copy(COPY_SQL) as copy:
                for b in group:
                    for row in _copy_rows(b, fetched_at):
                        copy.write_row(row)
                        n += 1
    return n


def _copy_binary(batches: list[Batch]) -> int:
    from django.db import connection
    from django.utils import timezone

    connection.ensure_connection()
    pg = connection.connection
    n = 0
    with pg.cursor() as cursor:
        for b in batches:
            fetched_at = timezone.now()
            with cursor.copy(COPY_BINARY_SQL) as copy:
                copy.set_types(COPY_BINARY_TYPES)
                for tracker_id, r in b.decrypted:
                    point = EWKB_POINT.pack(1, 0x20000001, 4326, r.longitude, r.latitude)
                    copy.write_row(
                        (
                            tracker_id,
                            r.timestamp,
                            point,
                            r.accuracy,
                            r.confidence,
                            r.status,
                            r.payload,
                            fetched_at,
                        )
                    )
                    n += 1
    return n


# --- the measurement ------------------------------------------------------------------------
def measure(
    trackers: int = 1000, reports_per_tracker: int = 25, repeat: int = 5, *, log: bool = True
) -> IngestFigures:
    """Build a fleet in the current database, time every stage `repeat` times, clean up.

    Truncates locations_locationreport: call it on a bench database only.
    """
    say = print if log else (lambda *a, **k: None)
    t0 = time.perf_counter()
    batches = build_fleet(trackers, reports_per_tracker)
    tracker_ids = [t.id for b in batches for t in b.claim.trackers]
    total = sum(len(b.raw) for b in batches)
    say(
        f"generated {total:,} payloads for {trackers:,} trackers in "
        f"{time.perf_counter() - t0:.1f} s (not timed)"
    )
    names = {
        "a0": "(a0) findmy decrypt_payload only",
        "a": "(a) decrypt as the worker (decrypt_all)",
        "b": "(b) ingest(), new rows",
        "dup": "(b') ingest() again: all duplicates",
        "c": "(c) decrypt + ingest, end to end",
        "cp": "(c') decrypt + ingest, pipelined",
        "copy": "COPY, one statement per batch",
        "copy1": "COPY, one statement for all rows",
        "copyb": "COPY binary (EWKB points), per batch",
    }
    stages = {k: Stage(v, total) for k, v in names.items()}

    def run(key: str, fn, check=None) -> None:
        wall, cpu, result = _setup.timed(fn)
        if check is not None and result != check:
            raise RuntimeError(f"{names[key]}: expected {check}, got {result}")
        stages[key].walls.append(wall)
        stages[key].cpus.append(cpu)

    other = _setup.OtherLoad()
    for i in range(repeat):
        run("a0", lambda: _decrypt_payload_only(batches), total)
        run("a", lambda: _decrypt_all(batches), total)
        _reset(tracker_ids)
        run("b", lambda: _ingest(batches), (total, 0))
        run("dup", lambda: _ingest(batches), (0, total))
        _reset(tracker_ids)
        run("copy", lambda: _copy(batches, one_statement=False), total)
        _reset(tracker_ids)
        run("copy1", lambda: _copy(batches, one_statement=True), total)
        if _count() != total:
            raise RuntimeError("COPY stored a different number of rows")
        _reset(tracker_ids)
        run("copyb", lambda: _copy_binary(batches), total)
        if _count() != total:
            raise RuntimeError("binary COPY stored a different number of rows")
        _reset(tracker_ids)
        run("c", lambda: _decrypt_and_ingest(batches), total)
        _reset(tracker_ids)
        run("cp", lambda: _decrypt_and_ingest_pipelined(batches), total)
        say(
            f"  repeat {i + 1}/{repeat}: "
            + ", ".join(f"{k} {stages[k].walls[-1]:.2f} s" for k in names)
        )
    other_cores = other.cores()
    _cleanup(tracker_ids)
    return IngestFigures(trackers, total, len(batches), repeat, stages, tracker_ids, other_cores)


def _cleanup(tracker_ids: list[int]) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        # CASCADE: what refers to reports (geofence events, processing state) goes with them.
        cursor.execute("TRUNCATE locations_locationreport CASCADE")
        cursor.execute("DELETE FROM trackers_tracker WHERE id = ANY(%s)", [tracker_ids])


def report(f: IngestFigures) -> str:
    s = f.stages
    copy = s["copy"].rate
    rows = []
    for key, stage in s.items():
        vs_copy = stage.rate / copy if key not in ("a0", "a") else float("nan")
        rows.append((stage.name, stage.seconds, stage.rate, stage.cpu_share, vs_copy))
    cores = os.cpu_count() or 1
    decrypt = s["a"].rate
    ingest_rate = s["b"].rate
    e2e, pipelined = s["c"].rate, s["cp"].rate
    decrypt_share = 100 * s["a"].seconds / (s["a"].seconds + s["b"].seconds)
    lines = [
        _setup.table(
            ["stage", "median s", "reports/s", "client CPU %", "x COPY"],
            rows,
            title=(
                f"ingest benchmark: {f.trackers:,} trackers, {f.reports:,} reports "
                f"(~{f.reports / f.trackers:.0f} each), {f.batches} batches of up to "
                f"{BATCH_TRACKERS} trackers; median of {f.repeat} repeats; {cores} CPU cores"
            ),
        ),
        "",
        "client CPU % = this Python process's CPU time / wall time; the rest is PostgreSQL.",
        f"Other processes kept {f.other_cores:.2f} of {cores} cores busy meanwhile"
        + (" (figures disturbed)" if f.other_cores > 0.25 else "")
        + ".",
        "x COPY = rate / rate of COPY per batch (same rows, same table, same indexes; COPY does",
        "not move trackers' last-seen positions, ingest() does).",
        "",
        f"decrypt per core (decrypt_all, one process): {decrypt:,.0f} reports/s; "
        f"findmy alone: {s['a0'].rate:,.0f}/s",
        f"ingest() new rows / per-batch COPY: {ingest_rate / copy:.2f} (aim: 0.80 or more)  "
        f"(ingest {ingest_rate:,.0f}/s, COPY {copy:,.0f}/s, one COPY {s['copy1'].rate:,.0f}/s, "
        f"binary COPY {s['copyb'].rate:,.0f}/s)",
        f"duplicate re-ingest: {s['dup'].rate:,.0f} reports/s (every row already stored)",
        f"end to end, one batch after the other: {e2e:,.0f} reports/s, {e2e / decrypt:.2f} of "
        f"decrypt-only; of decrypt+ingest time {decrypt_share:.0f}% is decryption, "
        f"{100 - decrypt_share:.0f}% ingest",
        f"end-to-end (pipelined) / decrypt-only: {pipelined / decrypt:.2f} (aim: 0.90 or more)  "
        f"({pipelined:,.0f} against {decrypt:,.0f} reports/s, one process)",
    ]
    if ingest_rate > decrypt:
        lines.append(
            f"bound: DECRYPTION. ingest() stores {ingest_rate / decrypt:.1f}x faster than one core "
            f"decrypts ({cores} cores decrypt ~{decrypt * cores:,.0f}/s)."
        )
    else:
        lines.append(
            f"bound: INGEST. ingest() stores {ingest_rate:,.0f}/s, slower than one core "
            f"decrypts ({decrypt:,.0f}/s): our own code limits the pipeline."
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trackers", type=int, default=1000)
    parser.add_argument("--reports-per-tracker", type=int, default=25)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    if args.trackers < 1 or args.reports_per_tracker < 1 or args.repeat < 1:
        parser.error("sizes must be positive")
    print(f"code: {_setup.code_version()}")
    print(f"load average at start: {_setup.load()}  ({os.cpu_count()} CPU cores)")
    with _setup.scratch_database(DB_NAME):
        figures = measure(args.trackers, args.reports_per_tracker, args.repeat)
        print()
        print(report(figures))
        print(f"\nload average at end: {_setup.load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
