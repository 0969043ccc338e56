"""The operators' dashboard: failures (retry, resolve), fetch requests, service heartbeats."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.contrib import admin, messages
from django.db.models import Q, QuerySet
from django.db.models.functions import Now
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.safestring import SafeString

from trackers.findmy_client import FailureCategory
from trackers.models import AccountStatus, AppleAccount, Tracker, seconds

from ..models import (
    ALIVE_SECONDS,
    STALE_SECONDS,
    FailureRecord,
    FetchAttempt,
    Liveness,
    ServiceInstance,
)
from .base import (
    EMPTY,
    AccountFilter,
    EstimatedCountPaginator,
    ReadOnlyAdmin,
    audit,
    release_trackers,
    reset_breakers,
    short_text,
)


# --- failure records --------------------------------------------------------------------
class FailureStateFilter(admin.SimpleListFilter):
    """Open failures by default: what needs an operator. "All" is an explicit choice."""

    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("open", "Open"), ("resolved", "Resolved"), ("all", "All")]

    def value(self) -> str:
        return super().value() or "open"

    def choices(self, changelist: Any) -> Iterable[dict[str, Any]]:
        for lookup, title in self.lookup_choices:
            yield {
                "selected": self.value() == lookup,
                "query_string": changelist.get_query_string({self.parameter_name: lookup}),
                "display": title,
            }

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() == "open":
            return queryset.filter(resolved_at__isnull=True)
        if self.value() == "resolved":
            return queryset.filter(resolved_at__isnull=False)
        return queryset


@admin.register(FailureRecord)
class FailureRecordAdmin(ReadOnlyAdmin):
    list_display = [
        "category",
        "fingerprint",
        "account",
        "tracker",
        "attempts",
        "first_seen",
        "last_seen",
        "error",
        "state",
    ]
    list_filter = [FailureStateFilter, "category"]
    search_fields = ["fingerprint"]
    list_select_related = ["account", "tracker"]
    show_full_result_count = False
    fields = [
        "category",
        "fingerprint",
        "account",
        "tracker",
        "attempts",
        "first_seen",
        "last_seen",
        "resolved_at",
        "last_error",
        "detail",
    ]
    readonly_fields = fields
    actions = ["resolve", "retry", "retry_with_login"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[FailureRecord]:
        # The related rows carry encrypted secrets: never loaded (nor decrypted) for a list.
        queryset = super().get_queryset(request).select_related("account", "tracker")
        return queryset.defer("account__state", "tracker__key_material")

    @admin.display(description="last error")
    def error(self, obj: FailureRecord) -> str:
        return short_text(obj.last_error)

    @admin.display(description="state", ordering="resolved_at")
    def state(self, obj: FailureRecord) -> str:
        return "resolved" if obj.resolved_at else "open"

    @admin.action(description="Resolve", permissions=["change"])
    def resolve(self, request: HttpRequest, queryset: QuerySet[FailureRecord]) -> None:
        records = list(queryset.filter(resolved_at__isnull=True))
        FailureRecord.objects.filter(pk__in=[r.pk for r in records]).update(resolved_at=Now())
        audit(request, records, "Resolved")
        self.message_user(request, f"{len(records)} failure(s) resolved.", messages.SUCCESS)

    @admin.action(
        description="Retry (release trackers, close account breakers) and resolve",
        permissions=["change"],
    )
    def retry(self, request: HttpRequest, queryset: QuerySet[FailureRecord]) -> None:
        self._retry(request, queryset, with_login=False)

    @admin.action(
        description="Retry, also reactivating accounts that need a new login",
        permissions=["change"],
    )
    def retry_with_login(self, request: HttpRequest, queryset: QuerySet[FailureRecord]) -> None:
        self._retry(request, queryset, with_login=True)

    def _retry(
        self, request: HttpRequest, queryset: QuerySet[FailureRecord], *, with_login: bool
    ) -> None:
        """Undo what the failure caused, so the next claim tries again; resolve the records.

        Account failures close the account's breaker. An account parked for its login
        (needs_login) is reactivated only when the operator chose so: its saved state will
        fail again until someone logs in (`manage.py add_apple_account NAME --update`).
        Disabled accounts stay disabled. Their records stay open.
        """
        retryable = [AccountStatus.ACTIVE, AccountStatus.BACKING_OFF]
        if with_login:
            retryable.append(AccountStatus.NEEDS_LOGIN)
        retried, skipped = [], []
        for record in queryset.select_related(None).defer("detail"):
            if record.fingerprint.startswith("account:") and record.account_id:
                account = AppleAccount.objects.filter(pk=record.account_id, status__in=retryable)
                (retried if reset_breakers(account) else skipped).append(record)
            elif record.tracker_id:
                release_trackers(Tracker.objects.filter(pk=record.tracker_id), due_now=True)
                retried.append(record)
            else:
                retried.append(record)  # nothing left to undo: a payload without a tracker
        FailureRecord.objects.filter(pk__in=[r.pk for r in retried]).update(resolved_at=Now())
        audit(request, retried, "Retried and resolved")
        self.message_user(request, f"{len(retried)} failure(s) retried and resolved.")
        if skipped:
            self.message_user(
                request,
                f"{len(skipped)} failure(s) left open: their account is disabled or needs a new "
                "login (manage.py add_apple_account NAME --update, or the action that "
                "reactivates accounts needing login).",
                messages.WARNING,
            )


# --- fetch requests ---------------------------------------------------------------------
class OutcomeFilter(admin.SimpleListFilter):
    """Fixed choices: no SELECT DISTINCT over the whole request log."""

    title = "outcome"
    parameter_name = "outcome"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("ok", "OK"), *FailureCategory.choices]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return queryset.filter(outcome=self.value()) if self.value() else queryset


@admin.register(FetchAttempt)
class FetchAttemptAdmin(ReadOnlyAdmin):
    list_display = [
        "account",
        "worker",
        "started_at",
        "duration_display",
        "trackers",
        "outcome",
        "new_reports",
        "duplicate_reports",
        "failed_reports",
    ]
    list_filter = [OutcomeFilter, ("account", AccountFilter)]
    search_fields = ["worker"]
    list_select_related = ["account"]
    paginator = EstimatedCountPaginator
    show_full_result_count = False
    fields = [
        "account",
        "worker",
        "started_at",
        "finished_at",
        "duration_display",
        "trackers",
        "outcome",
        "new_reports",
        "duplicate_reports",
        "failed_reports",
        "error",
    ]
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[FetchAttempt]:
        return super().get_queryset(request).select_related("account").defer("account__state")

    @admin.display(description="duration")
    def duration_display(self, obj: FetchAttempt) -> str:
        return f"{obj.duration.total_seconds():.1f} s"


# --- service heartbeats -----------------------------------------------------------------
LIVENESS_COLOURS = {
    Liveness.ALIVE: "#2e7d32",
    Liveness.STALE: "#ef6c00",
    Liveness.DEAD: "#c62828",
    Liveness.STOPPED: "#757575",  # grey: it said goodbye, nothing to worry about
}


def liveness_badge(liveness: str) -> SafeString:
    return format_html(
        '<span class="liveness liveness-{}" style="background:{};color:#fff;padding:1px 6px;'
        'border-radius:3px;font-weight:bold">{}</span>',
        liveness,
        LIVENESS_COLOURS[liveness],
        Liveness(liveness).label,
    )


def duration_text(total_seconds: float) -> str:
    """3d 4h 5m, 4h 5m, 5m 6s: uptime at a glance."""
    total = int(total_seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h {minutes}m"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s"


class LivenessFilter(admin.SimpleListFilter):
    """The same thresholds as ServiceInstance.liveness(), by the database clock."""

    title = "liveness"
    parameter_name = "liveness"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return list(Liveness.choices)

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        running = Q(stopped_at__isnull=True)
        alive_since = Now() - seconds(ALIVE_SECONDS)
        stale_since = Now() - seconds(STALE_SECONDS)
        if self.value() == Liveness.ALIVE:
            return queryset.filter(running, last_heartbeat__gt=alive_since)
        if self.value() == Liveness.STALE:
            return queryset.filter(
                running, last_heartbeat__lte=alive_since, last_heartbeat__gt=stale_since
            )
        if self.value() == Liveness.DEAD:
            return queryset.filter(running, last_heartbeat__lte=stale_since)
        if self.value() == Liveness.STOPPED:
            return queryset.exclude(running)
        return queryset


@admin.register(ServiceInstance)
class ServiceInstanceAdmin(ReadOnlyAdmin):
    list_display = [
        "service_name",
        "instance_id",
        "hostname",
        "pid",
        "liveness_display",
        "last_heartbeat",
        "heartbeat_count",
        "uptime",
        "memory",
        "cpu",
    ]
    list_filter = ["service_name", LivenessFilter]
    search_fields = ["instance_id", "hostname"]
    fields = [
        "service_name",
        "instance_id",
        "hostname",
        "pid",
        "liveness_display",
        "started_at",
        "last_heartbeat",
        "stopped_at",
        "heartbeat_count",
        "uptime",
        "memory",
        "cpu",
        "payload",
    ]
    readonly_fields = fields

    @admin.display(description="liveness")
    def liveness_display(self, obj: ServiceInstance) -> SafeString:
        return liveness_badge(obj.liveness())

    @admin.display(description="uptime")
    def uptime(self, obj: ServiceInstance) -> str:
        value = (obj.payload or {}).get("uptime_seconds")
        if not isinstance(value, int | float):
            end = obj.stopped_at or obj.last_heartbeat
            value = (end - obj.started_at).total_seconds() if end and obj.started_at else None
        return duration_text(value) if value is not None else EMPTY

    @admin.display(description="memory")
    def memory(self, obj: ServiceInstance) -> str:
        value = (obj.payload or {}).get("memory_usage_mb")
        return f"{value:.0f} MB" if isinstance(value, int | float) else EMPTY

    @admin.display(description="CPU")
    def cpu(self, obj: ServiceInstance) -> str:
        value = (obj.payload or {}).get("cpu_usage_percent")
        return f"{value:.1f} %" if isinstance(value, int | float) else EMPTY
