"""One full fetch cycle over a simulated fleet with 1, 2 and 4 workers, and the claim's cost.

    .venv/bin/python bench/fetch_cycle.py [--trackers 10000] [--workers 1,2,4] [--repeat 1]
                                          [--claim-fleet 100000] [--claims 50] [--large]

The Find My simulator runs in its own process (it must not share a GIL with the workers),
serving real encrypted reports (24 hours of history: ~24 reports a tracker) for N trackers
created with real keys. Each worker is a separate process that runs
`trackers.worker.run_pass()` until no due tracker is left, with as many simulator accounts
as the largest worker count and no minimum interval between an account's requests.

Measured:
  * wall time of a cycle (all N trackers fetched, decrypted, stored, finished), trackers/s,
    reports/s; where the time went (per-stage wall time summed over workers, and CPU seconds
    of the workers, their PostgreSQL backends and the simulator);
  * `claim_work()` latency (median of --claims claims, each released again) at N and at
    --claim-fleet trackers: at the start of a cycle, half way (also with the `exclude_ids`
    run_pass() passes, if claim_work() takes it) and after it; EXPLAIN ANALYZE of the claim's
    SELECT ... FOR UPDATE SKIP LOCKED;
  * the ingest-only figures of bench/ingest.py at a small size, for comparison.
--large also runs the cycle at --claim-fleet trackers (100,000: several minutes a run).

Runs in its own scratch database (trackerfleet_bench_fetch), dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing as mp
import os
import re
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _setup

DB_NAME = "trackerfleet_bench_fetch"
HISTORY_HOURS = 24
CYCLE_GOAL_SECONDS = 60
CLAIM_GOAL_MS = 10
CLAIM_BUDGET_SECONDS = 10  # per claim measurement: fewer claims (at least 5) when they are slow
# The worker's steps, timed inside each worker process by wrapping these names of
# trackers.worker and trackers.fetch (instrumentation only: the functions run unchanged).
STAGES = ("claim_work", "fetch_with_retries", "decrypt_all", "ingest", "finish", "log_attempt")
STAGE_LABELS = {
    "claim_work": "claim",
    "fetch_with_retries": "fetch (HTTP)",
    "decrypt_all": "decrypt",
    "ingest": "ingest",
    "finish": "finish",
    "log_attempt": "log attempt",
}


# --- the simulator process -------------------------------------------------------------------
def simulator_main(keys_path: str, history_hours: float, queue: mp.Queue, stop: mp.Event) -> None:
    sys.path.insert(0, str(_setup.REPO_ROOT))
    from aiohttp import web

    from findmy_sim.simulator import FindMySimulator

    t0 = time.perf_counter()
    keys = [base64.b64decode(line) for line in Path(keys_path).read_text().split()]
    simulator = FindMySimulator(keys, history_hours=history_hours)
    built = time.perf_counter() - t0

    async def serve() -> None:
        runner = web.AppRunner(simulator.app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        queue.put((runner.addresses[0][1], len(simulator.trackers), built))
        while not stop.is_set():
            await asyncio.sleep(0.2)
        await runner.cleanup()

    asyncio.run(serve())


class Simulator:
    """The simulator in a child process, loaded with the given advertisement keys."""

    def __init__(self, adv_keys: list[bytes]) -> None:
        ctx = mp.get_context("spawn")
        self._keys = tempfile.NamedTemporaryFile("w", suffix=".keys", delete=False)  # noqa: SIM115
        self._keys.write("\n".join(base64.b64encode(k).decode() for k in adv_keys))
        self._keys.close()
        self._queue, self._stop = ctx.Queue(), ctx.Event()
        self.process = ctx.Process(
            target=simulator_main,
            args=(self._keys.name, HISTORY_HOURS, self._queue, self._stop),
            name="findmy-simulator",
            daemon=True,
        )
        self.process.start()
        self.port = 0

    def wait_ready(self) -> tuple[int, float]:
        """(trackers loaded, seconds it took) once the simulator serves; it builds ~800/s."""
        while True:
            try:
                self.port, trackers, built = self._queue.get(timeout=1)
                return trackers, built
            except Empty:
                if not self.process.is_alive():
                    raise RuntimeError("the simulator process died while loading keys") from None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stats(self) -> dict:
        with urllib.request.urlopen(self.base_url + "/_sim/stats", timeout=30) as r:  # noqa: S310
            return json.load(r)

    def cpu_seconds(self) -> float:
        return _setup.proc_cpu_seconds(self.process.pid)

    def stop(self) -> None:
        self._stop.set()
        self.process.join(10)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)
        Path(self._keys.name).unlink(missing_ok=True)


# --- the worker processes --------------------------------------------------------------------
def worker_main(db_name: str, name: str, start: mp.Event, queue: mp.Queue) -> None:
    sys.path.insert(0, str(_setup.REPO_ROOT))
    _setup.setup_django(db_name)
    from django.db import connection

    import trackers.fetch as fetch
    import trackers.worker as worker

    stage_seconds = {s: 0.0 for s in STAGES}
    claim_ms: list[float] = []  # every claim that got work, in order

    def wrap(module, stage: str):
        inner = getattr(module, stage)

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            result = None
            try:
                result = inner(*args, **kwargs)
                return result
            finally:
                elapsed = time.perf_counter() - t0
                stage_seconds[stage] += elapsed
                if stage == "claim_work" and result is not None:
                    claim_ms.append(1000 * elapsed)

        return timed

    for module in (worker, fetch):
        for stage in STAGES:
            if hasattr(module, stage):
                setattr(module, stage, wrap(module, stage))
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]
    queue.put(("ready", name))
    start.wait()
    wall0, cpu0, db0 = time.perf_counter(), time.process_time(), _setup.proc_cpu_seconds(backend)
    try:
        summary = worker.run_pass(name, wait_for_accounts=False)
    except Exception as exc:
        queue.put(("error", name, f"{type(exc).__name__}: {exc}"))
        raise
    queue.put(
        (
            "done",
            name,
            {
                "wall": time.perf_counter() - wall0,
                "cpu": time.process_time() - cpu0,
                "db_cpu": _setup.proc_cpu_seconds(backend) - db0,
                "batches": summary.batches,
                "trackers": summary.trackers,
                "requests": summary.requests,
                "new": summary.new,
                "duplicates": summary.duplicates,
                "failures": summary.failures,
                "outcomes": summary.by_outcome,
                "stages": stage_seconds,
                "claim_ms": claim_ms,
            },
        )
    )
    connection.close()


# --- the fleet ------------------------------------------------------------------------------
def make_keys(n: int) -> list:
    from findmy import KeyPair

    return [KeyPair.new() for _ in range(n)]


def create_trackers(keys: list, first: int = 0) -> None:
    from trackers.models import Tracker

    for start in range(0, len(keys), 5000):
        Tracker.objects.bulk_create(
            [
                Tracker(
                    name=f"bench-{first + start + i:06d}",
                    key_material=dict(k.to_json()),
                    hashed_adv_key=k.hashed_adv_key_b64,
                )
                for i, k in enumerate(keys[start : start + 5000])
            ]
        )


def create_accounts(base_url: str, count: int) -> None:
    from findmy_sim.simulator import account_state
    from trackers.models import AppleAccount

    AppleAccount.objects.all().delete()
    anisette = base_url + "/anisette"
    AppleAccount.objects.bulk_create(
        [
            AppleAccount(
                name=f"bench-{i}",
                state=account_state(anisette, f"bench-{i}@example.com"),
                anisette_url=anisette,
                fetch_endpoint=base_url,
            )
            for i in range(count)
        ]
    )


def reset_queue() -> None:
    """Every tracker due and unleased, no reports, freshly vacuumed."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE locations_locationreport, monitoring_fetchattempt, monitoring_failurerecord"
        )
        cursor.execute(
            "UPDATE trackers_tracker SET last_processed_at = NULL, claimed_by = '', "
            "claim_token = NULL, lease_until = NULL, consecutive_failures = 0, "
            "quarantined_at = NULL, last_seen_at = NULL, last_position = NULL, "
            "last_accuracy = NULL"
        )
        cursor.execute(
            "UPDATE trackers_appleaccount SET status = 'active', request_holder = '', "
            "request_token = NULL, request_lease_until = NULL, last_request_at = NULL, "
            "consecutive_failures = 0, backoff_until = NULL, last_error = ''"
        )
        # The same starting point for every run: no dead tuples from the previous one. (The
        # flush first, or the updates' statistics would arrive after VACUUM's and count again.)
        cursor.execute("SELECT pg_stat_force_next_flush()")
        time.sleep(0.05)
        cursor.execute("VACUUM ANALYZE trackers_tracker, trackers_appleaccount")
        cursor.execute("VACUUM ANALYZE locations_locationreport")


# What a cycle does to each tracker row, batch by batch, each its own transaction: the lease of
# claim_work(), the last-seen move of ingest(), the release of finish(). Every one is a non-HOT
# update (lease_until, last_position and last_processed_at are indexed), so until (auto)vacuum
# runs, the claim index keeps the old entries of every tracker processed so far.
_EMULATED_BATCH = [
    "UPDATE trackers_tracker SET claimed_by = 'bench-emulated', claim_token = gen_random_uuid(), "
    "lease_until = now() + interval '300 seconds' WHERE id = ANY(%s)",
    "UPDATE trackers_tracker SET last_seen_at = now(), "
    "last_position = ST_SetSRID(ST_MakePoint(13.405, 52.52), 4326), last_accuracy = 10 "
    "WHERE id = ANY(%s)",
    "UPDATE trackers_tracker SET last_processed_at = now(), claimed_by = '', claim_token = NULL, "
    "lease_until = NULL, consecutive_failures = 0 WHERE id = ANY(%s)",
]


def emulate_cycle_progress(n: int, batch: int = 64) -> list[int]:
    """Process the next n due trackers' rows as a running cycle would (no fetch, no reports)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id FROM trackers_tracker WHERE is_active AND last_processed_at IS NULL "
            "ORDER BY id LIMIT %s",
            [n],
        )
        ids = [row[0] for row in cursor.fetchall()]
        for start in range(0, len(ids), batch):
            for sql in _EMULATED_BATCH:
                cursor.execute(sql, [ids[start : start + batch]])
    return ids


def dead_tuples() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        # Statistics reach pg_stat_* up to a second late; ask this backend to send its own now.
        cursor.execute("SELECT pg_stat_force_next_flush()")
        time.sleep(0.05)
        cursor.execute(
            "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'trackers_tracker'"
        )
        return cursor.fetchone()[0]


# --- a cycle ----------------------------------------------------------------------------------
@dataclass
class CycleRun:
    trackers: int
    workers: int
    wall: float
    reports: int
    processed: int
    requests: int
    failures: int
    worker_cpu: float
    db_cpu: float
    sim_cpu: float
    machine_busy: float  # cores busy on the whole machine, ours and anybody else's
    max_in_flight: int
    stages: dict[str, float]
    claim_first_ms: float  # median of each worker's first 5 claims
    claim_last_ms: float  # ... and last 5, when the table is full of the cycle's dead rows
    outcomes: dict[str, int] = field(default_factory=dict)


def run_cycle(n_trackers: int, n_workers: int, simulator: Simulator) -> CycleRun:
    from django.db import connection

    reset_queue()
    ctx = mp.get_context("spawn")
    start, queue = ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=worker_main, args=(DB_NAME, f"bench-w{i}", start, queue), daemon=True)
        for i in range(n_workers)
    ]
    for p in procs:
        p.start()
    for _ in procs:
        msg = queue.get(timeout=120)
        if msg[0] != "ready":
            raise RuntimeError(f"worker failed to start: {msg}")
    requests0, sim_cpu0 = simulator.stats()["requests"], simulator.cpu_seconds()
    busy0, total0 = _setup.machine_cpu_seconds()
    t0 = time.perf_counter()
    start.set()
    results = []
    for _ in procs:
        msg = queue.get(timeout=3600)
        if msg[0] != "done":
            raise RuntimeError(f"worker failed: {msg}")
        results.append(msg[2])
    wall = time.perf_counter() - t0
    busy1, total1 = _setup.machine_cpu_seconds()
    sim_cpu = simulator.cpu_seconds() - sim_cpu0
    for p in procs:
        p.join(30)
    stats = simulator.stats()
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM locations_locationreport")
        reports = cursor.fetchone()[0]
        cursor.execute(
            "SELECT count(*) FROM trackers_tracker "
            "WHERE is_active AND last_processed_at IS NOT NULL"
        )
        processed = cursor.fetchone()[0]
    outcomes: dict[str, int] = {}
    for r in results:
        for k, v in r["outcomes"].items():
            outcomes[k] = outcomes.get(k, 0) + v
    return CycleRun(
        trackers=n_trackers,
        workers=n_workers,
        wall=wall,
        reports=reports,
        processed=processed,
        requests=stats["requests"] - requests0,
        failures=sum(r["failures"] for r in results),
        worker_cpu=sum(r["cpu"] for r in results),
        db_cpu=sum(r["db_cpu"] for r in results),
        sim_cpu=sim_cpu,
        machine_busy=(busy1 - busy0) / (total1 - total0) * (os.cpu_count() or 1),
        max_in_flight=max((a["max_in_flight"] for a in stats["accounts"].values()), default=0),
        stages={s: sum(r["stages"][s] for r in results) for s in STAGES},
        claim_first_ms=_setup.median([ms for r in results for ms in r["claim_ms"][:5]]),
        claim_last_ms=_setup.median([ms for r in results for ms in r["claim_ms"][-5:]]),
        outcomes=outcomes,
    )


def cycle_rows(runs: list[list[CycleRun]]) -> list[tuple]:
    rows = []
    for repeats in runs:
        walls = [r.wall for r in repeats]
        mid = sorted(repeats, key=lambda r: r.wall)[len(repeats) // 2]
        wall = _setup.median(walls)
        rows.append(
            (
                f"{mid.trackers:,} trackers, {mid.workers} worker{'s' if mid.workers > 1 else ''}",
                wall,
                f"{min(walls):.1f}-{max(walls):.1f}" if len(walls) > 1 else "-",
                mid.trackers / wall,
                mid.reports / wall,
                f"{mid.processed:,}/{mid.trackers:,}",
                mid.requests,
                mid.failures,
                mid.worker_cpu,
                mid.db_cpu,
                mid.sim_cpu,
                (mid.worker_cpu + mid.db_cpu + mid.sim_cpu) / mid.wall,
                mid.machine_busy,
                mid.max_in_flight,
            )
        )
    return rows


def stage_rows(runs: list[list[CycleRun]]) -> list[tuple]:
    rows = []
    for repeats in runs:
        mid = sorted(repeats, key=lambda r: r.wall)[len(repeats) // 2]
        total = sum(mid.stages.values()) or 1
        rows.append(
            (
                f"{mid.trackers:,} x {mid.workers}w",
                *(f"{mid.stages[s]:.1f} ({100 * mid.stages[s] / total:.0f}%)" for s in STAGES),
                mid.reports / mid.stages["decrypt_all"] if mid.stages["decrypt_all"] else "-",
                mid.reports / mid.stages["ingest"] if mid.stages["ingest"] else "-",
                f"{mid.claim_first_ms:.0f} / {mid.claim_last_ms:.0f}",
            )
        )
    return rows


# --- the claim ---------------------------------------------------------------------------------
@dataclass
class ClaimFigures:
    fleet: int
    state: str
    median_ms: float
    p90_ms: float
    claimed: int
    count: int  # claims timed
    dead_tuples: int  # in trackers_tracker while measuring (pg_stat_user_tables)
    sql_ms: float  # median over claims of all statements' time (client round trip included)
    statements: list[tuple[str, float]]  # label, median ms
    plan: list[str]

    @property
    def select_ms(self) -> float:
        return next(
            (ms for label, ms in self.statements if label == "SELECT FOR UPDATE tracker"),
            float("nan"),
        )


def _statement_label(sql: str) -> str:
    s = sql.lstrip().upper()
    verb = s.split(None, 1)[0] if s else "?"
    if verb == "SELECT" and "FOR UPDATE" in s:
        verb = "SELECT FOR UPDATE"
    from_ = s.split(" FROM ", 1)[1] if verb.startswith("SELECT") and " FROM " in s else s
    table = next((t for t in ("TRACKERS_APPLEACCOUNT", "TRACKERS_TRACKER") if t in from_[:60]), "?")
    return f"{verb} {table.lower().replace('trackers_', '')}"


def measure_claims(fleet: int, state: str, n: int, **claim_kwargs: object) -> ClaimFigures:
    """Time n claims (each released again), each statement on its own, and EXPLAIN the SELECT."""
    from django.db import connection, transaction

    from trackers.queue import claim_work, release

    current: list[tuple[str, float]] = []
    captured: dict[str, tuple[str, object]] = {}

    def timing(execute, sql, params, many, context):
        t0 = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            label = _statement_label(sql)
            current.append((label, 1000 * (time.perf_counter() - t0)))
            captured.setdefault(label, (sql, params))

    dead = dead_tuples()
    times, claimed, per_claim = [], 0, []
    budget = time.perf_counter() + CLAIM_BUDGET_SECONDS
    for i in range(n):
        if i >= 5 and time.perf_counter() > budget:
            break
        current.clear()
        with connection.execute_wrapper(timing):
            t0 = time.perf_counter()
            claim = claim_work("bench-claim", **claim_kwargs)
            times.append(1000 * (time.perf_counter() - t0))
        per_claim.append(list(current))
        if claim is not None:
            claimed = len(claim.trackers)
            release(claim)
    labels = [label for label, _ in per_claim[-1]]
    statements = [
        (label, _setup.median([c[i][1] for c in per_claim if len(c) > i]))
        for i, label in enumerate(labels)
    ]
    plan: list[str] = []
    if "SELECT FOR UPDATE tracker" in captured:
        sql, params = captured["SELECT FOR UPDATE tracker"]
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
            plan = [row[0] for row in cursor.fetchall()]
    times.sort()
    return ClaimFigures(
        fleet,
        state,
        _setup.median(times),
        times[int(0.9 * (len(times) - 1))],
        claimed,
        len(times),
        dead,
        _setup.median([sum(ms for _, ms in c) for c in per_claim]),
        statements,
        plan,
    )


def claim_suite(fleet: int, n: int) -> list[ClaimFigures]:
    """The claim at the start of a cycle, half way through it, and once it is over (idle)."""
    from trackers.queue import database_now

    reset_queue()
    out = [measure_claims(fleet, "fresh: all due, vacuumed", n)]
    pass_start = database_now()
    emulate_cycle_progress(fleet // 2)
    out.append(measure_claims(fleet, "mid-cycle: half done", n))
    # run_pass() leaves out what the pass already did by time (not_since), and by id only
    # the few trackers that failed in this pass.
    out.append(
        measure_claims(
            fleet, "mid-cycle, as run_pass() calls it", n, not_since=pass_start, exclude_ids=set()
        )
    )
    emulate_cycle_progress(fleet)
    out.append(measure_claims(fleet, "cycle over: none due", n))
    reset_queue()
    return out


def claim_rows(figures: list[ClaimFigures]) -> list[tuple]:
    return [
        (
            f"{f.fleet:,} trackers, {f.state}",
            f.median_ms,
            f.p90_ms,
            f.count,
            f.claimed,
            f.dead_tuples,
            len(f.statements),
            f.sql_ms,
            f.median_ms - f.sql_ms,
            f.select_ms,
            _exec_ms(f.plan),
        )
        for f in figures
    ]


def _abridge(line: str) -> str:
    """Shorten the long id arrays a plan may quote ('{1,2,3,...}') to their first few ids."""

    def short(m: re.Match) -> str:
        ids = m.group(1).split(",")
        return "'{" + ",".join(ids[:5]) + f",... {len(ids):,} ids}}'"

    return re.sub(r"'\{([0-9,]{200,})\}'", short, line)


def _exec_ms(plan: list[str]) -> float:
    """Planning + execution time from EXPLAIN ANALYZE output."""
    total = float("nan")
    for line in plan:
        if line.startswith(("Planning Time:", "Execution Time:")):
            ms = float(line.split()[2])
            total = ms if total != total else total + ms
    return total


# --- main ---------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trackers", type=int, default=10_000, help="fleet of the cycle runs")
    parser.add_argument("--workers", default="1,2,4", help="worker counts, comma-separated")
    parser.add_argument("--accounts", type=int, default=0, help="default: the largest worker count")
    parser.add_argument("--repeat", type=int, default=1, help="cycles per worker count (median)")
    parser.add_argument(
        "--claim-fleet", type=int, default=100_000, help="second fleet size for the claim (0: skip)"
    )
    parser.add_argument("--claims", type=int, default=50, help="claims per measurement")
    parser.add_argument(
        "--large", action="store_true", help="also run the cycles at --claim-fleet trackers"
    )
    parser.add_argument("--ingest-trackers", type=int, default=200)
    parser.add_argument("--ingest-repeat", type=int, default=3)
    parser.add_argument("--show-plans", action="store_true", help="print every EXPLAIN ANALYZE")
    args = parser.parse_args(argv)
    workers = [int(w) for w in args.workers.split(",")]
    accounts = args.accounts or max(workers)
    if args.claim_fleet and args.claim_fleet <= args.trackers:
        parser.error("--claim-fleet must be larger than --trackers (or 0)")

    started = time.perf_counter()
    print(f"code: {_setup.code_version()}")
    print(f"load average at start: {_setup.load()}  ({os.cpu_count()} CPU cores)")
    with _setup.scratch_database(DB_NAME):
        from bench import ingest as ingest_bench

        keys = make_keys(args.trackers)
        simulator = Simulator([k.adv_key_bytes for k in keys])
        try:
            t0 = time.perf_counter()
            create_trackers(keys)
            print(f"{args.trackers:,} trackers created in {time.perf_counter() - t0:.1f} s")
            n, built = simulator.wait_ready()
            print(f"simulator: {n:,} trackers loaded in {built:.1f} s, on {simulator.base_url}")
            create_accounts(simulator.base_url, accounts)

            claims = claim_suite(args.trackers, args.claims)
            print(
                f"claim at {args.trackers:,}: {', '.join(f'{c.median_ms:.1f} ms' for c in claims)}"
            )
            cycles: list[list[CycleRun]] = []
            for w in workers:
                runs = []
                for i in range(args.repeat):
                    run = run_cycle(args.trackers, w, simulator)
                    runs.append(run)
                    print(
                        f"cycle {args.trackers:,} trackers, {w} worker(s), run {i + 1}: "
                        f"{run.wall:.1f} s, {run.reports:,} reports, outcomes {run.outcomes}"
                    )
                cycles.append(runs)
        finally:
            simulator.stop()

        if args.claim_fleet:
            t0 = time.perf_counter()
            more = make_keys(args.claim_fleet - args.trackers)
            create_trackers(more, first=args.trackers)
            print(f"fleet grown to {args.claim_fleet:,} in {time.perf_counter() - t0:.1f} s")
            big = claim_suite(args.claim_fleet, args.claims)
            print(
                f"claim at {args.claim_fleet:,}: {', '.join(f'{c.median_ms:.1f} ms' for c in big)}"
            )
            claims += big
            if args.large:
                simulator = Simulator([k.adv_key_bytes for k in keys + more])
                try:
                    n, built = simulator.wait_ready()
                    print(f"simulator: {n:,} trackers loaded in {built:.1f} s")
                    create_accounts(simulator.base_url, accounts)
                    for w in workers:
                        run = run_cycle(args.claim_fleet, w, simulator)
                        print(
                            f"cycle {args.claim_fleet:,} trackers, {w} worker(s): {run.wall:.1f} s"
                        )
                        cycles.append([run])
                finally:
                    simulator.stop()

        print(f"ingest-only measurement ({args.ingest_trackers} trackers x 25 reports) ...")
        ingest_figures = ingest_bench.measure(
            args.ingest_trackers, 25, args.ingest_repeat, log=False
        )
        print()
        print(report(args, cycles, claims, ingest_figures, accounts))
        total = time.perf_counter() - started
        print(f"\nload average at end: {_setup.load()}; total run {total:.0f} s")
    return 0


def report(args, cycles, claims, ingest_figures, accounts) -> str:
    cores = os.cpu_count() or 1
    out = [
        _setup.table(
            [
                "cycle",
                "wall s",
                "range",
                "trackers/s",
                "reports/s",
                "processed",
                "requests",
                "failed",
                "worker CPU s",
                "their PG CPU s",
                "sim CPU s",
                "cores busy",
                "machine busy",
                "max req/acct",
            ],
            cycle_rows(cycles),
            title=(
                f"FETCH CYCLE: median of {args.repeat} run(s) each; {accounts} simulator accounts, "
                f"no request interval; {HISTORY_HOURS} h of reports per tracker; {cores} CPU cores"
            ),
        ),
        "cores busy = (worker + their PostgreSQL backends + simulator CPU seconds) / wall; machine",
        "busy = cores busy on the whole machine (other processes included: compare the two);",
        "max req/acct = most requests one account had in flight at once (must be 1).",
        "",
        _setup.table(
            [
                "cycle",
                *(STAGE_LABELS[s] for s in STAGES),
                "decrypt/s",
                "ingest/s",
                "claim ms first/last",
            ],
            stage_rows(cycles),
            title="WHERE THE TIME GOES: wall seconds in each step, summed over workers (share)",
        ),
        "decrypt/s and ingest/s: reports per second of time spent in that step (per worker);",
        "claim ms first/last: median of each worker's first 5 and last 5 claims of the cycle.",
        "",
        _setup.table(
            [
                "claim_work()",
                "median ms",
                "p90 ms",
                "claims",
                "claimed",
                "dead rows",
                "statements",
                "in SQL ms",
                "outside SQL ms",
                "SELECT ms",
                "EXPLAIN plan+exec ms",
            ],
            claim_rows(claims),
            title=(
                f"CLAIM: up to {args.claims} claims each (fewer if they take over "
                f"{CLAIM_BUDGET_SECONDS} s), every claim released again"
            ),
        ),
        "in SQL ms: the claim's statements, round trips included (median per claim); outside SQL:",
        "the rest (Django building queries, Fernet-decrypting key material and account state,",
        "BEGIN/COMMIT). SELECT ms: the trackers' SELECT ... FOR UPDATE SKIP LOCKED alone;",
        "EXPLAIN plan+exec ms: its planning + execution time on the server. dead rows: dead",
        "tuples in trackers_tracker (mid-cycle and cycle over: the row updates of claim_work(),",
        "ingest() and finish() replayed batch by batch, no VACUUM since, as in a running cycle).",
        "",
    ]
    for c in claims:
        if c.fleet == claims[-1].fleet:
            out.append(
                f"statements of a claim at {c.fleet:,} trackers, {c.state} (median ms): "
                + ", ".join(f"{label} {ms:.2f}" for label, ms in c.statements)
            )
    out.append("")
    shown = claims if args.show_plans else [c for c in claims if c.fleet == claims[-1].fleet]
    for c in shown:
        out.append(f"EXPLAIN ANALYZE, claim SELECT at {c.fleet:,} trackers, {c.state}:")
        out += ["    " + _abridge(line) for line in c.plan]
    s = ingest_figures.stages
    out += [
        "",
        _setup.table(
            ["ingest-only (bench/ingest.py measure)", "reports/s"],
            [
                ("decrypt, one core (decrypt_all)", s["a"].rate),
                ("ingest() per 64-tracker batch", s["b"].rate),
                ("ingest() again, all duplicates", s["dup"].rate),
                ("decrypt + ingest, one process", s["c"].rate),
                ("COPY per batch (baseline)", s["copy"].rate),
            ],
            title=(
                f"INGEST ONLY: {ingest_figures.trackers} trackers, {ingest_figures.reports:,} "
                f"reports, median of {ingest_figures.repeat}"
            ),
        ),
        "",
    ]
    out += verdicts(cycles, claims, ingest_figures, cores)
    return "\n".join(out)


def verdicts(cycles, claims, ingest_figures, cores: int) -> list[str]:
    lines = ["VERDICT"]
    small = [r for r in cycles if r[0].trackers == min(c[0].trackers for c in cycles)]
    best = min(small, key=lambda runs: _setup.median([r.wall for r in runs]))
    wall = _setup.median([r.wall for r in best])
    n = best[0].trackers
    complete = all(r.processed == r.trackers for runs in cycles for r in runs)
    goal = "MET" if wall < CYCLE_GOAL_SECONDS and complete and n >= 10_000 else "NOT MET"
    lines.append(
        f"  {n:,}-tracker cycle under {CYCLE_GOAL_SECONDS} s: {goal} "
        f"(best {wall:.1f} s with {best[0].workers} worker(s)"
        + ("" if complete else "; some cycle left trackers unprocessed")
        + ")"
    )
    largest = max(c.fleet for c in claims)
    working = [c for c in claims if c.fleet == largest and c.claimed]
    idle = [c for c in claims if c.fleet == largest and not c.claimed]
    worst = max((c.median_ms for c in working), default=float("nan"))
    verdict = "MET" if worst < CLAIM_GOAL_MS else "NOT MET"
    lines.append(
        f"  claim in single-digit ms at {largest:,} trackers: {verdict} "
        f"(median {worst:.1f} ms in the worst state with due work"
        + (f"; an empty claim when nothing is due: {idle[0].median_ms:.1f} ms" if idle else "")
        + ")"
    )
    mid = sorted(best, key=lambda r: r.wall)[len(best) // 2]
    dec, ing = mid.stages["decrypt_all"], mid.stages["ingest"]
    fetch = mid.stages["fetch_with_retries"]
    bound = max(
        (("decryption", dec), ("the fetch (simulator + HTTP + findmy)", fetch), ("ingest", ing)),
        key=lambda kv: kv[1],
    )[0]
    e2e = ingest_figures.stages["c"].rate
    lines.append(
        f"  best cycle: {mid.reports / mid.wall:,.0f} reports/s with {mid.workers} worker(s) on "
        f"{cores} cores; one process decrypting+ingesting alone does {e2e:,.0f}/s; the largest "
        f"step in the workers is {bound}."
    )
    return lines


if __name__ == "__main__":
    sys.exit(main())
