"""Reverse geocoding: every report gets an address reference, or a recorded reason why not.

The provider's limit (Nominatim: one request per second for the whole application) is far
below a fleet's report rate, so a provider request is the last resort:

1. **Cell cache.** Coordinates are rounded to a grid of GEOCODE_CELL_METERS (cells.py); an
   Address row per cell (looked up at the cell's centre, so it is a property of the cell)
   serves every report that falls in it. A batch's cells are read in one query.
2. **Reuse.** A report within GEOCODE_REUSE_METERS of the address its tracker had last, or of
   any cached address, gets that address. The distance grows with a poor fix's accuracy
   (up to ACCURACY_REUSE_CAP_M): a fix that cannot tell two places apart is no reason to ask.
3. **Lookup.** Otherwise one request for the cell's centre, through the shared rate limiter
   (ratelimit.py) and circuit breaker (circuit.py), retried with backoff for transient
   faults. A cell is leased (CellLookup) so two processes never ask about one place; the
   answer is written to every waiting report of the cell and within the reuse distance.

What is looked up when: the newest report of each tracker and the reports that pending alert
deliveries point to, at once, day and night (`immediate_pass`); everything else by the
backfill (`Backfill`), one in the whole deployment (an advisory lock), in batches with a
pause between, and only inside GEOCODE_BACKFILL_WINDOW (UTC) unless the provider is the
offline one (which sends nothing anywhere). Steps 1-2 cost no request and run for every new
report as soon as it is stored (the sweep in `immediate_pass`).

The modules: cells.py (the grid), geocoders.py (providers), ratelimit.py and circuit.py (the
provider's shared state), resolver.py (cache, reuse and lookups for a batch of reports); this
one holds the passes, the backfill, the long-running geocoder and the figures.

Failures never stop anything: a failed lookup is a failure record (category "geocode"), the
report stays pending (address NULL, no note) and the backfill retries its cell after a
backoff; after GEOCODE_MAX_ATTEMPTS the cell is given up and its reports get the offline
city-level address with a note saying so. While the provider cannot answer (breaker open, a
failed lookup), the newest reports get the offline city-level answer at once, kept in its own
cell namespace ("offline:...") and replaced by the provider's answer in the next backfill.
A place where the provider knows no address (at sea) is cached too (an Address with an empty
label); its reports get a note instead of an address.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection
from django.utils import timezone

from trackers.findmy_client import FailureCategory
from trackers.signals import process_started, process_stopped, report_failure

from . import circuit
from .cells import METERS_PER_DEGREE, OFFLINE_NAMESPACE
from .geocoders import configured_provider
from .models import (
    Address,
    CellLookup,
    GeocodeOutcome,
    GeocoderState,
    GeocodeTotal,
    LocationReport,
    TrackerProcessing,
)
from .resolver import REPORT_COLUMNS, Pending, Resolver, Summary

log = logging.getLogger(__name__)

SWEEP_CHUNK_IDS = 5_000  # new reports are checked against the cache in id ranges this wide
SWEEP_MARGIN_IDS = 10_000  # and this far back again: concurrent inserts commit out of id order
SWEEP_MAX_IDS_PER_PASS = 50_000  # then the pass looks up what it found; the rest next pass
PROCESSING_CHECK_SECONDS = 60  # how often the loop also reads TrackerProcessing.newest_report
IDLE_SLEEP = 1.0  # seconds between passes with nothing to do
# A pass's lookups stop after this long, so new reports and alerts never wait behind a long
# queue of lookups (a cold start of a large fleet); the rest carries over to the next pass.
LOOKUP_SECONDS_PER_PASS = 20.0
BACKFILL_RESTART_SECONDS = 60  # a finished backfill run starts again at most this often
BACKFILL_IDLE_SECONDS = 30  # outside the window (or another process backfills): look again
PENDING_SAMPLE = 20_000  # pending_requests: distinct cells among this many newest pending
# pg_try_advisory_lock key ("geocode" in ASCII): one backfill in the whole deployment.
BACKFILL_LOCK_KEY = 0x67656F636F6465
GAVE_UP_PREFIX = "geocoding gave up"


# --- the backfill window ------------------------------------------------------------------
def parse_window(text: str) -> tuple[int, int]:
    """'19:00-07:00' -> (1140, 420): minutes after midnight, UTC (settings validated it)."""
    start, end = text.split("-")
    return int(start[:2]) * 60 + int(start[3:]), int(end[:2]) * 60 + int(end[3:])


def in_backfill_window(now: dt.datetime | None = None, window: str | None = None) -> bool:
    """Whether `now` (default: the current time) lies in GEOCODE_BACKFILL_WINDOW."""
    start, end = parse_window(window or settings.GEOCODE_BACKFILL_WINDOW)
    moment = (now or timezone.now()).astimezone(dt.UTC)
    minute = moment.hour * 60 + moment.minute
    return start <= minute < end if start < end else minute >= start or minute < end


# --- figures --------------------------------------------------------------------------------
def cache_stats() -> dict[str, int | float]:
    """The geocoding cache's figures, for /metrics, /health, the admin and heartbeats.

    cache_hits: reports answered by an address already cached (their cell's, a cached one
    within GEOCODE_REUSE_METERS, or one looked up for another report of their place);
    reuses: reports that took their tracker's previous address; provider_requests: requests
    sent (each retry counts; offline lookups count too); hit_rate: (hits + reuses) / (hits +
    reuses + requests), 1.0 before anything happened; ungeocoded: reports with neither an
    address nor a note; pending_requests: an estimate of the lookups those still need (their
    distinct cells, counted exactly up to PENDING_SAMPLE pending reports, scaled beyond).
    """
    totals = dict(GeocodeTotal.objects.values_list("outcome", "count"))
    hits = sum(
        totals.get(o, 0)
        for o in (GeocodeOutcome.CACHE_HIT, GeocodeOutcome.NEARBY, GeocodeOutcome.PROPAGATED)
    )
    reuses = totals.get(GeocodeOutcome.REUSE, 0)
    requests = totals.get(GeocodeOutcome.PROVIDER_REQUEST, 0)
    answered = hits + reuses + requests
    ungeocoded = LocationReport.objects.filter(address__isnull=True, geocode_note="").count()
    return {
        "cache_size": Address.objects.count(),
        "cache_hits": hits,
        "reuses": reuses,
        "provider_requests": requests,
        "provider_failures": totals.get(GeocodeOutcome.PROVIDER_FAILURE, 0),
        "hit_rate": (hits + reuses) / answered if answered else 1.0,
        "ungeocoded": ungeocoded,
        "pending_requests": pending_lookups(ungeocoded),
    }


def pending_lookups(ungeocoded: int) -> int:
    """Distinct cells among the newest pending reports (the partial index serves them),
    scaled to all of them: the lookups the backlog needs at most (reuse saves some)."""
    if not ungeocoded:
        return 0
    step = settings.GEOCODE_CELL_METERS / METERS_PER_DEGREE
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT count(*), count(DISTINCT (row_, floor(lon / (%(step)s
                / greatest(cos(radians((row_ + 0.5) * %(step)s)), 1e-9)))))
            FROM (
                SELECT floor(ST_Y(point) / %(step)s) AS row_, ST_X(point) AS lon
                FROM locations_locationreport
                WHERE address_id IS NULL AND geocode_note = ''
                ORDER BY "timestamp" DESC LIMIT %(sample)s
            ) AS pending
            """,
            {"step": step, "sample": PENDING_SAMPLE},
        )
        sampled, cells = cursor.fetchone()
    return round(cells * ungeocoded / sampled) if sampled else 0


def figures(provider: str | None = None) -> dict[str, Any]:
    """The geocoding service's heartbeat figures."""
    provider = provider or settings.GEOCODER
    stats = cache_stats()
    return {
        "provider": provider,
        "cache_size": stats["cache_size"],
        "pending_requests": stats["pending_requests"],
        "ungeocoded": stats["ungeocoded"],
        "hit_rate": round(float(stats["hit_rate"]), 4),
        "backfill_window_open": in_backfill_window(),
        **circuit.view(provider).as_figures(),
    }


# --- at once: new reports against the cache; the newest and alerts' reports looked up --------
def immediate_pass(
    resolver: Resolver,
    *,
    check_processing: bool = True,
    max_ids: int | None = SWEEP_MAX_IDS_PER_PASS,
    carry: set[int] | None = None,
    seconds: float | None = None,
) -> Summary:
    """New reports answered from the cache; the reports of pending alert deliveries and the
    newest report of each tracker looked up, falling back to the offline city level while
    the provider cannot answer.

    `check_processing` also reads TrackerProcessing.newest_report, re-reads the sweep's
    margin and replaces a few offline fallbacks (the loop does it once a minute). `seconds`
    bounds the lookups; what is left waits in `carry` for the next pass.
    """
    newest = sweep(resolver, max_ids=max_ids, margin=check_processing)
    alerts = alert_report_ids()
    ids = (alerts | (carry or set()) | newest_processed_ids(check_processing)) - {
        r.id for r in newest
    }
    need = list({r.id: r for r in newest + resolver.resolve_cheaply(resolver.load(ids))}.values())
    need.sort(key=lambda r: (r.id not in alerts, -r.timestamp.timestamp()))
    deadline = None if seconds is None else time.monotonic() + seconds
    left = resolver.look_up(need, fallback=True, deadline=deadline)
    if carry is not None:
        carry.clear()
        carry.update(r.id for r in left)
    if check_processing and not left:
        upgrade_fallbacks(resolver, deadline)
    return resolver.summary


def sweep(
    resolver: Resolver, *, max_ids: int | None = SWEEP_MAX_IDS_PER_PASS, margin: bool = True
) -> list[Pending]:
    """Check reports stored since the last sweep against the cache; return those that are
    their tracker's newest and still need a lookup. `margin` reads SWEEP_MARGIN_IDS back
    again, for inserts that committed after later ids were swept."""
    state, _ = GeocoderState.objects.get_or_create(provider=resolver.provider.name)
    top = LocationReport.objects.order_by("-id").values_list("id", flat=True).first() or 0
    low = max(min(state.swept_up_to, top) - (SWEEP_MARGIN_IDS if margin else 0), 0)
    limit = top if max_ids is None else min(top, low + max_ids)
    newest: list[Pending] = []
    while low < limit and not resolver.stop.is_set():
        high = min(low + SWEEP_CHUNK_IDS, limit)
        need = resolver.resolve_cheaply(pending_between(resolver, low, high))
        newest += newest_of_their_trackers(need)
        GeocoderState.objects.filter(provider=resolver.provider.name, swept_up_to__lt=high).update(
            swept_up_to=high
        )
        low = high
    return newest


def pending_between(resolver: Resolver, low: int, high: int) -> list[Pending]:
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {REPORT_COLUMNS} FROM locations_locationreport r "  # noqa: S608
            "WHERE r.id > %s AND r.id <= %s AND r.address_id IS NULL AND r.geocode_note = '' "
            'ORDER BY r."timestamp" DESC, r.id DESC',
            [low, high],
        )
        return resolver.pending(cursor.fetchall())


def newest_of_their_trackers(reports: list[Pending]) -> list[Pending]:
    """The reports that are their tracker's newest (ingest keeps Tracker.last_seen_at)."""
    from trackers.models import Tracker

    if not reports:
        return []
    seen = dict(
        Tracker.objects.filter(id__in={r.tracker_id for r in reports}).values_list(
            "id", "last_seen_at"
        )
    )
    return [r for r in reports if seen.get(r.tracker_id) and r.timestamp >= seen[r.tracker_id]]


def alert_report_ids() -> set[int]:
    """The reports that pending alert deliveries point to, still without an answer."""
    from geofences.models import AlertDelivery, DeliveryStatus

    return set(
        AlertDelivery.objects.filter(
            status=DeliveryStatus.PENDING,
            event__report__address__isnull=True,
            event__report__geocode_note="",
        ).values_list("event__report_id", flat=True)[:1000]
    )


def newest_processed_ids(check: bool) -> set[int]:
    """Each tracker's newest processed report still without an answer (a safety net for a
    newest report the sweep missed; it reads one row per tracker, so not every second)."""
    if not check:
        return set()
    return set(
        TrackerProcessing.objects.filter(
            newest_report__address__isnull=True, newest_report__geocode_note=""
        ).values_list("newest_report_id", flat=True)[:5000]
    )


def upgrade_fallbacks(resolver: Resolver, deadline: float | None, limit: int = 20) -> None:
    """Replace a few offline fallbacks by the provider's answers once it answers again, so
    that the newest reports do not wait for the night for their street address."""
    provider = resolver.provider
    if not provider.network or circuit.view(provider.name).open_for_seconds > 0:
        return  # (a cool-down that is over lets the first lookup probe the provider)
    reports = fallback_reports(resolver, None, limit)
    resolver.look_up(resolver.resolve_cheaply(reports), fallback=False, deadline=deadline)


def fallback_reports(
    resolver: Resolver, after: tuple[dt.datetime, int] | None, limit: int | None = None
) -> list[Pending]:
    """Reports holding an offline fallback while the provider is a network one. The few
    fallback addresses come first (the cell's pattern index), then their reports (the
    address index): never a scan of the report table."""
    if not resolver.provider.network:
        return []
    fallbacks = list(
        Address.objects.filter(cell__startswith=OFFLINE_NAMESPACE).values_list("id", flat=True)
    )
    if not fallbacks:
        return []
    where = "r.geocode_note = '' AND r.address_id = ANY(%s)"
    return fetch_reports(resolver, where, after, [fallbacks], limit)


def fetch_reports(
    resolver: Resolver,
    where: str,
    after: tuple[dt.datetime, int] | None,
    params: Iterable = (),
    limit: int | None = None,
) -> list[Pending]:
    """Reports matching `where` (a constant), newest first, after a keyset position."""
    keyset = ' AND (r."timestamp", r.id) < (%s, %s)' if after else ""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {REPORT_COLUMNS} FROM locations_locationreport r "  # noqa: S608
            f"WHERE {where}{keyset} "
            'ORDER BY r."timestamp" DESC, r.id DESC LIMIT %s',
            [*params, *(after or ()), limit or settings.GEOCODE_BACKFILL_BATCH],
        )
        return resolver.pending(cursor.fetchall())


# --- off-peak: the backfill ------------------------------------------------------------------
class Backfill:
    """One backfill run: the reports left pending, newest first (what people look at first,
    and what a retention limit would delete last), in batches of GEOCODE_BACKFILL_BATCH with
    GEOCODE_BACKFILL_PAUSE seconds between them, one run in the whole deployment (a session
    advisory lock), inside GEOCODE_BACKFILL_WINDOW unless `ignore_window` or the provider is
    offline. Offline fallbacks are replaced by the provider's answers first."""

    def __init__(self, resolver: Resolver, *, ignore_window: bool = False) -> None:
        self.resolver = resolver
        self.ignore_window = ignore_window
        self.batches = 0
        self.reason = ""

    def allowed(self) -> bool:
        return self.ignore_window or not self.resolver.provider.network or in_backfill_window()

    def run(self, deadline: float | None = None) -> bool:
        """Backfill until done (True), or until the window closes, the breaker opens, the
        deadline or a stop (False; `reason` says why)."""
        if not self.allowed():
            self.reason = "outside the backfill window"
            return False
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [BACKFILL_LOCK_KEY])
            if not cursor.fetchone()[0]:
                self.reason = "another process is backfilling"
                return False
        try:
            return self.batches_until_done(deadline)
        finally:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [BACKFILL_LOCK_KEY])

    def batches_until_done(self, deadline: float | None) -> bool:
        resolver = self.resolver
        for fetch in (self.fallbacks, self.pending):
            cursor: tuple[dt.datetime, int] | None = None
            while True:
                if not self.may_go_on(deadline):
                    return False
                batch = fetch(cursor)
                if not batch:
                    break
                cursor = (batch[-1].timestamp, batch[-1].id)
                resolver.look_up(resolver.resolve_cheaply(batch), fallback=False, deadline=deadline)
                self.batches += 1
                if resolver.stop.wait(settings.GEOCODE_BACKFILL_PAUSE):
                    self.reason = "stopped"
                    return False
        self.reason = "done"
        return True

    def may_go_on(self, deadline: float | None) -> bool:
        provider = self.resolver.provider
        if self.resolver.stop.is_set():
            self.reason = "stopped"
        elif deadline is not None and time.monotonic() >= deadline:
            self.reason = "deadline"
        elif not self.allowed():
            self.reason = "the backfill window closed"
        elif provider.network and circuit.view(provider.name).open_for_seconds > 0:
            self.reason = "the provider's circuit is open"
        else:
            return True
        return False

    def pending(self, after: tuple[dt.datetime, int] | None) -> list[Pending]:
        return fetch_reports(self.resolver, "r.address_id IS NULL AND r.geocode_note = ''", after)

    def fallbacks(self, after: tuple[dt.datetime, int] | None) -> list[Pending]:
        return fallback_reports(self.resolver, after)


def retry_given_up() -> tuple[int, int]:
    """Forget the given-up cells and clear their reports' notes: the backfill tries again.
    (Finding the reports reads the whole report table: an operator's occasional command.)"""
    cells, _ = CellLookup.objects.filter(gave_up_at__isnull=False).delete()
    reports = LocationReport.objects.filter(geocode_note__startswith=GAVE_UP_PREFIX).update(
        address=None, geocode_note=""
    )
    return cells, reports


# --- the long-running geocoder ---------------------------------------------------------------
class Geocoder:
    """`manage.py geocode_locations`: immediate passes in the main thread, the backfill in a
    second one (its own database connection, so that a long backfill never delays the newest
    reports). The signal handlers only set `stop`; every wait watches it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.stop = threading.Event()
        self.provider = configured_provider()  # ImproperlyConfigured before anything starts

    def figures(self) -> dict[str, Any]:
        return figures(self.provider.name)

    def run_forever(self) -> None:
        process_started.send(
            sender=Geocoder, service_name="geocoding_service", figures=self.figures, key=self
        )
        backfill = threading.Thread(target=self.backfill_loop, name="geocode-backfill")
        backfill.start()
        try:
            self.immediate_loop()
        finally:
            self.stop.set()
            backfill.join()
            process_stopped.send(sender=Geocoder, key=self)

    def resolver(self, suffix: str = "") -> Resolver | None:
        """A resolver for one thread (its first queries may meet a database that is down)."""
        name = f"{self.name}{suffix}"
        return self.guarded(Resolver, name, stop=self.stop, provider=self.provider) or None

    def immediate_loop(self) -> None:
        resolver = None
        carry: set[int] = set()
        checked_at = -float("inf")
        while not self.stop.is_set():
            resolver = resolver or self.resolver()
            if resolver is None:
                continue
            check = time.monotonic() - checked_at >= PROCESSING_CHECK_SECONDS
            before = sum(resolver.summary.outcomes.values())
            done = self.guarded(
                immediate_pass,
                resolver,
                check_processing=check,
                carry=carry,
                seconds=LOOKUP_SECONDS_PER_PASS,
            )
            if not done:
                continue
            checked_at = time.monotonic() if check else checked_at
            if sum(resolver.summary.outcomes.values()) == before and not carry:
                close_old_connections()
                self.stop.wait(IDLE_SLEEP)

    def backfill_loop(self) -> None:
        try:
            resolver = None
            while not self.stop.is_set():
                resolver = resolver or self.resolver(":backfill")
                if resolver is None:
                    continue
                done = self.guarded(Backfill(resolver).run)
                self.stop.wait(BACKFILL_RESTART_SECONDS if done else BACKFILL_IDLE_SECONDS)
        finally:
            connection.close()  # this thread's own connection

    def guarded(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run one step; a database error reconnects, anything else is recorded. Either
        way the loop goes on after a pause (False is returned)."""
        try:
            return fn(*args, **kwargs)
        except DatabaseError:
            log.exception("database error while geocoding; reconnecting")
            connection.close()
        except Exception as exc:
            log.exception("unexpected error while geocoding")
            with contextlib.suppress(DatabaseError):
                report_failure(
                    FailureCategory.UNEXPECTED,
                    f"geocoding: {type(exc).__name__}: {exc}",
                    fingerprint=f"geocoding:{type(exc).__name__}",
                    detail={"worker": self.name},
                )
        self.stop.wait(settings.WORKER_ERROR_BACKOFF)
        return False
