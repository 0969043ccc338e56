"""Apple accounts, production runs and trackers in the admin.

The encrypted fields (`AppleAccount.state`: tokens and the Apple password; `Tracker.key_material`:
private keys) are never shown, never in a form, and not even loaded for admin pages: every
queryset here defers them. Accounts and trackers are created by management commands.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.db.models import Count, Exists, OuterRef, QuerySet
from django.db.models.functions import Now
from django.http import HttpRequest
from django.utils import timezone
from django.utils.formats import localize
from django.utils.safestring import SafeString

from locations.models import LocationReport
from trackers.models import (
    AccountStatus,
    AppleAccount,
    ProductionRun,
    Tracker,
)

from ..models import FailureRecord, FetchAttempt
from .base import (
    EMPTY,
    ReadOnlyMapAdmin,
    SaveChangedFieldsMixin,
    SecretFreeDeleteMixin,
    audit,
    release_trackers,
    reset_breakers,
    short_text,
)


# --- Apple accounts ---------------------------------------------------------------------
@admin.register(AppleAccount)
class AppleAccountAdmin(SaveChangedFieldsMixin, admin.ModelAdmin):
    empty_value_display = EMPTY
    list_display = [
        "name",
        "status",
        "breaker",
        "next_request",
        "last_request_at",
        "consecutive_failures",
        "requests_total",
        "error",
    ]
    list_filter = ["status"]
    search_fields = ["name"]
    # `state` is not listed anywhere: it is editable=False, never a form field, never read.
    fieldsets = [
        (None, {"fields": ["name", "login", "anisette_url", "fetch_endpoint"]}),
        (
            "Circuit breaker",
            {
                "fields": [
                    "status",
                    "breaker",
                    "consecutive_failures",
                    "backoff_until",
                    "last_error",
                ]
            },
        ),
        (
            "Requests",
            {
                "fields": [
                    "next_request",
                    "last_request_at",
                    "request_holder",
                    "request_lease_until",
                    "requests_total",
                    "created_at",
                    "updated_at",
                ]
            },
        ),
    ]
    readonly_fields = [
        "login",
        # Where the account's tokens go: set only by add_apple_account (endpoints.py).
        "anisette_url",
        "fetch_endpoint",
        "status",  # changed by the actions, which reset the breaker with it
        "breaker",
        "consecutive_failures",
        "backoff_until",
        "last_error",
        "next_request",
        "last_request_at",
        "request_holder",
        "request_lease_until",
        "requests_total",
        "created_at",
        "updated_at",
    ]
    actions = ["mark_active", "disable"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[AppleAccount]:
        return super().get_queryset(request).defer("state")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # manage.py add_apple_account logs in (password, 2FA)

    def has_delete_permission(self, request: HttpRequest, obj: AppleAccount | None = None) -> bool:
        return request.user.is_superuser

    def get_deleted_objects(
        self, objs: Iterable[AppleAccount], request: HttpRequest
    ) -> tuple[list[str], dict[str, int], set[str], list[str]]:
        # Deleting an account deletes its fetch log (CASCADE); Django's confirmation page would
        # list every attempt, each joined to the account and its decrypted state. Counted instead.
        accounts = list(objs)
        attempts = FetchAttempt.objects.filter(account__in=accounts).count()
        counts = {"Apple accounts": len(accounts), "fetch attempts": attempts}
        return [str(a) for a in accounts], counts, set(), []

    @admin.display(description="Apple ID")
    def login(self, obj: AppleAccount) -> str:
        # A masked hint kept beside the encrypted state: the admin never decrypts it.
        return obj.apple_id_hint or EMPTY

    @admin.display(description="breaker")
    def breaker(self, obj: AppleAccount) -> str:
        return obj.breaker_state

    @admin.display(description="next request")
    def next_request(self, obj: AppleAccount) -> str:
        when = obj.next_request_at()
        return localize(timezone.localtime(when)) if when else EMPTY

    @admin.display(description="last error")
    def error(self, obj: AppleAccount) -> str:
        return short_text(obj.last_error)

    @admin.action(description="Mark as active (reset breaker)", permissions=["change"])
    def mark_active(self, request: HttpRequest, queryset: QuerySet[AppleAccount]) -> None:
        accounts = list(queryset)
        reset_breakers(AppleAccount.objects.filter(pk__in=[a.pk for a in accounts]))
        audit(request, accounts, "Marked as active (breaker reset)")
        self.message_user(request, f"{len(accounts)} account(s) marked as active.")
        if any(a.status == AccountStatus.NEEDS_LOGIN for a in accounts):
            self.message_user(
                request,
                "Accounts that needed a login will fail again unless they were logged in "
                "(manage.py add_apple_account NAME --update).",
                messages.WARNING,
            )

    @admin.action(description="Disable", permissions=["change"])
    def disable(self, request: HttpRequest, queryset: QuerySet[AppleAccount]) -> None:
        accounts = list(queryset)
        AppleAccount.objects.filter(pk__in=[a.pk for a in accounts]).update(
            status=AccountStatus.DISABLED
        )
        audit(request, accounts, "Disabled")
        self.message_user(request, f"{len(accounts)} account(s) disabled.")


# --- production runs --------------------------------------------------------------------
@admin.register(ProductionRun)
class ProductionRunAdmin(admin.ModelAdmin):
    empty_value_display = EMPTY
    list_display = ["name", "starts_at", "ends_at", "tracker_count"]
    search_fields = ["name"]
    date_hierarchy = "starts_at"

    def get_queryset(self, request: HttpRequest) -> QuerySet[ProductionRun]:
        return super().get_queryset(request).annotate(tracker_count=Count("trackers"))

    def get_deleted_objects(
        self, objs: Iterable[ProductionRun], request: HttpRequest
    ) -> tuple[list[Any], dict[str, int], set[str], list[str]]:
        # Trackers protect their run; Django would list (and load) every one of them.
        runs = ProductionRun.objects.filter(pk__in=[r.pk for r in objs], trackers__isnull=False)
        protected = [f"{r.name}: has trackers" for r in runs.distinct()]
        if protected:
            return [], {}, set(), protected
        return super().get_deleted_objects(objs, request)

    @admin.display(description="trackers", ordering="tracker_count")
    def tracker_count(self, obj: ProductionRun) -> int:
        return obj.tracker_count


# --- trackers ---------------------------------------------------------------------------
class YesNoFilter(admin.SimpleListFilter):
    """A yes/no filter over two queryset methods named by `yes` and `no`."""

    yes: str
    no: str

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("yes", "Yes"), ("no", "No")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Tracker]) -> QuerySet[Tracker]:
        if self.value() in ("yes", "no"):
            return getattr(queryset, getattr(self, self.value()))()
        return queryset


class QuarantinedFilter(YesNoFilter):
    title = "quarantined"
    parameter_name = "quarantined"
    yes, no = "quarantined", "not_quarantined"


class LeasedFilter(YesNoFilter):
    """Held by a worker now (database clock); "no" includes expired leases."""

    title = "leased"
    parameter_name = "leased"
    yes, no = "leased", "unleased"


@admin.register(Tracker)
class TrackerAdmin(SecretFreeDeleteMixin, SaveChangedFieldsMixin, ReadOnlyMapAdmin):
    list_display = [
        "name",
        "kind",
        "owner",
        "production_run",
        "is_active",
        "last_processed_at",
        "lease",
        "quarantined",
        "consecutive_failures",
        "last_seen_at",
        "last_accuracy",
    ]
    list_filter = ["kind", "is_active", "production_run", QuarantinedFilter, LeasedFilter]
    # The hashed advertisement key is unique: an exact match uses its index.
    search_fields = ["name", "=hashed_adv_key"]
    list_select_related = ["owner", "production_run"]
    autocomplete_fields = ["owner", "production_run"]
    show_full_result_count = False
    # `key_material` is not listed anywhere: editable=False, never a form field, never read.
    fieldsets = [
        (
            None,
            {"fields": ["name", "kind", "hashed_adv_key", "owner", "production_run", "is_active"]},
        ),
        (
            "Fetch queue",
            {
                "fields": [
                    "last_processed_at",
                    "lease",
                    "consecutive_failures",
                    "quarantined_at",
                    "created_at",
                ]
            },
        ),
        ("Last seen", {"fields": ["last_seen_at", "last_accuracy", "position"]}),
    ]
    readonly_fields = [
        "kind",  # tied to the format of the key material
        "hashed_adv_key",
        "last_processed_at",
        "lease",
        "consecutive_failures",
        "quarantined_at",
        "created_at",
        "last_seen_at",
        "last_accuracy",
        "position",
    ]
    actions = ["release_quarantine", "make_due_now", "activate", "deactivate"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Tracker]:
        return super().get_queryset(request).defer("key_material")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # manage.py import_trackers reads key files

    def has_delete_permission(self, request: HttpRequest, obj: Tracker | None = None) -> bool:
        return request.user.is_superuser  # a deleted private key is gone for good

    def get_deleted_objects(
        self, objs: Iterable[Tracker], request: HttpRequest
    ) -> tuple[list[Any], dict[str, int], set[str], list[str]]:
        # Reports protect their tracker. Django would first list every report of it, each
        # joined to the tracker and its decrypted keys: one EXISTS per tracker says enough.
        reported = (
            Tracker.objects.filter(pk__in=[t.pk for t in objs])
            .filter(Exists(LocationReport.objects.filter(tracker=OuterRef("pk"))))
            .only("name")
        )
        protected = [f"{t.name}: has location reports, which are kept" for t in reported]
        if protected:
            return [], {}, set(), protected
        return super().get_deleted_objects(objs, request)

    @admin.display(description="lease")
    def lease(self, obj: Tracker) -> str:
        if obj.lease_until is None:
            return EMPTY
        expired = "" if obj.is_leased else " (expired)"
        until = timezone.localtime(obj.lease_until).strftime("%Y-%m-%d %H:%M:%S")
        return f"{obj.claimed_by or '?'} until {until}{expired}"

    @admin.display(description="quarantined", boolean=True, ordering="quarantined_at")
    def quarantined(self, obj: Tracker) -> bool:
        return obj.quarantined_at is not None

    @admin.display(description="last position")
    def position(self, obj: Tracker) -> SafeString | str:
        return self.map_display("last_position", obj.last_position)

    @admin.action(description="Release from quarantine", permissions=["change"])
    def release_quarantine(self, request: HttpRequest, queryset: QuerySet[Tracker]) -> None:
        trackers = list(queryset.filter(quarantined_at__isnull=False))
        ids = [t.pk for t in trackers]
        release_trackers(Tracker.objects.filter(pk__in=ids))
        # The record that quarantined them is answered too; it reopens if they fail again.
        FailureRecord.objects.filter(
            fingerprint__in=[f"tracker:{pk}" for pk in ids], resolved_at__isnull=True
        ).update(resolved_at=Now())
        audit(request, trackers, "Released from quarantine")
        self.message_user(request, f"{len(trackers)} tracker(s) released from quarantine.")

    @admin.action(description="Make due now (fetch on the next claim)", permissions=["change"])
    def make_due_now(self, request: HttpRequest, queryset: QuerySet[Tracker]) -> None:
        # Due, not forgotten: an accessory keeps (at least) its whole window of keys.
        trackers = list(queryset)
        Tracker.objects.filter(pk__in=[t.pk for t in trackers]).make_due()
        audit(request, trackers, "Made due now")
        self.message_user(request, f"Made due now: {len(trackers)} tracker(s).")

    @admin.action(description="Activate", permissions=["change"])
    def activate(self, request: HttpRequest, queryset: QuerySet[Tracker]) -> None:
        self._update(request, queryset, "Activated", is_active=True)

    @admin.action(description="Deactivate", permissions=["change"])
    def deactivate(self, request: HttpRequest, queryset: QuerySet[Tracker]) -> None:
        self._update(request, queryset, "Deactivated", is_active=False)

    def _update(
        self, request: HttpRequest, queryset: QuerySet[Tracker], message: str, **changes: Any
    ) -> None:
        trackers = list(queryset)
        Tracker.objects.filter(pk__in=[t.pk for t in trackers]).update(**changes)
        audit(request, trackers, message)
        self.message_user(request, f"{message}: {len(trackers)} tracker(s).")


# --- users ------------------------------------------------------------------------------
# Users own trackers, fences and alert rules: deleting one lists what goes with it without
# loading (decrypting) a rule's webhook secret or a tracker's keys.
User = get_user_model()
admin.site.unregister(User)


@admin.register(User)
class OwnerAdmin(SecretFreeDeleteMixin, UserAdmin):
    pass
