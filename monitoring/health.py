"""Health checks and status figures: what /health, /status/* and /metrics report.

Every figure is read from PostgreSQL (and Redis for its own check), so the answer covers the
work of every worker process on every machine. Time comparisons use the database clock, like
the claim querysets, so a web server whose clock drifts does not misjudge the queue.

A check is ok, degraded (worth a look, not a reason to take the service out of rotation),
failing (the service cannot do its job: /health answers 503), or skipped (it needs the
database, which is down). Nothing secret is ever reported: /health is public.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis
from django.conf import settings
from django.db import connection, models
from django.db.models import Case, Count, Exists, Min, OuterRef, Q, Value, When
from django.db.models.functions import Now

from geofences import deliveries
from geofences.models import Geofence, GeofenceEvent
from geofences.worker import backlog
from locations import geocoding, latest
from tracker_project import replicas
from trackers.findmy_client import FailureCategory
from trackers.models import USABLE_STATUSES, AccountStatus, AppleAccount, Tracker

from .heartbeat import health_redis
from .models import ALIVE_SECONDS, FailureRecord, Liveness, ServiceInstance

log = logging.getLogger(__name__)

# The processes that fetch: a failing /health when none of them is alive.
WORKER_SERVICES = ("fetch_trackers", "qcluster")
# Every restart leaves an instance row behind (stopped, or dead if killed); status pages look
# back this far only, and prune_instances() deletes them after SERVICE_INSTANCE_RETENTION_HOURS.
RECENT_INSTANCE_SECONDS = 24 * 3600
BREAKER_STATES = ("closed", "open", "half-open", "locked")
# Seconds /health may spend waiting for locks on, or rebuilding, the latest-location view;
# past that it reports the view and leaves the work to the refresh-latest-locations schedule.
LATEST_VIEW_REPAIR_TIMEOUT = 20


class CheckStatus(models.TextChoices):
    OK = "ok", "OK"
    DEGRADED = "degraded", "Degraded"
    FAILING = "failing", "Failing"
    SKIPPED = "skipped", "Skipped"


@dataclass
class Check:
    status: str
    detail: str
    figures: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "detail": self.detail, **self.figures}


@dataclass
class HealthReport:
    checks: dict[str, Check]

    def named(self, status: str) -> list[str]:
        return [name for name, check in self.checks.items() if check.status == status]

    @property
    def healthy(self) -> bool:
        return not self.named(CheckStatus.FAILING)

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": "ok" if self.healthy else "unhealthy",
            "failing": self.named(CheckStatus.FAILING),
            "degraded": self.named(CheckStatus.DEGRADED),
            "checks": {name: check.as_dict() for name, check in self.checks.items()},
        }


# --- shared figures ---------------------------------------------------------------------
def database_now() -> dt.datetime:
    """The database clock (CURRENT_TIMESTAMP: what Now() in the querysets compares with)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT CURRENT_TIMESTAMP")
        return cursor.fetchone()[0]


def breaker_state() -> Case:
    """AppleAccount.breaker_state as SQL, by the database clock."""
    return Case(
        When(status=AccountStatus.ACTIVE, then=Value("closed")),
        When(status=AccountStatus.BACKING_OFF, backoff_until__gt=Now(), then=Value("open")),
        When(status=AccountStatus.BACKING_OFF, then=Value("half-open")),
        default=Value("locked"),
        output_field=models.CharField(),
    )


def cycle_capacity(accounts_usable: int) -> int:
    """Trackers the usable accounts can fetch in one FETCH_CYCLE_HOURS cycle.

    Each account sends one request of up to MAX_KEYS_PER_BATCH keys per
    ACCOUNT_MIN_REQUEST_INTERVAL seconds.
    """
    cycle_seconds = settings.FETCH_CYCLE_HOURS * 3600
    requests = cycle_seconds // max(settings.ACCOUNT_MIN_REQUEST_INTERVAL, 1)
    return accounts_usable * settings.MAX_KEYS_PER_BATCH * requests


@dataclass
class AccountFigures:
    total: int
    usable: int
    by_status: dict[str, int]
    by_breaker: dict[str, int]


def account_figures() -> AccountFigures:
    rows = (
        AppleAccount.objects.annotate(breaker=breaker_state())
        .values_list("status", "breaker")
        .order_by()
    )
    by_status = dict.fromkeys(AccountStatus.values, 0)
    by_breaker = dict.fromkeys(BREAKER_STATES, 0)
    for status, breaker in rows:
        by_status[status] = by_status.get(status, 0) + 1
        by_breaker[breaker] += 1
    usable = sum(by_status[s] for s in USABLE_STATUSES)
    return AccountFigures(sum(by_status.values()), usable, by_status, by_breaker)


@dataclass
class QueueStatus:
    """The queue (the tracker table) at one moment of the database clock."""

    checked_at: dt.datetime
    eligible: int
    due: int
    leased: int
    quarantined: int
    never_processed: int
    oldest_processed_at: dt.datetime | None
    accounts_usable: int

    @property
    def oldest_processed_age_seconds(self) -> float | None:
        if self.oldest_processed_at is None:
            return None
        return max((self.checked_at - self.oldest_processed_at).total_seconds(), 0.0)

    @property
    def cycle_capacity(self) -> int:
        return cycle_capacity(self.accounts_usable)

    @property
    def capacity_ok(self) -> bool:
        return self.cycle_capacity >= self.eligible

    @property
    def starving(self) -> bool:
        """Some eligible tracker waits longer than the cycle promise allows."""
        age = self.oldest_processed_age_seconds
        return age is not None and age > settings.FETCH_CYCLE_HOURS * 3600

    def as_dict(self) -> dict[str, Any]:
        return {
            "checked_at": self.checked_at,
            "eligible": self.eligible,
            "due": self.due,
            "leased": self.leased,
            "quarantined": self.quarantined,
            "never_processed": self.never_processed,
            "oldest_processed_at": self.oldest_processed_at,
            "oldest_processed_age_seconds": self.oldest_processed_age_seconds,
            "accounts_usable": self.accounts_usable,
            "max_keys_per_batch": settings.MAX_KEYS_PER_BATCH,
            "fetch_cycle_hours": settings.FETCH_CYCLE_HOURS,
            "cycle_capacity": self.cycle_capacity,
            "capacity_ok": self.capacity_ok,
        }


def queue_status() -> QueueStatus:
    eligible = Tracker.objects.eligible().aggregate(
        count=Count("id"),
        never=Count("id", filter=Q(last_processed_at__isnull=True)),
        oldest=Min("last_processed_at"),
    )
    return QueueStatus(
        checked_at=database_now(),
        eligible=eligible["count"],
        due=Tracker.objects.eligible().due().count(),
        leased=Tracker.objects.leased().count(),
        quarantined=Tracker.objects.quarantined().count(),
        never_processed=eligible["never"],
        oldest_processed_at=eligible["oldest"],
        accounts_usable=AppleAccount.objects.usable().count(),
    )


@dataclass
class InstanceStatus:
    instance: ServiceInstance
    liveness: str

    # Heartbeat payload keys that repeat the instance's own columns.
    IDENTITY = frozenset(
        {"service_name", "instance_id", "hostname", "pid", "heartbeat_count", "timestamp"}
    )

    def as_dict(self) -> dict[str, Any]:
        i = self.instance
        figures = {k: v for k, v in (i.payload or {}).items() if k not in self.IDENTITY}
        return {
            "service_name": i.service_name,
            "instance_id": i.instance_id,
            "hostname": i.hostname,
            "pid": i.pid,
            "started_at": i.started_at,
            "last_heartbeat": i.last_heartbeat,
            "stopped_at": i.stopped_at,
            "heartbeat_count": i.heartbeat_count,
            "liveness": self.liveness,
            "figures": figures,
        }


def recent_instances(now: dt.datetime, services: tuple[str, ...] = ()) -> list[InstanceStatus]:
    """Instances heard from within RECENT_INSTANCE_SECONDS, with their liveness at `now`."""
    since = now - dt.timedelta(seconds=RECENT_INSTANCE_SECONDS)
    instances = ServiceInstance.objects.filter(last_heartbeat__gte=since)
    if services:
        instances = instances.filter(service_name__in=services)
    return [InstanceStatus(i, i.liveness(now)) for i in instances]


def liveness_counts(instances: list[InstanceStatus]) -> dict[str, int]:
    counts = dict.fromkeys(Liveness.values, 0)
    for i in instances:
        counts[i.liveness] += 1
    return counts


def worker_status() -> dict[str, Any]:
    now = database_now()
    instances = recent_instances(now)
    return {
        "checked_at": now,
        "window_seconds": RECENT_INSTANCE_SECONDS,
        "counts": liveness_counts(instances),
        "instances": [i.as_dict() for i in instances],
    }


def open_failures() -> dict[str, int]:
    """Open failure records per category (every category, zero included)."""
    counts = dict.fromkeys((c for c, _ in FailureCategory.choices), 0)
    rows = (
        FailureRecord.objects.filter(resolved_at__isnull=True)
        .values_list("category")
        .annotate(n=Count("id"))
        .order_by()
    )
    counts.update(dict(rows))
    return counts


# --- business figures: processing, geocoding, deliveries, events ------------------------
def quiet_trackers(days: int | None = None) -> int:
    """Eligible trackers, older than `days`, of owners with an active fence, that raised no
    geofence event (enter, exit) for `days` (GEOFENCE_EVENT_QUIET_DAYS)."""
    since = Now() - dt.timedelta(days=days or settings.GEOFENCE_EVENT_QUIET_DAYS)
    # event_tracker_time_idx: the newest event of one tracker.
    recent = GeofenceEvent.objects.filter(
        tracker=OuterRef("pk"), geofence__isnull=False, occurred_at__gte=since
    )
    fenced = Geofence.objects.filter(is_active=True).values("owner_id")
    return (
        Tracker.objects.eligible()
        .filter(owner_id__in=fenced, created_at__lt=since)
        .filter(~Exists(recent))
        .count()
    )


# --- the checks -------------------------------------------------------------------------
def check_database() -> Check:
    with connection.cursor() as cursor:
        # Answers on an empty database too: a schema that is not there fails here, by name.
        cursor.execute("SELECT to_regclass('trackers_tracker') IS NOT NULL")
        migrated = cursor.fetchone()[0]
    if not migrated:
        return Check(CheckStatus.FAILING, "not migrated: run manage.py migrate")
    return Check(CheckStatus.OK, "answered; schema present")


def check_redis() -> Check:
    client = health_redis()
    if client is None:
        # Without Redis the service still runs: heartbeats are recorded in the database.
        return Check(CheckStatus.DEGRADED, "not configured (REDIS_URL is empty)")
    try:
        client.ping()
    except redis.RedisError as exc:
        return Check(CheckStatus.FAILING, f"PING failed: {type(exc).__name__}")
    finally:
        client.close()
    return Check(CheckStatus.OK, "PING answered")


def check_workers() -> Check:
    """Failing when no worker is alive. Instances that stopped cleanly (a deploy, a scale
    down) are counted apart: they are neither dead workers nor alive ones."""
    instances = recent_instances(database_now(), WORKER_SERVICES)
    counts = liveness_counts(instances)
    figures = {"services": list(WORKER_SERVICES), **counts}
    if counts[Liveness.ALIVE]:
        return Check(CheckStatus.OK, f"{counts[Liveness.ALIVE]} worker(s) alive", figures)
    detail = (
        f"no {' or '.join(WORKER_SERVICES)} instance sent a heartbeat in the last {ALIVE_SECONDS} s"
    )
    if counts[Liveness.STOPPED]:
        detail += f" ({counts[Liveness.STOPPED]} stopped cleanly)"
    return Check(CheckStatus.FAILING, detail, figures)


def check_accounts() -> Check:
    a = account_figures()
    figures = {
        "total": a.total,
        "usable": a.usable,
        "by_status": a.by_status,
        "by_breaker": a.by_breaker,
    }
    if not a.usable:
        return Check(CheckStatus.FAILING, "no Apple account is active or backing off", figures)
    if not (a.by_breaker["closed"] or a.by_breaker["half-open"]):
        return Check(CheckStatus.DEGRADED, "every usable account's circuit is open", figures)
    return Check(CheckStatus.OK, f"{a.usable} usable account(s)", figures)


def check_queue() -> Check:
    q = queue_status()
    figures = q.as_dict()
    figures.pop("checked_at")
    problems = []
    if not q.capacity_ok:
        problems.append(
            f"cycle capacity {q.cycle_capacity} is below the eligible fleet of {q.eligible}"
        )
    if q.starving:
        problems.append(
            f"the oldest eligible tracker was processed {q.oldest_processed_age_seconds:.0f} s "
            f"ago, more than FETCH_CYCLE_HOURS={settings.FETCH_CYCLE_HOURS}"
        )
    if problems:
        return Check(CheckStatus.FAILING, "; ".join(problems), figures)
    return Check(CheckStatus.OK, f"{q.due} of {q.eligible} eligible tracker(s) due", figures)


def check_failures() -> Check:
    """Informational: open failures are for the admin's failure list, not for load balancers."""
    counts = open_failures()
    total = sum(counts.values())
    return Check(CheckStatus.OK, f"{total} open failure(s)", {"open": total, "by_category": counts})


def check_processing() -> Check:
    """Reports waiting for geofencing: alerts are as late as the oldest of them."""
    queue = backlog()
    age = queue.oldest_age_seconds
    warn, fail = settings.PROCESSING_BACKLOG_WARN_SECONDS, settings.PROCESSING_BACKLOG_FAIL_SECONDS
    figures = {
        "pending_reports": queue.reports,
        "oldest_pending_age_seconds": age,
        "warn_seconds": warn,
        "fail_seconds": fail,
    }
    if age is None:
        return Check(CheckStatus.OK, "no report waiting", figures)
    waiting = f"the oldest of {queue.reports} unprocessed report(s) was stored {age:.0f} s ago"
    if age > fail:
        hint = f"more than PROCESSING_BACKLOG_FAIL_SECONDS={fail}: is process_locations running?"
        return Check(CheckStatus.FAILING, f"{waiting}, {hint}", figures)
    if age > warn:
        hint = f"more than PROCESSING_BACKLOG_WARN_SECONDS={warn}"
        return Check(CheckStatus.DEGRADED, f"{waiting}, {hint}", figures)
    return Check(CheckStatus.OK, waiting, figures)


def check_geocoding() -> Check:
    """Informational: addresses are best effort (the backfill catches up off-peak). A fault in
    the geocoder's figures degrades this check only; it never takes /health down."""
    try:
        stats = geocoding.cache_stats()
    except Exception as exc:
        log.warning("geocoder statistics unavailable", exc_info=True)
        return Check(CheckStatus.DEGRADED, f"geocoder statistics raised {type(exc).__name__}")
    detail = (
        f"{stats['ungeocoded']} report(s) without an address; cache hit rate "
        f"{stats['hit_rate']:.0%}; {stats['provider_requests']} provider request(s)"
    )
    return Check(CheckStatus.OK, detail, stats)


def check_deliveries() -> Check:
    """Alerts that failed for good (an operator retries them), or that wait too long."""
    stats = deliveries.stats()
    warn = settings.PROCESSING_BACKLOG_WARN_SECONDS
    if stats["failed"]:
        detail = f"{stats['failed']} failed alert delivery(ies): retry them in the admin"
        return Check(CheckStatus.DEGRADED, detail, stats)
    if stats["pending"] and stats["oldest_pending_age_seconds"] > warn:
        detail = (
            f"the oldest of {stats['pending']} pending delivery(ies) waits "
            f"{stats['oldest_pending_age_seconds']} s, more than PROCESSING_BACKLOG_WARN_SECONDS="
            f"{warn}: is send_alerts running, is a receiver down?"
        )
        return Check(CheckStatus.DEGRADED, detail, stats)
    return Check(CheckStatus.OK, f"{stats['pending']} pending, none failed", stats)


def check_geofence_events() -> Check:
    """Informational: a tracker that never crosses a fence may be lost, flat or parked."""
    days = settings.GEOFENCE_EVENT_QUIET_DAYS
    quiet = quiet_trackers(days)
    detail = f"{quiet} tracker(s) of fenced owners without a geofence event in {days} day(s)"
    return Check(CheckStatus.OK, detail, {"trackers_without_events": quiet, "days": days})


def check_latest_view() -> Check:
    """The latest-location view, repaired on the spot: recreated when missing or invalid,
    refreshed when stale. Failing only when it is still unreadable afterwards."""
    outcome = latest.maintain(timeout=LATEST_VIEW_REPAIR_TIMEOUT)
    figures = outcome.as_dict()
    rows = outcome.state.rows
    broken = outcome.problem in (latest.Problem.MISSING, latest.Problem.INVALID)
    if outcome.action == latest.Action.NONE:
        age = outcome.state.age_seconds
        when = f"refreshed {age:.0f} s ago" if age is not None else "empty: no report yet"
        return Check(CheckStatus.OK, f"{rows} tracker(s), {when}", figures)
    found = f"{outcome.problem}: {outcome.reason}"
    if outcome.action == latest.Action.BUSY:
        status = CheckStatus.DEGRADED if broken else CheckStatus.OK
        return Check(status, f"{found}; another process is repairing it", figures)
    if outcome.action == latest.Action.FAILED:
        status = CheckStatus.DEGRADED if outcome.usable else CheckStatus.FAILING
        return Check(status, f"{found}; the repair failed", figures)
    # Repaired here: the schedule (refresh-latest-locations) should have done it.
    return Check(CheckStatus.DEGRADED, f"{found}; {outcome.action} ({rows} rows)", figures)


def check_replicas() -> Check:
    """Degraded, never failing, when a replica is down or behind: reads go to the primary."""
    report = replicas.replica_report()
    figures = {"replicas": report}
    skipped = [alias for alias, replica in report.items() if replica["status"] != "up"]
    if skipped:
        return Check(
            CheckStatus.DEGRADED, f"skipped, reads on the primary: {', '.join(skipped)}", figures
        )
    return Check(CheckStatus.OK, f"{len(report)} replica(s) up" if report else "none", figures)


CHECKS: dict[str, Callable[[], Check]] = {
    "database": check_database,
    "redis": check_redis,
    "workers": check_workers,
    "accounts": check_accounts,
    "queue": check_queue,
    "failures": check_failures,
    "processing": check_processing,
    "geocoding": check_geocoding,
    "deliveries": check_deliveries,
    "geofence_events": check_geofence_events,
    "latest_view": check_latest_view,
    "replicas": check_replicas,
}
NEEDS_DATABASE = frozenset(set(CHECKS) - {"database", "redis"})


def _run(name: str, check: Callable[[], Check]) -> Check:
    try:
        return check()
    except Exception as exc:
        log.warning("health check %s raised", name, exc_info=True)
        # The exception's class only: messages may carry hosts, users or connection strings.
        return Check(CheckStatus.FAILING, f"check raised {type(exc).__name__}")


def run_checks() -> HealthReport:
    checks: dict[str, Check] = {}
    for name, check in CHECKS.items():
        if name in NEEDS_DATABASE and checks["database"].status == CheckStatus.FAILING:
            checks[name] = Check(CheckStatus.SKIPPED, "skipped: the database is unavailable")
        else:
            checks[name] = _run(name, check)
    return HealthReport(checks)
