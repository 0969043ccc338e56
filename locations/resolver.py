"""Resolving reports to addresses: cheaply from the cache first, then by provider lookups.

A `Resolver` belongs to one process (or thread). `resolve_cheaply()` answers a batch from the
cell cache, the tracker's previous address and nearby cached addresses, with a handful of
queries for the whole batch; `look_up()` asks the provider about the cells that are left, one
at a time, each leased (CellLookup) so that no two processes ask about one place, through the
shared rate limiter and circuit breaker, with retries for transient faults. Every write is
conditional on the report being as it was read, so any number of resolvers may run at once.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from trackers.findmy_client import FailureCategory
from trackers.signals import report_failure

from . import circuit, generations
from .cells import OFFLINE_NAMESPACE, Cell, cell_of, degrees_around, distance_m, reuse_radius
from .geocoders import (
    OFFLINE,
    Answer,
    ErrorKind,
    Provider,
    ProviderError,
    configured_provider,
    offline_provider,
)
from .models import Address, BreakerState, CellLookup, GeocodeOutcome
from .ratelimit import SharedRateLimiter, ensure_state

log = logging.getLogger(__name__)

REQUEST_ATTEMPTS = 3  # per lookup, for transient faults (each one waits for the rate limit)
CELL_RETRY_BASE_SECONDS = 60  # a failed cell is retried after 1, 2, 4 ... minutes (a day max)
NOTE_NO_ADDRESS = "no address at this place ({provider})"
# Outcomes whose reports were answered by an address already cached (Address.hits counts them).
CACHED_OUTCOMES = frozenset(
    {
        GeocodeOutcome.CACHE_HIT,
        GeocodeOutcome.NEARBY,
        GeocodeOutcome.REUSE,
        GeocodeOutcome.PROPAGATED,
    }
)

REPORT_COLUMNS = """r.id, r.tracker_id, r."timestamp", ST_Y(r.point), ST_X(r.point),
    r.horizontal_accuracy, r.address_id"""

# Each tracker's most recent address of this namespace among its 50 newest reports (a bound,
# so a tracker with a long ungeocoded backlog costs no more than that).
_LAST_ADDRESSES_SQL = """
SELECT t.id, p.id, p.label, p.lat, p.lon
FROM unnest(%(trackers)s::bigint[]) AS t(id)
CROSS JOIN LATERAL (
    SELECT a.id, a.label, ST_Y(a.point) AS lat, ST_X(a.point) AS lon
    FROM (
        SELECT r.address_id, r."timestamp" FROM locations_locationreport r
        WHERE r.tracker_id = t.id ORDER BY r."timestamp" DESC LIMIT 50
    ) AS s
    JOIN locations_address a ON a.id = s.address_id
    WHERE a.label <> '' AND (a.cell LIKE 'offline:%%') = %(offline)s
    ORDER BY s."timestamp" DESC LIMIT 1
) AS p
"""

# For each report, the nearest cached address within its radius; the bounding box is served by
# the GiST index on Address.point, the exact distance is on the sphere.
_NEARBY_SQL = """
SELECT q.id, n.id, n.label, ST_Y(n.point), ST_X(n.point)
FROM (
    SELECT id, radius, dlon, dlat, ST_SetSRID(ST_MakePoint(lon, lat), 4326) AS pt
    FROM unnest(%(ids)s::bigint[], %(lats)s::float8[], %(lons)s::float8[],
                %(radii)s::float8[], %(dlons)s::float8[], %(dlats)s::float8[])
        AS u(id, lat, lon, radius, dlon, dlat)
) AS q
CROSS JOIN LATERAL (
    SELECT a.id, a.label, a.point FROM locations_address a
    WHERE a.point && ST_Expand(q.pt, q.dlon, q.dlat)
        AND a.label <> '' AND (a.cell LIKE 'offline:%%') = %(offline)s
        AND ST_DistanceSphere(a.point, q.pt) < q.radius
    ORDER BY ST_DistanceSphere(a.point, q.pt) LIMIT 1
) AS n
"""

# Only reports still as they were read: another process may have answered them meanwhile.
_APPLY_SQL = """
UPDATE locations_locationreport AS r
SET address_id = u.address_id, geocode_note = u.note
FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[], %s::text[])
    AS u(id, old_address_id, address_id, note)
WHERE r.id = u.id AND r.geocode_note = '' AND r.address_id IS NOT DISTINCT FROM u.old_address_id
RETURNING r.id, r.tracker_id
"""

_HITS_SQL = """
UPDATE locations_address AS a SET hits = a.hits + u.n
FROM unnest(%s::bigint[], %s::bigint[]) AS u(id, n) WHERE a.id = u.id
"""

_TOTALS_SQL = """
INSERT INTO locations_geocodetotal (outcome, count, updated_at)
SELECT o, n, now() FROM unnest(%s::varchar[], %s::bigint[]) AS u(o, n)
ON CONFLICT (outcome) DO UPDATE SET
    count = locations_geocodetotal.count + EXCLUDED.count, updated_at = now()
"""

# Waiting reports in the cell, or within the reuse distance of its centre, take a new answer.
_PROPAGATE_SQL = """
UPDATE locations_locationreport AS r SET address_id = %(address)s, geocode_note = %(note)s
WHERE r.address_id IS NULL AND r.geocode_note = '' AND (
    r.point && ST_MakeEnvelope(%(west)s, %(south)s, %(east)s, %(north)s, 4326)
    OR (%(radius)s > 0
        AND r.point && ST_Expand(ST_SetSRID(ST_MakePoint(%(lon)s, %(lat)s), 4326),
                                 %(dlon)s, %(dlat)s)
        AND ST_DistanceSphere(r.point, ST_SetSRID(ST_MakePoint(%(lon)s, %(lat)s), 4326))
            < %(radius)s))
RETURNING r.tracker_id
"""

_CLAIM_SQL = """
INSERT INTO locations_celllookup (cell, claimed_by, claim_token, lease_until, attempts, last_error)
VALUES (%(cell)s, %(worker)s, %(token)s,
        clock_timestamp() + make_interval(secs => %(lease)s), 0, '')
ON CONFLICT (cell) DO UPDATE SET
    claimed_by = EXCLUDED.claimed_by, claim_token = EXCLUDED.claim_token,
    lease_until = EXCLUDED.lease_until
WHERE (locations_celllookup.lease_until IS NULL
       OR locations_celllookup.lease_until < clock_timestamp())
    AND (locations_celllookup.retry_after IS NULL
         OR locations_celllookup.retry_after <= clock_timestamp())
    AND locations_celllookup.gave_up_at IS NULL
RETURNING claim_token
"""

_CLAIM_REFUSED_SQL = """
SELECT CASE WHEN gave_up_at IS NOT NULL THEN 'gave_up'
            WHEN lease_until >= clock_timestamp() THEN 'leased'
            ELSE 'waiting' END
FROM locations_celllookup WHERE cell = %s
"""

_FAILED_SQL = """
UPDATE locations_celllookup SET
    attempts = attempts + 1, last_error = %(error)s,
    claimed_by = '', claim_token = NULL, lease_until = NULL,
    retry_after = clock_timestamp()
        + make_interval(secs => least(%(base)s * power(2, attempts), 86400)),
    gave_up_at = CASE WHEN attempts + 1 >= %(max)s THEN clock_timestamp() END
WHERE cell = %(cell)s AND claim_token = %(token)s
RETURNING attempts, gave_up_at IS NOT NULL
"""


@dataclass
class Pending:
    """A report without an address (or with an offline fallback to be replaced)."""

    id: int
    tracker_id: int
    timestamp: dt.datetime
    latitude: float
    longitude: float
    accuracy: int
    address_id: int | None  # what it has now: NULL, or the fallback being replaced
    cell: Cell


@dataclass(frozen=True)
class Known:
    """A cached address: its row, its label (empty: no address there) and its point."""

    id: int
    label: str
    latitude: float
    longitude: float


@dataclass(frozen=True)
class Decision:
    report: Pending
    outcome: GeocodeOutcome
    address_id: int | None
    note: str = ""


class Refusal(StrEnum):
    LEASED = "leased"  # another process is looking it up now
    WAITING = "waiting"  # it failed; its retry time has not come
    GAVE_UP = "gave_up"


class Stopped(Exception):
    """A stop was asked for while waiting (rate limit, backoff, a request in flight)."""


class BreakerOpen(Exception):
    """The provider's circuit is open: nobody sends now."""


@dataclass
class Summary:
    """What a resolver did: reports by outcome (requests for the request outcomes)."""

    outcomes: Counter = field(default_factory=Counter)
    looked_up: int = 0  # cells answered by the provider
    breaker_open: bool = False

    def line(self) -> str:
        parts = [f"{k}={v}" for k, v in sorted(self.outcomes.items())]
        tail = " breaker=open" if self.breaker_open else ""
        return " ".join([*parts, f"cells_looked_up={self.looked_up}"]) + tail


class Resolver:
    """Resolves batches of reports for one process: cheaply first, then by lookups.

    `stop` (an Event) ends every wait early: the rate limit, a retry's backoff, a request in
    flight (whose answer is then dropped and whose cell lease is released).
    """

    def __init__(
        self,
        worker: str,
        *,
        stop: threading.Event | None = None,
        provider: Provider | None = None,
    ) -> None:
        self.worker = worker
        self.stop = stop or threading.Event()
        self.provider = provider or configured_provider()
        self.namespace = OFFLINE_NAMESPACE if self.provider.name == OFFLINE else ""
        self.fallback = offline_provider() if self.provider.network else None
        self.limiter = SharedRateLimiter(self.provider.name, settings.GEOCODE_RATE_PER_SECOND)
        self.summary = Summary()
        if self.provider.network:
            ensure_state(self.provider.name)

    def load(self, ids: Iterable[int]) -> list[Pending]:
        """Those of these reports still to answer (no address, or an offline fallback while
        the provider is a network one), newest first, each with its cell."""
        ids = list(ids)
        if not ids:
            return []
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT {REPORT_COLUMNS} FROM locations_locationreport r "  # noqa: S608
                "WHERE r.id = ANY(%s) AND r.geocode_note = '' AND (r.address_id IS NULL OR "
                "(%s AND r.address_id IN (SELECT id FROM locations_address WHERE cell LIKE %s)))"
                ' ORDER BY r."timestamp" DESC, r.id DESC',
                [ids, self.provider.network, OFFLINE_NAMESPACE + "%"],
            )
            return self.pending(cursor.fetchall())

    def pending(self, rows: Iterable[tuple]) -> list[Pending]:
        """Rows of REPORT_COLUMNS as Pending reports of this provider's cells."""
        return [Pending(*row, cell_of(row[3], row[4], namespace=self.namespace)) for row in rows]

    # --- cheap: the cache, the tracker's previous address, nearby addresses ------------------
    def resolve_cheaply(self, reports: list[Pending]) -> list[Pending]:
        """Answer what the cache can; return the reports that need a lookup (in order)."""
        if not reports:
            return []
        keys = {r.cell.key for r in reports}
        cached = self.cached_cells(keys)
        given_up = self.given_up_cells(keys - cached.keys())
        rest = [r for r in reports if r.cell.key not in cached]
        last = self.last_addresses({r.tracker_id for r in rest})
        nearby = self.nearby(rest)
        decisions, need = [], []
        for report in reports:  # in order: each answer is the next report's "previous"
            decision, known = self.decide(report, cached, given_up, last, nearby)
            if decision is None:
                need.append(report)
                continue
            decisions.append(decision)
            if known is not None and known.label:
                last[report.tracker_id] = known
        self.apply(decisions)
        return need

    def decide(
        self,
        report: Pending,
        cached: dict[str, Known],
        given_up: dict[str, tuple[int, str]],
        last: dict[int, Known],
        nearby: dict[int, Known],
    ) -> tuple[Decision | None, Known | None]:
        key = report.cell.key
        if key in cached:
            return self.from_known(report, cached[key], GeocodeOutcome.CACHE_HIT), cached[key]
        previous = last.get(report.tracker_id)
        if previous is not None and self.within(report, previous):
            return Decision(report, GeocodeOutcome.REUSE, previous.id), previous
        if report.id in nearby:
            return Decision(report, GeocodeOutcome.NEARBY, nearby[report.id].id), nearby[report.id]
        if key in given_up:
            return self.give_up(report, *given_up[key]), None
        return None, None

    @staticmethod
    def within(report: Pending, known: Known) -> bool:
        """Close enough to a (non-empty) address to take it without a lookup."""
        distance = distance_m(report.latitude, report.longitude, known.latitude, known.longitude)
        return bool(known.label) and distance < reuse_radius(report.accuracy)

    def from_known(self, report: Pending, known: Known, outcome: GeocodeOutcome) -> Decision:
        if known.label:
            return Decision(report, outcome, known.id)
        return Decision(report, outcome, None, NOTE_NO_ADDRESS.format(provider=self.provider.name))

    def cached_cells(self, keys: set[str]) -> dict[str, Known]:
        """The cached addresses of these cells: one query for the whole batch."""
        rows = Address.objects.filter(cell__in=keys).values_list("id", "cell", "label", "point")
        return {cell: Known(i, label, p.y, p.x) for i, cell, label, p in rows}

    def given_up_cells(self, keys: set[str]) -> dict[str, tuple[int, str]]:
        rows = CellLookup.objects.filter(cell__in=keys, gave_up_at__isnull=False)
        return {c.cell: (c.attempts, c.last_error) for c in rows}

    def last_addresses(self, tracker_ids: set[int]) -> dict[int, Known]:
        """Each tracker's most recent address (of this provider, never a fallback)."""
        if not tracker_ids or not settings.GEOCODE_REUSE_METERS:
            return {}
        with connection.cursor() as cursor:
            cursor.execute(
                _LAST_ADDRESSES_SQL,
                {"trackers": list(tracker_ids), "offline": bool(self.namespace)},
            )
            return {row[0]: Known(*row[1:]) for row in cursor.fetchall()}

    def nearby(self, reports: list[Pending]) -> dict[int, Known]:
        """For each report, the nearest cached address within its reuse radius."""
        radii = {r.id: reuse_radius(r.accuracy) for r in reports}
        reports = [r for r in reports if radii[r.id] > 0]
        if not reports:
            return {}
        boxes = [degrees_around(r.latitude, radii[r.id]) for r in reports]
        with connection.cursor() as cursor:
            cursor.execute(
                _NEARBY_SQL,
                {
                    "ids": [r.id for r in reports],
                    "lats": [r.latitude for r in reports],
                    "lons": [r.longitude for r in reports],
                    "radii": [radii[r.id] for r in reports],
                    "dlons": [b[0] for b in boxes],
                    "dlats": [b[1] for b in boxes],
                    "offline": bool(self.namespace),
                },
            )
            return {row[0]: Known(*row[1:]) for row in cursor.fetchall()}

    # --- writing ---------------------------------------------------------------------------
    def apply(self, decisions: list[Decision]) -> int:
        """Write decisions to the reports still as they were read; count what was written."""
        if not decisions:
            return 0
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                _APPLY_SQL,
                [
                    [d.report.id for d in decisions],
                    [d.report.address_id for d in decisions],
                    [d.address_id for d in decisions],
                    [d.note[:200] for d in decisions],
                ],
            )
            returned = cursor.fetchall()
            written = {row[0] for row in returned}
            # Searches show addresses: their cached pages are renewed once this commits.
            generations.bump_on_commit({row[1] for row in returned})
            done = [d for d in decisions if d.report.id in written]
            hits = Counter(
                d.address_id for d in done if d.address_id and d.outcome in CACHED_OUTCOMES
            )
            if hits:
                cursor.execute(_HITS_SQL, [list(hits), list(hits.values())])
            self.count(Counter(d.outcome for d in done))
        for decision in done:
            decision.report.address_id = decision.address_id
        return len(done)

    def count(self, outcomes: Counter) -> None:
        """Add to the running totals (one upsert) and to this resolver's summary."""
        outcomes = +outcomes
        if not outcomes:
            return
        self.summary.outcomes.update(outcomes)
        with connection.cursor() as cursor:
            cursor.execute(_TOTALS_SQL, [[str(k) for k in outcomes], list(outcomes.values())])

    # --- lookups ---------------------------------------------------------------------------
    def look_up(
        self, reports: list[Pending], *, fallback: bool, deadline: float | None = None
    ) -> list[Pending]:
        """Look up the cells of these reports (in order), one request at a time; return the
        reports not tried because of the stop or the `deadline` (time.monotonic()).

        `fallback`: reports whose cell the provider cannot answer now get the offline
        city-level answer at once (the newest reports: someone may be looking at them).
        """
        by_cell: dict[str, list[Pending]] = defaultdict(list)
        for report in reports:
            by_cell[report.cell.key].append(report)
        queue = list(by_cell.values())
        while queue:
            if self.stop.is_set() or (deadline is not None and time.monotonic() >= deadline):
                return [r for rs in queue for r in rs]
            cell_reports = queue.pop(0)
            try:
                known = self.look_up_cell(cell_reports, fallback=fallback)
            except BreakerOpen:
                self.summary.breaker_open = True
                if fallback:
                    for rest in queue:
                        self.use_fallback(rest)
                return []
            if known is not None and known.label:
                queue = self.absorb(known, queue)
        return []

    def absorb(self, known: Known, queue: list[list[Pending]]) -> list[list[Pending]]:
        """Reports still queued within their reuse radius of a new address take it."""
        taken = [r for rs in queue for r in rs if self.within(r, known)]
        self.apply([Decision(r, GeocodeOutcome.PROPAGATED, known.id) for r in taken])
        ids = {r.id for r in taken}
        return [left for rs in queue if (left := [r for r in rs if r.id not in ids])]

    def look_up_cell(self, reports: list[Pending], *, fallback: bool) -> Known | None:
        """One cell: lease it, ask the provider, write the answer (or the failure)."""
        cell = reports[0].cell
        token, refusal = self.claim(cell.key)
        if token is None:
            if refusal == Refusal.GAVE_UP:
                attempts, error = self.given_up_cells({cell.key}).get(cell.key, (0, ""))
                self.apply([self.give_up(r, attempts, error) for r in reports])
            elif refusal == Refusal.WAITING and fallback:
                self.use_fallback(reports)
            return None  # LEASED: its holder answers these reports too (propagate)
        existing = self.cached_cells({cell.key}).get(cell.key)
        if existing is not None:  # answered by another process since we read the cache
            self.release(cell.key, token)
            self.apply([self.from_known(r, existing, GeocodeOutcome.PROPAGATED) for r in reports])
            return existing
        try:
            answer = self.request(cell)
        except (Stopped, BreakerOpen) as exc:
            self.release(cell.key, token)
            if isinstance(exc, BreakerOpen):
                if fallback:
                    self.use_fallback(reports)
                raise
            return None
        except ProviderError as error:
            self.failed(cell, token, reports, error, fallback=fallback)
            if circuit.view(self.provider.name).state != BreakerState.CLOSED:
                raise BreakerOpen from error
            return None
        return self.answered(cell, token, reports, answer)

    def request(self, cell: Cell) -> Answer:
        """Ask the provider about a cell's centre: breaker, rate limit, retries."""
        if not self.provider.network:
            self.count(Counter({GeocodeOutcome.PROVIDER_REQUEST: 1}))
            return self.provider.reverse(cell.latitude, cell.longitude)
        retrying = Retrying(
            stop=stop_after_attempt(REQUEST_ATTEMPTS),
            wait=wait_exponential_jitter(initial=1, max=10),
            retry=retry_if_exception(
                lambda e: isinstance(e, ProviderError) and e.kind == ErrorKind.TRANSIENT
            ),
            sleep=self.sleep,
            reraise=True,
        )
        return retrying(self.request_once, cell)

    def request_once(self, cell: Cell) -> Answer:
        name = self.provider.name
        if not circuit.allows(name):
            raise BreakerOpen
        if not self.limiter.acquire(self.stop):
            raise Stopped
        self.count(Counter({GeocodeOutcome.PROVIDER_REQUEST: 1}))
        try:
            answer = self.call(self.provider.reverse, cell.latitude, cell.longitude)
        except ProviderError as error:
            self.count(Counter({GeocodeOutcome.PROVIDER_FAILURE: 1}))
            state = circuit.failed(name, error)
            log.warning(
                "geocoding request failed: %s",
                error.message,
                extra={"provider": name, "cell": cell.key, "breaker": state},
            )
            raise
        circuit.succeeded(name)
        return answer

    def call(self, fn: Callable[..., Answer], *args: Any) -> Answer:
        """Run a request in a daemon thread, so that a stop ends the wait within a second."""
        result: dict[str, Any] = {}

        def run() -> None:
            try:
                result["answer"] = fn(*args)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller below
                result["error"] = exc

        thread = threading.Thread(target=run, name="geocode-request", daemon=True)
        thread.start()
        while thread.is_alive():
            thread.join(0.1)
            if thread.is_alive() and self.stop.is_set():
                raise Stopped
        if "error" in result:
            raise result["error"]
        return result["answer"]

    def sleep(self, seconds: float) -> None:
        if self.stop.wait(seconds):
            raise Stopped

    # --- what a lookup ends in -------------------------------------------------------------
    def answered(
        self, cell: Cell, token: uuid.UUID, reports: list[Pending], answer: Answer
    ) -> Known:
        known = self.save_address(cell, answer)
        CellLookup.objects.filter(cell=cell.key, claim_token=token).delete()
        self.summary.looked_up += 1
        first, *others = reports
        self.apply(
            [self.from_known(first, known, GeocodeOutcome.LOOKUP)]
            + [self.from_known(r, known, GeocodeOutcome.PROPAGATED) for r in others]
        )
        self.propagate(cell, known)
        return known

    def save_address(self, cell: Cell, answer: Answer) -> Known:
        address, _ = Address.objects.get_or_create(
            cell=cell.key,
            defaults={
                "provider": answer.provider,
                "label": answer.label,
                "components": answer.components,
                "point": f"SRID=4326;POINT({cell.longitude!r} {cell.latitude!r})",
            },
        )
        return Known(address.id, address.label, cell.latitude, cell.longitude)

    def propagate(self, cell: Cell, known: Known) -> int:
        """Reports waiting in the backlog in this cell, or within the reuse distance of a new
        address, take it now (the GiST index on report points finds them)."""
        radius = float(settings.GEOCODE_REUSE_METERS) if known.label else 0.0
        dlon, dlat = degrees_around(cell.latitude, radius)
        with connection.cursor() as cursor:
            cursor.execute(
                _PROPAGATE_SQL,
                {
                    "address": known.id if known.label else None,
                    "note": ""
                    if known.label
                    else NOTE_NO_ADDRESS.format(provider=self.provider.name),
                    "west": cell.west,
                    "south": cell.south,
                    "east": cell.east,
                    "north": cell.north,
                    "lat": cell.latitude,
                    "lon": cell.longitude,
                    "radius": radius,
                    "dlon": dlon,
                    "dlat": dlat,
                },
            )
            trackers = {row[0] for row in cursor.fetchall()}
            n = cursor.rowcount
            generations.bump_on_commit(trackers)
            if n and known.label:
                cursor.execute(_HITS_SQL, [[known.id], [n]])
        self.count(Counter({GeocodeOutcome.PROPAGATED: n}))
        return n

    def failed(
        self,
        cell: Cell,
        token: uuid.UUID,
        reports: list[Pending],
        error: ProviderError,
        *,
        fallback: bool,
    ) -> None:
        """Record a failed lookup, count it against its cell, and answer what can be.

        A 429 or a refusal is the provider's state, not the place's: the breaker holds
        everybody back, and the cell is not counted (a long outage gives up no place)."""
        if error.opens_breaker_at_once:
            self.release(cell.key, token)
            attempts, gave_up, counted = 0, False, "not counted against the place"
        else:
            attempts, gave_up = self.count_failure(cell.key, token, error)
            counted = f"attempt {attempts} of {settings.GEOCODE_MAX_ATTEMPTS}"
        report_failure(
            FailureCategory.GEOCODE,
            f"reverse geocoding of {cell.latitude:.5f},{cell.longitude:.5f} failed "
            f"({counted}): {error.message}",
            fingerprint=f"geocode:{self.provider.name}:{error.kind}",
            detail={
                "provider": self.provider.name,
                "cell": cell.key,
                "latitude": cell.latitude,
                "longitude": cell.longitude,
                "kind": str(error.kind),
                "attempts": attempts,
                "gave_up": gave_up,
                "reports": [r.id for r in reports[:20]],
            },
        )
        if gave_up:
            self.apply([self.give_up(r, attempts, error.message) for r in reports])
        elif fallback:
            self.use_fallback(reports)

    def give_up(self, report: Pending, attempts: int, error: str) -> Decision:
        """The cell failed GEOCODE_MAX_ATTEMPTS times: the offline city-level address (if
        there is one) and a note saying so; final until an operator retries it."""
        known = self.fallback_address(report)
        city = "; city-level address from offline data" if known is not None else ""
        note = f"geocoding gave up after {attempts} attempts{city}: {error}"
        return Decision(report, GeocodeOutcome.GAVE_UP, known.id if known else None, note[:200])

    def use_fallback(self, reports: list[Pending]) -> None:
        """The provider cannot answer now: the offline answer, replaced by the backfill."""
        decisions = []
        for report in reports:
            known = None if report.address_id else self.fallback_address(report)
            if known is not None:
                decisions.append(Decision(report, GeocodeOutcome.FALLBACK, known.id))
        self.apply(decisions)

    def fallback_address(self, report: Pending) -> Known | None:
        """The offline answer for a report, cached in the offline namespace's cells."""
        if self.fallback is None:
            return None
        cell = cell_of(report.latitude, report.longitude, namespace=OFFLINE_NAMESPACE)
        known = self.cached_cells({cell.key}).get(cell.key)
        if known is None:
            known = self.save_address(cell, self.fallback.reverse(cell.latitude, cell.longitude))
        return known if known.label else None

    # --- the cell lease ----------------------------------------------------------------------
    def claim(self, key: str) -> tuple[uuid.UUID | None, Refusal | None]:
        """Lease a cell for a lookup, or say why not."""
        token = uuid.uuid4()
        lease = settings.GEOCODE_TIMEOUT * REQUEST_ATTEMPTS + 60
        with connection.cursor() as cursor:
            cursor.execute(
                _CLAIM_SQL,
                {"cell": key, "worker": self.worker[:200], "token": token, "lease": lease},
            )
            if cursor.fetchone():
                return token, None
            cursor.execute(_CLAIM_REFUSED_SQL, [key])
            row = cursor.fetchone()
        return None, Refusal(row[0]) if row else Refusal.LEASED

    def release(self, key: str, token: uuid.UUID) -> None:
        """End a lease without a lookup: a row with no attempts goes, others keep theirs."""
        mine = CellLookup.objects.filter(cell=key, claim_token=token)
        mine.filter(attempts=0).delete()
        mine.update(claimed_by="", claim_token=None, lease_until=None)

    def count_failure(self, key: str, token: uuid.UUID, error: ProviderError) -> tuple[int, bool]:
        with connection.cursor() as cursor:
            cursor.execute(
                _FAILED_SQL,
                {
                    "error": error.message[:2000],
                    "base": float(CELL_RETRY_BASE_SECONDS),
                    "max": settings.GEOCODE_MAX_ATTEMPTS,
                    "cell": key,
                    "token": token,
                },
            )
            row = cursor.fetchone()
        return (row[0], row[1]) if row else (0, False)
