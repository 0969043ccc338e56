"""Read replicas: the database router, each replica's health, and "read your own writes".

Which reads go to a replica. Only those of read-only API requests: a GET, HEAD or OPTIONS
under /api/v1/ (`REPLICA_READ_PATH_PREFIXES`) runs inside a read context that
`ReplicaMiddleware` opens; every other read (workers, commands, qcluster, the admin, health
and status pages, unsafe requests) goes to the primary. The workers' reads are part of their
leases and queues (a claim must see the row it locks), the admin edits what it shows, and an
unsafe request must see what it just wrote; so a context flag is simpler and safer than a
list of models that may be stale. Even inside the context these stay on the primary:

* authentication and permissions (auth, sessions, knox tokens and the API's token details):
  a revoked token or permission takes effect at once, not after the replica's lag;
* django_q, the admin's log;
* any read while the primary is inside a transaction (`atomic`): it may depend on it;
* every read after the request wrote something (a GET may write): it reads its own write;
* related objects of an instance, which are read from where the instance came from.

Read your own writes. After an unsafe request (POST, PUT, PATCH, DELETE) by an authenticated
user, that user reads from the primary for `REPLICA_STICKY_SECONDS`: a key per user id in the
default cache (Redis: every worker process on every machine sees it), set before the answer
leaves; and a short cookie for clients that keep cookies (and for anonymous writers).

Health. A replica is used only when a check says so: it answers, it is in recovery (a promoted
server no longer follows the primary), and it is not behind the primary by more than
`REPLICA_MAX_LAG_SECONDS`. Lag: zero when it has replayed the primary's current WAL position
(an idle primary writes no WAL, so an old replay timestamp alone is no lag); otherwise the age
of the last transaction it replayed. The verdict is kept per process for a couple of seconds
(longer for a replica that is down) so requests do not pay for checks; connecting has a
2 s timeout (`connect_timeout`, settings.py).

A replica that fails in the middle of a request (stopped between the check and the query, a
query cancelled by recovery): the middleware sees an error on a replica connection that the
request used, marks the replica down in this process, and runs the view once more on the
primary. Safe methods only, which is all that ever reads from replicas.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from django.db.models import Model
from django.http import HttpRequest, HttpResponse

log = logging.getLogger(__name__)

REPLICA_READ_PATH_PREFIXES = ("/api/v1/",)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Apps and models always read from the primary, even in a read context (see the docstring).
PRIMARY_ONLY_APPS = frozenset({"auth", "contenttypes", "sessions", "knox", "admin", "django_q"})
PRIMARY_ONLY_MODELS = frozenset({"api.tokendetails"})
STICKY_COOKIE = "primary_reads"
# Seconds a verdict is kept in this process: a healthy replica is checked again soon (its lag
# moves); a replica that is down is left alone longer, so that a host that does not answer
# costs one connect timeout per interval, not one per request.
UP_VERDICT_SECONDS = 2.0
DOWN_VERDICT_SECONDS = 5.0


def replica_aliases() -> list[str]:
    """The database aliases of the configured replicas (settings.DATABASE_REPLICAS)."""
    return list(getattr(settings, "DATABASE_REPLICAS", ()))


# --- health -----------------------------------------------------------------------------
@dataclass(frozen=True)
class ReplicaStatus:
    """One check of one replica. `usable`: reads may go there."""

    alias: str
    state: str  # up, lagging, down, not_in_recovery
    lag_seconds: float | None
    detail: str
    expires: float = 0.0  # time.monotonic() after which it is checked again

    @property
    def usable(self) -> bool:
        return self.state == "up"

    def as_dict(self) -> dict[str, Any]:
        lag = None if self.lag_seconds is None else round(self.lag_seconds, 3)
        return {"status": self.state, "lag_seconds": lag, "detail": self.detail}


_verdicts: dict[str, ReplicaStatus] = {}


def _primary_wal_position() -> str | None:
    """The primary's current WAL position, or None when it cannot say (down, in recovery)."""
    try:
        with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
            cursor.execute("SELECT pg_current_wal_lsn()::text")
            return cursor.fetchone()[0]
    except DatabaseError:
        return None


def _verdict(alias: str, state: str, lag: float | None, detail: str) -> ReplicaStatus:
    seconds = UP_VERDICT_SECONDS if state in {"up", "lagging"} else DOWN_VERDICT_SECONDS
    return ReplicaStatus(alias, state, lag, detail, time.monotonic() + seconds)


def check_replica(alias: str) -> ReplicaStatus:
    """Ask the replica now (and the primary where its WAL is): no cached verdict."""
    max_lag = settings.REPLICA_MAX_LAG_SECONDS
    primary_lsn = _primary_wal_position()  # first: a replica at or past it was current then
    conn = connections[alias]
    try:
        with conn.cursor() as cursor:
            cursor.execute(
                """
                SELECT pg_is_in_recovery(),
                       CASE WHEN %s::pg_lsn IS NOT NULL
                            THEN pg_last_wal_replay_lsn() >= %s::pg_lsn
                            ELSE pg_last_wal_replay_lsn() >= pg_last_wal_receive_lsn() END,
                       EXTRACT(EPOCH FROM clock_timestamp() - pg_last_xact_replay_timestamp())
                """,
                [primary_lsn, primary_lsn],
            )
            in_recovery, current, replay_age = cursor.fetchone()
    except DatabaseError as exc:
        # A broken connection must not be reused by the next check or request.
        with contextlib.suppress(DatabaseError):
            conn.close()
        return _verdict(alias, "down", None, f"no answer ({type(exc).__name__})")
    if not in_recovery:
        return _verdict(alias, "not_in_recovery", None, "not in recovery: not following a primary")
    if current:
        return _verdict(alias, "up", 0.0, "replayed everything the primary wrote")
    if replay_age is None:
        return _verdict(alias, "lagging", None, "behind the primary; no transaction replayed yet")
    lag = max(float(replay_age), 0.0)
    if lag > max_lag:
        return _verdict(alias, "lagging", lag, f"behind the primary by {lag:.1f} s (> {max_lag} s)")
    return _verdict(alias, "up", lag, f"behind the primary by {lag:.1f} s")


def replica_status(alias: str, *, fresh: bool = False) -> ReplicaStatus:
    """The replica's verdict, checked again when this process's one has expired."""
    cached = _verdicts.get(alias)
    if not fresh and cached is not None and time.monotonic() < cached.expires:
        return cached
    verdict = check_replica(alias)
    if cached is None or cached.usable != verdict.usable:
        log.log(
            logging.INFO if verdict.usable else logging.WARNING,
            "replica %s is %s: %s",
            alias,
            verdict.state,
            verdict.detail,
        )
    _verdicts[alias] = verdict
    return verdict


def mark_down(alias: str, detail: str) -> None:
    """Skip the replica in this process until it is checked again (a query failed on it)."""
    log.warning("replica %s marked down: %s", alias, detail)
    _verdicts[alias] = _verdict(alias, "down", None, detail)


def forget_verdicts() -> None:
    """Check every replica again at its next use (tests, after starting or stopping one)."""
    _verdicts.clear()


def usable_replicas() -> list[str]:
    return [alias for alias in replica_aliases() if replica_status(alias).usable]


def replica_report() -> dict[str, dict[str, Any]]:
    """Each replica's status, lag and detail (this process's verdict, at most a few seconds
    old): for /health."""
    return {alias: replica_status(alias).as_dict() for alias in replica_aliases()}


# --- read your own writes ---------------------------------------------------------------
def sticky_key(user_id: object) -> str:
    return f"replicas:primary-reads:{user_id}"


def _user_id(request: HttpRequest) -> object | None:
    """The authenticated user's id, or None (anonymous, or not authenticated yet: DRF
    authenticates inside the view and then sets request.user)."""
    user = getattr(request, "user", None)
    try:
        return user.pk if user is not None and user.is_authenticated else None
    except DatabaseError:
        return None


def remember_writer(request: HttpRequest, response: HttpResponse) -> None:
    """After an unsafe request: its user reads from the primary for REPLICA_STICKY_SECONDS."""
    seconds = settings.REPLICA_STICKY_SECONDS
    if not seconds:
        return
    user_id = _user_id(request)
    if user_id is not None:
        cache.set(sticky_key(user_id), 1, seconds)
    response.set_cookie(
        STICKY_COOKIE,
        "1",
        max_age=seconds,
        httponly=True,
        samesite="Lax",
        secure=settings.SESSION_COOKIE_SECURE,
    )


def recently_wrote(user_id: object) -> bool:
    return bool(settings.REPLICA_STICKY_SECONDS and cache.get(sticky_key(user_id)))


# --- the read context -------------------------------------------------------------------
_round_robin = itertools.count()


@dataclass
class ReadContext:
    """What one read-only API request may read from, decided at its first routed read."""

    request: HttpRequest
    replicas_allowed: bool = True
    chosen: str | None = None  # the replica this request reads from
    used: set[str] = field(default_factory=set)
    sticky: bool = False
    checked_user: object | None = None

    def primary_required(self) -> bool:
        if not self.replicas_allowed or self.sticky:
            return True
        if self.request.COOKIES.get(STICKY_COOKIE):
            self.sticky = True
            return True
        user_id = _user_id(self.request)
        # Not remembered while anonymous: DRF may authenticate the request later.
        if user_id is not None and user_id != self.checked_user:
            self.checked_user = user_id
            self.sticky = recently_wrote(user_id)
        return self.sticky

    def replica(self) -> str | None:
        """The replica for this read, or None for the primary."""
        if self.primary_required():
            return None
        if self.chosen is None or not replica_status(self.chosen).usable:
            usable = usable_replicas()
            if not usable:
                self.chosen = None
                return None
            self.chosen = usable[next(_round_robin) % len(usable)]
        self.used.add(self.chosen)
        return self.chosen


_context: ContextVar[ReadContext | None] = ContextVar("replica_read_context", default=None)


def current_read_alias() -> str | None:
    """The replica the current request has read from so far, or None (the primary only)."""
    context = _context.get()
    return context.chosen if context is not None and context.used else None


def ensure_replayed(position: Callable[[], int | None]) -> None:
    """In a read-only API request about to read from a replica: unless that replica has
    replayed the primary's WAL up to `position()` (bytes; e.g. where the search cache's
    counters say the newest rows of a search were committed), the rest of the request reads
    from the primary. `position` is asked only when a replica would be read."""
    context = _context.get()
    if context is None or connections[DEFAULT_DB_ALIAS].in_atomic_block:
        return
    alias = context.replica()
    if alias is None:
        return
    needed = position()
    if not needed:
        return
    try:
        with connections[alias].cursor() as cursor:
            cursor.execute("SELECT (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint")
            replayed = cursor.fetchone()[0]
    except DatabaseError as exc:
        mark_down(alias, f"replay position unreadable ({type(exc).__name__})")
        replayed = None
    if replayed is None or replayed < needed:
        context.replicas_allowed = False


class ReplicaRouter:
    """Reads in a read context go to a usable replica; everything else to the primary."""

    def db_for_read(self, model: type[Model], **hints: Any) -> str | None:
        instance = hints.get("instance")
        if instance is not None and instance._state.db:
            return instance._state.db
        context = _context.get()
        if context is None or _primary_only(model):
            return DEFAULT_DB_ALIAS
        if connections[DEFAULT_DB_ALIAS].in_atomic_block:
            return DEFAULT_DB_ALIAS
        return context.replica() or DEFAULT_DB_ALIAS

    def db_for_write(self, model: type[Model], **hints: Any) -> str:
        context = _context.get()
        if context is not None and not _primary_only(model):
            # A GET that writes reads its own write: the rest of it reads from the primary.
            context.replicas_allowed = False
        return DEFAULT_DB_ALIAS

    def allow_relation(self, obj1: Model, obj2: Model, **hints: Any) -> bool | None:
        ours = {DEFAULT_DB_ALIAS, *replica_aliases()}
        if obj1._state.db in ours and obj2._state.db in ours:
            return True  # the same data
        return None

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool:
        return db == DEFAULT_DB_ALIAS  # replicas follow the primary's schema


def _primary_only(model: type[Model]) -> bool:
    meta = model._meta
    return meta.app_label in PRIMARY_ONLY_APPS or meta.label_lower in PRIMARY_ONLY_MODELS


class ReplicaMiddleware:
    """Opens the read context for read-only API requests (and runs the view again on the
    primary when a replica fails under it); remembers users who just wrote."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not replica_aliases():
            return self.get_response(request)
        if request.method not in SAFE_METHODS:
            response = self.get_response(request)
            remember_writer(request, response)
            return response
        if not request.path.startswith(REPLICA_READ_PATH_PREFIXES):
            return self.get_response(request)
        context = ReadContext(request)
        token = _context.set(context)
        try:
            response = self.get_response(request)
            failed = sorted(a for a in context.used if connections[a].errors_occurred)
            if not failed:
                return response
            for alias in failed:
                mark_down(alias, f"a query failed during {request.method} {request.path}")
                with contextlib.suppress(DatabaseError):
                    connections[alias].close()
            context.replicas_allowed = False
            return self.get_response(request)
        finally:
            _context.reset(token)
