"""The latest-location view: each tracker's newest report, its address and the fences it is in.

`locations_latestlocation` is a PostgreSQL materialized view (one row per tracker that has a
report), read by the admin and the API instead of a DISTINCT ON over the report table per
request. django-q2 refreshes it every minute with `REFRESH MATERIALIZED VIEW CONCURRENTLY`
(readers never wait; that needs the unique index on tracker_id).

`maintain()` also repairs it, and /health calls it too, so the view heals without an
operator: a view that is missing, not populated (`WITH NO DATA`), without its unique index,
with other columns, or built from another definition than DEFINITION (its comment carries a
fingerprint of the definition; a view created by hand has none) is dropped and created again;
one older than LATEST_VIEW_MAX_AGE_SECONDS is refreshed. A change of DEFINITION in a deploy
is thereby rolled out by the first refresh after it. An advisory lock keeps concurrent callers
(qcluster workers, web processes serving /health) from repairing it twice at once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.backends.utils import CursorWrapper

log = logging.getLogger(__name__)

VIEW = "locations_latestlocation"
UNIQUE_INDEX = "locations_latestlocation_tracker_uniq"
# pg_try_advisory_xact_lock key ("latest" in ASCII): one repairer or refresher at a time.
LOCK_KEY = 0x6C6174657374

# DISTINCT ON walks report_tracker_time_idx (tracker_id, timestamp DESC) in order and keeps the
# first row of each tracker. No tie-breaker on id: it turns the index scan into a sort of the
# whole table; of two reports of one second, either may show.
# Fences: the confirmed side of active fences (a deactivated fence keeps its last state).
# refreshed_at is the REFRESH statement's start (statement_timestamp(), not the transaction's).
DEFINITION = """
SELECT
    r.tracker_id,
    r.id AS report_id,
    r."timestamp",
    r.point,
    r.horizontal_accuracy,
    a.label AS address,
    ARRAY(
        SELECT s.geofence_id
        FROM geofences_geofencestate AS s
        JOIN geofences_geofence AS g ON g.id = s.geofence_id AND g.is_active
        WHERE s.tracker_id = r.tracker_id AND s.side = 'inside'
        ORDER BY s.geofence_id
    ) AS fence_ids,
    statement_timestamp() AS refreshed_at
FROM (
    SELECT DISTINCT ON (tracker_id)
        id, tracker_id, "timestamp", point, horizontal_accuracy, address_id
    FROM locations_locationreport
    ORDER BY tracker_id, "timestamp" DESC
) AS r
LEFT JOIN locations_address AS a ON a.id = r.address_id
"""
# (name, format_type()) of every column, in order: what the LatestLocation model reads.
COLUMNS = (
    ("tracker_id", "bigint"),
    ("report_id", "bigint"),
    ("timestamp", "timestamp with time zone"),
    ("point", "geometry(Point,4326)"),
    ("horizontal_accuracy", "smallint"),
    ("address", "text"),
    ("fence_ids", "bigint[]"),
    ("refreshed_at", "timestamp with time zone"),
)


def fingerprint(definition: str = DEFINITION) -> str:
    """The view's comment: names the definition it was built from (whitespace aside)."""
    digest = hashlib.sha256(" ".join(definition.split()).encode()).hexdigest()[:16]
    return f"trackerfleet latest-location view {digest}"


def create_statements(definition: str = DEFINITION) -> list[str]:
    """CREATE ... WITH DATA, the unique index REFRESH CONCURRENTLY needs, the fingerprint."""
    return [
        f"CREATE MATERIALIZED VIEW {VIEW} AS {definition} WITH DATA",
        f"CREATE UNIQUE INDEX {UNIQUE_INDEX} ON {VIEW} (tracker_id)",
        f"COMMENT ON MATERIALIZED VIEW {VIEW} IS '{fingerprint(definition)}'",
    ]


# --- what is there ----------------------------------------------------------------------
class Problem(StrEnum):
    NONE = ""
    MISSING = "missing"
    INVALID = "invalid"
    STALE = "stale"


# relkind of pg_class, for the reasons given.
KINDS = {"r": "a table", "v": "a plain view", "p": "a partitioned table", "f": "a foreign table"}


@dataclass
class ViewState:
    """What is in the database under the view's name, and how old its contents are."""

    kind: str | None  # pg_class.relkind: "m" for a materialized view; None: nothing there
    populated: bool = False
    unique_index: bool = False
    columns: tuple[tuple[str, str], ...] = ()
    comment: str | None = None
    rows: int = 0
    refreshed_at: dt.datetime | None = None
    age_seconds: float | None = None  # by the database clock
    reports_exist: bool = False

    def invalid_reason(self) -> str:
        """Why the view must be created again ("" when it need not)."""
        if self.kind != "m":
            return f"{VIEW} is {KINDS.get(self.kind or '', 'another object')}"
        if not self.populated:
            return "not populated (created WITH NO DATA)"
        if self.columns != COLUMNS:
            return "its columns differ from the expected ones"
        if not self.unique_index:
            return f"its unique index on tracker_id ({UNIQUE_INDEX}) is missing or invalid"
        if self.comment != fingerprint():
            return "it was built from another definition"
        return ""

    def problem(self, max_age: float) -> tuple[str, str]:
        """(Problem, reason)."""
        if self.kind is None:
            return Problem.MISSING, f"{VIEW} does not exist"
        if reason := self.invalid_reason():
            return Problem.INVALID, reason
        if self.age_seconds is None:
            if self.reports_exist:
                return Problem.STALE, "empty while reports exist"
            return Problem.NONE, ""
        if self.age_seconds > max_age:
            return Problem.STALE, f"refreshed {self.age_seconds:.0f} s ago (limit {max_age:g} s)"
        return Problem.NONE, ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "refreshed_at": self.refreshed_at,
            "age_seconds": self.age_seconds,
        }


def inspect(cursor: CursorWrapper | None = None) -> ViewState:
    """Read what is there; never raises for a missing or broken view, never changes it."""
    if cursor is None:
        with connection.cursor() as cursor:
            return inspect(cursor)
    cursor.execute(
        "SELECT c.oid, c.relkind, c.relispopulated, obj_description(c.oid, 'pg_class') "
        "FROM pg_class AS c WHERE c.oid = to_regclass(%s)",
        [VIEW],
    )
    row = cursor.fetchone()
    if row is None:
        return ViewState(kind=None)
    oid, kind, populated, comment = row
    cursor.execute(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        [oid],
    )
    columns = tuple((name, kind_) for name, kind_ in cursor.fetchall())
    # What REFRESH ... CONCURRENTLY accepts: unique, valid, plain column, no WHERE.
    cursor.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_index AS i JOIN pg_attribute AS a "
        "ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] "
        "WHERE i.indrelid = %s AND i.indisunique AND i.indisvalid AND i.indnatts = 1 "
        "AND i.indpred IS NULL AND i.indexprs IS NULL AND a.attname = 'tracker_id')",
        [oid],
    )
    state = ViewState(kind, populated, cursor.fetchone()[0], columns, comment)
    if state.invalid_reason():
        return state  # an unpopulated or foreign view cannot be read as ours
    cursor.execute(
        f"SELECT count(*), max(refreshed_at), "  # noqa: S608  (constant names)
        f"extract(epoch FROM clock_timestamp() - max(refreshed_at)), "
        f"EXISTS (SELECT 1 FROM locations_locationreport) FROM {VIEW}"
    )
    state.rows, state.refreshed_at, age, state.reports_exist = cursor.fetchone()
    state.age_seconds = max(float(age), 0.0) if age is not None else None
    return state


# --- repair and refresh -----------------------------------------------------------------
class Action(StrEnum):
    NONE = "none"
    REFRESHED = "refreshed"
    RECREATED = "recreated"
    BUSY = "busy"  # another process holds the lock (and is doing it)
    FAILED = "failed"


@dataclass
class Outcome:
    action: str
    problem: str  # what was found: a Problem
    reason: str
    state: ViewState  # after the action

    @property
    def usable(self) -> bool:
        """Readers get rows (maybe old ones) rather than an error."""
        return not self.state.invalid_reason() and self.state.kind == "m"

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "problem": self.problem or None,
            "reason": self.reason or None,
            **self.state.as_dict(),
        }


def max_age() -> float:
    return float(settings.LATEST_VIEW_MAX_AGE_SECONDS)


def refresh(cursor: CursorWrapper) -> None:
    cursor.execute(f"REFRESH MATERIALIZED VIEW CONCURRENTLY {VIEW}")


def recreate(cursor: CursorWrapper, kind: str | None) -> None:
    """Drop what holds the name (a view of either kind only: a table is data) and create it.

    In one transaction: readers see the old view until the commit, then the new one. No
    CASCADE: a view someone built on top of ours makes the repair fail, loudly, rather than
    disappear.
    """
    if kind == "m":
        cursor.execute(f"DROP MATERIALIZED VIEW {VIEW}")
    elif kind == "v":
        cursor.execute(f"DROP VIEW {VIEW}")
    elif kind is not None:
        raise ValueError(f"{VIEW} is {KINDS.get(kind, 'another object')}: not dropped")
    for statement in create_statements():
        cursor.execute(statement)


def maintain(*, force_refresh: bool = False, timeout: float | None = None) -> Outcome:
    """Repair the view if it is missing or invalid; refresh it if stale (or `force_refresh`).

    `timeout` (seconds) bounds the wait for locks and the statements themselves: /health must
    answer; the schedule will finish the work. Errors are reported in the outcome, not raised.
    """
    before = inspect()
    problem, reason = before.problem(max_age())
    if problem == Problem.NONE and not force_refresh:
        return Outcome(Action.NONE, problem, reason, before)
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [LOCK_KEY])
            if not cursor.fetchone()[0]:
                return Outcome(Action.BUSY, problem, reason, before)
            if timeout is not None:
                milliseconds = int(timeout * 1000)
                cursor.execute(f"SET LOCAL lock_timeout = {milliseconds}")
                cursor.execute(f"SET LOCAL statement_timeout = {milliseconds}")
            # Again under the lock: another process may have repaired it in the meantime.
            state = inspect(cursor)
            problem, reason = state.problem(max_age())
            if problem in (Problem.MISSING, Problem.INVALID):
                recreate(cursor, state.kind)
                action = Action.RECREATED
            elif problem == Problem.STALE or force_refresh:
                refresh(cursor)
                action = Action.REFRESHED
            else:
                action = Action.NONE
            after = inspect(cursor)
            if timeout is not None:
                cursor.execute("SET LOCAL lock_timeout = DEFAULT")
                cursor.execute("SET LOCAL statement_timeout = DEFAULT")
    except (DatabaseError, ValueError) as exc:
        log.warning("latest-location view: %s failed", problem or "refresh", exc_info=True)
        return Outcome(Action.FAILED, problem, f"{reason}; {type(exc).__name__}", inspect())
    if problem:
        log.warning("latest-location view was %s (%s): %s", problem, reason, action)
    return Outcome(action, problem, reason, after)
