"""Geofences, their states and events, alert rules and deliveries, and the latest locations.

Fences are drawn on a map (OpenLayers over OpenStreetMap): a circle is a centre point and a
radius, a polygon its area; Geofence.clean() names the field at fault. States and events are
written by the processor and shown read-only. Alert rules never show their webhook secret:
it is shown once, in a message, when it is made. Deliveries that failed are retried by an
action. Like the rest of the admin, no queryset here loads an encrypted field
(`AlertRule.webhook_secret`, `Tracker.key_material`).
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.gis.db.models import Extent
from django.contrib.gis.forms import OSMWidget
from django.contrib.gis.geos import MultiPoint, Point
from django.db.models import (
    BooleanField,
    Count,
    ExpressionWrapper,
    Prefetch,
    Q,
    QuerySet,
)
from django.db.models.expressions import RawSQL
from django.db.models.fields.related import ManyToManyField
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from geofences import deliveries
from geofences.models import (
    AlertDelivery,
    AlertRule,
    Channel,
    EventKind,
    Geofence,
    GeofenceEvent,
    GeofenceState,
)
from locations.models import LatestLocation
from trackers.models import Tracker

from .base import (
    EMPTY,
    EstimatedCountPaginator,
    ReadOnlyAdmin,
    ReadOnlyMapAdmin,
    SecretFreeDeleteMixin,
    audit,
    short_text,
)

# A filter lists its choices only while there are this few; more would make a page of links
# (and a query) per request. Beyond it, filter by clicking a tracker or fence in the list.
FILTER_CHOICES_LIMIT = 100


def changelist_url(model: type, **filters: Any) -> str:
    opts = model._meta
    query = "&".join(f"{k}={v}" for k, v in filters.items())
    return reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist") + f"?{query}"


def trackers_without_keys() -> QuerySet[Tracker]:
    """Trackers as choices in forms: the name only, the private key never loaded."""
    return Tracker.objects.only("id", "name").order_by("name")


class ChoicesFilter(admin.SimpleListFilter):
    """A filter over (pk, label) rows of a small table, read without loading its objects."""

    choices_query: Any  # a callable returning a values_list queryset of (pk, label)
    lookup: str

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple]:
        rows = list(self.choices_query()[: FILTER_CHOICES_LIMIT + 1])
        if len(rows) > FILTER_CHOICES_LIMIT:
            # Only the chosen one: a filter without choices is not applied at all.
            value = self.value()
            rows = list(self.choices_query().filter(pk=value)) if value and value.isdigit() else []
        return [(str(pk), label) for pk, label in rows]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        if value and value.isdigit():
            return queryset.filter(**{self.lookup: int(value)})
        return queryset


class TrackerFilter(ChoicesFilter):
    title = "tracker"
    parameter_name = "tracker"
    lookup = "tracker_id"

    @staticmethod
    def choices_query() -> Any:
        return Tracker.objects.order_by("name").values_list("pk", "name")


class FenceFilter(ChoicesFilter):
    title = "geofence"
    parameter_name = "geofence"
    lookup = "geofence_id"

    @staticmethod
    def choices_query() -> Any:
        return Geofence.objects.order_by("name").values_list("pk", "name")


class RuleFilter(ChoicesFilter):
    title = "alert rule"
    parameter_name = "rule"
    lookup = "rule_id"

    @staticmethod
    def choices_query() -> Any:
        return AlertRule.objects.order_by("name").values_list("pk", "name")


def map_defaults() -> dict[str, Any]:
    """Where an empty map opens: over the fleet's last positions, or the whole world."""
    extent = Tracker.objects.aggregate(e=Extent("last_position"))["e"]
    if extent is None:
        return {"default_lon": 0, "default_lat": 20, "default_zoom": 2}
    xmin, ymin, xmax, ymax = extent
    return {"default_lon": (xmin + xmax) / 2, "default_lat": (ymin + ymax) / 2, "default_zoom": 5}


# --- geofences --------------------------------------------------------------------------
@admin.register(Geofence)
class GeofenceAdmin(SecretFreeDeleteMixin, admin.ModelAdmin):
    """Drawn on the map: a circle's centre (a point) and radius, or a polygon's area."""

    list_display = ["name", "owner", "kind", "size", "is_active", "tracker_count", "updated_at"]
    list_filter = ["kind", "is_active"]
    search_fields = ["name", "owner__username"]
    list_select_related = ["owner"]
    autocomplete_fields = ["owner"]
    filter_horizontal = ["trackers"]
    readonly_fields = ["created_at", "updated_at", "events_link"]
    fieldsets = [
        (None, {"fields": ["name", "owner", "kind", "is_active"]}),
        (
            "Circle",
            {
                "fields": ["center", "radius_m"],
                "description": "Click the map to place the centre; the radius is in metres.",
            },
        ),
        (
            "Polygon",
            {
                "fields": ["area"],
                "description": "Draw the outline; double-click closes it. One ring, no holes.",
            },
        ),
        (
            "Trackers",
            {"fields": ["trackers"], "description": "None chosen: every tracker of the owner."},
        ),
        ("Active hours", {"fields": ["schedule", "time_zone"], "classes": ["collapse"]}),
        (None, {"fields": ["events_link", "created_at", "updated_at"]}),
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Geofence]:
        # The form's initial trackers come from this prefetch: names only, never the keys.
        queryset = super().get_queryset(request).annotate(tracker_count=Count("trackers"))
        return queryset.prefetch_related(Prefetch("trackers", trackers_without_keys()))

    def formfield_for_dbfield(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name in ("center", "area"):
            kwargs["widget"] = OSMWidget(attrs=map_defaults())
            return db_field.formfield(**kwargs)
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    def formfield_for_manytomany(
        self, db_field: ManyToManyField, request: HttpRequest, **kwargs: Any
    ) -> Any:
        if db_field.name == "trackers":
            kwargs["queryset"] = trackers_without_keys()
        return super().formfield_for_manytomany(db_field, request, **kwargs)

    @admin.display(description="size")
    def size(self, obj: Geofence) -> str:
        if obj.radius_m is not None:
            return f"{obj.radius_m:g} m radius"
        return f"{len(obj.area[0]) - 1} corners" if obj.area else EMPTY

    @admin.display(description="trackers", ordering="tracker_count")
    def tracker_count(self, obj: Geofence) -> str:
        return str(obj.tracker_count) if obj.tracker_count else "all of the owner's"

    @admin.display(description="events")
    def events_link(self, obj: Geofence) -> SafeString | str:
        if obj.pk is None:
            return EMPTY
        return format_html(
            '<a href="{}">events</a>', changelist_url(GeofenceEvent, geofence=obj.pk)
        )


@admin.register(GeofenceState)
class GeofenceStateAdmin(ReadOnlyAdmin):
    list_display = [
        "tracker",
        "geofence",
        "side",
        "candidate",
        "candidate_count",
        "candidate_since",
        "changed_at",
        "updated_at",
    ]
    list_filter = ["side", FenceFilter]
    search_fields = ["tracker__name", "geofence__name"]
    list_select_related = ["tracker", "geofence"]
    show_full_result_count = False
    fields = list_display
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[GeofenceState]:
        queryset = super().get_queryset(request).select_related("tracker", "geofence")
        return queryset.defer("tracker__key_material")


# --- events -----------------------------------------------------------------------------
@admin.register(GeofenceEvent)
class GeofenceEventAdmin(ReadOnlyAdmin):
    list_display = [
        "occurred_at",
        "kind",
        "tracker_link",
        "geofence_link",
        "report_link",
        "deliveries_link",
        "created_at",
    ]
    list_filter = ["kind", TrackerFilter, FenceFilter]
    date_hierarchy = "occurred_at"
    search_fields = ["tracker__name", "geofence__name"]
    paginator = EstimatedCountPaginator
    show_full_result_count = False
    fields = [
        "kind",
        "tracker",
        "geofence",
        "occurred_at",
        "report_link",
        "created_at",
        "dedupe_key",
        "deliveries_link",
    ]
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[GeofenceEvent]:
        queryset = super().get_queryset(request).select_related("tracker", "geofence")
        return queryset.defer("tracker__key_material")

    @admin.display(description="tracker", ordering="tracker__name")
    def tracker_link(self, obj: GeofenceEvent) -> SafeString:
        # Filters the list by the tracker (its filter lists no choices in a big fleet).
        return format_html('<a href="?tracker={}">{}</a>', obj.tracker_id, obj.tracker.name)

    @admin.display(description="geofence", ordering="geofence__name")
    def geofence_link(self, obj: GeofenceEvent) -> SafeString | str:
        if obj.geofence is None:
            return EMPTY
        return format_html('<a href="?geofence={}">{}</a>', obj.geofence_id, obj.geofence.name)

    @admin.display(description="report")
    def report_link(self, obj: GeofenceEvent) -> SafeString | str:
        if obj.report_id is None:
            return EMPTY
        url = reverse("admin:locations_locationreport_change", args=[obj.report_id])
        return format_html('<a href="{}">{}</a>', url, obj.report_id)

    @admin.display(description="deliveries")
    def deliveries_link(self, obj: GeofenceEvent) -> SafeString:
        return format_html(
            '<a href="{}">deliveries</a>', changelist_url(AlertDelivery, event=obj.pk)
        )


# --- alert rules ------------------------------------------------------------------------
def https_by_default(db_field: Any, **kwargs: Any) -> Any:
    """Form fields of the rule: a URL typed without a scheme is https://."""
    if db_field.name == "webhook_url":
        kwargs["assume_scheme"] = "https"
    return db_field.formfield(**kwargs)


class AlertRuleForm(forms.ModelForm):
    event_kinds = forms.MultipleChoiceField(
        choices=EventKind.choices, widget=forms.CheckboxSelectMultiple
    )
    channels = forms.MultipleChoiceField(
        choices=Channel.choices, widget=forms.CheckboxSelectMultiple
    )

    class Meta:
        model = AlertRule
        formfield_callback = https_by_default
        fields = [
            "name",
            "owner",
            "is_active",
            "event_kinds",
            "geofences",
            "trackers",
            "channels",
            "webhook_url",
            "email_to",
            "schedule",
            "time_zone",
        ]


@admin.register(AlertRule)
class AlertRuleAdmin(SecretFreeDeleteMixin, admin.ModelAdmin):
    """The webhook secret is made on save for a webhook rule and shown once, in a message;
    the page only says whether there is one. "New webhook secret" replaces it."""

    form = AlertRuleForm
    empty_value_display = EMPTY
    list_display = ["name", "owner", "kinds", "channel_list", "is_active", "secret_state"]
    list_filter = ["is_active"]
    search_fields = ["name", "owner__username"]
    list_select_related = ["owner"]
    autocomplete_fields = ["owner"]
    filter_horizontal = ["geofences", "trackers"]
    readonly_fields = ["secret_state", "created_at", "deliveries_link"]
    fieldsets = [
        (None, {"fields": ["name", "owner", "is_active", "event_kinds"]}),
        (
            "Which events",
            {
                "fields": ["geofences", "trackers"],
                "description": "None chosen: every fence (or tracker) of the owner.",
            },
        ),
        ("Where to", {"fields": ["channels", "webhook_url", "secret_state", "email_to"]}),
        (
            "Quiet hours",
            {
                "fields": ["schedule", "time_zone"],
                "description": "Events in these spans are recorded, not sent.",
                "classes": ["collapse"],
            },
        ),
        (None, {"fields": ["deliveries_link", "created_at"]}),
    ]
    actions = ["new_webhook_secret"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[AlertRule]:
        # Whether there is a secret, asked of the database: the value is never loaded.
        has_secret = ExpressionWrapper(Q(webhook_secret__isnull=False), output_field=BooleanField())
        queryset = super().get_queryset(request).defer("webhook_secret")
        queryset = queryset.prefetch_related(Prefetch("trackers", trackers_without_keys()))
        return queryset.annotate(has_secret=has_secret)

    def formfield_for_manytomany(
        self, db_field: ManyToManyField, request: HttpRequest, **kwargs: Any
    ) -> Any:
        if db_field.name == "trackers":
            kwargs["queryset"] = trackers_without_keys()
        return super().formfield_for_manytomany(db_field, request, **kwargs)

    def formfield_for_dbfield(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "webhook_url":
            kwargs["assume_scheme"] = "https"  # a URL typed without a scheme
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    def save_model(self, request: HttpRequest, obj: AlertRule, form: Any, change: bool) -> None:
        had_secret = (
            change and AlertRule.objects.filter(pk=obj.pk, webhook_secret__isnull=False).exists()
        )
        super().save_model(request, obj, form, change)
        if Channel.WEBHOOK in obj.channels and not had_secret:
            self._show_secret(request, obj, deliveries.ensure_webhook_secret(obj))

    def _show_secret(self, request: HttpRequest, rule: AlertRule, secret: str) -> None:
        self.message_user(
            request,
            format_html(
                "Webhook secret of “{}”: <code>{}</code> — copy it now, it is never shown "
                "again. Receivers verify X-Tracker-Signature with it.",
                rule.name,
                secret,
            ),
            messages.WARNING,
        )

    @admin.action(description="New webhook secret (shown once)", permissions=["change"])
    def new_webhook_secret(self, request: HttpRequest, queryset: QuerySet[AlertRule]) -> None:
        rules = list(queryset.filter(channels__contains=[Channel.WEBHOOK]))
        for rule in rules:
            self._show_secret(request, rule, deliveries.rotate_webhook_secret(rule))
        audit(request, rules, "New webhook secret")
        skipped = queryset.count() - len(rules)
        if skipped:
            self.message_user(request, f"{skipped} rule(s) without a webhook left alone.")

    @admin.display(description="events")
    def kinds(self, obj: AlertRule) -> str:
        return ", ".join(obj.event_kinds)

    @admin.display(description="channels")
    def channel_list(self, obj: AlertRule) -> str:
        return ", ".join(obj.channels)

    @admin.display(description="webhook secret")
    def secret_state(self, obj: AlertRule) -> str:
        if obj.pk is None:
            return "made when the rule is saved with the webhook channel"
        return "set (never shown again)" if obj.has_secret else "none"

    @admin.display(description="deliveries")
    def deliveries_link(self, obj: AlertRule) -> SafeString | str:
        if obj.pk is None:
            return EMPTY
        return format_html(
            '<a href="{}">deliveries</a>', changelist_url(AlertDelivery, rule=obj.pk)
        )


# --- deliveries -------------------------------------------------------------------------
class EventFilter(admin.SimpleListFilter):
    """Reached from an event's "deliveries" link: no choices of its own."""

    title = "event"
    parameter_name = "event"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple]:
        value = self.value()
        return [(value, f"event {value}")] if value and value.isdigit() else []

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        return queryset.filter(event_id=int(value)) if value and value.isdigit() else queryset


@admin.register(AlertDelivery)
class AlertDeliveryAdmin(ReadOnlyAdmin):
    list_display = [
        "created_at",
        "event_kind",
        "tracker",
        "geofence",
        "rule",
        "channel",
        "status",
        "attempts",
        "next_attempt_at",
        "delivered_at",
        "error",
    ]
    list_filter = ["status", "channel", RuleFilter, EventFilter]
    search_fields = ["event__tracker__name", "rule__name"]
    paginator = EstimatedCountPaginator
    show_full_result_count = False
    fields = [
        "event",
        "rule",
        "channel",
        "status",
        "attempts",
        "last_error",
        "next_attempt_at",
        "delivered_at",
        "created_at",
        "claimed_by",
        "lease_until",
    ]
    readonly_fields = fields
    actions = ["retry"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[AlertDelivery]:
        queryset = (
            super()
            .get_queryset(request)
            .select_related("event", "event__tracker", "event__geofence", "rule")
        )
        return queryset.defer("event__tracker__key_material", "rule__webhook_secret")

    @admin.display(description="event", ordering="event__kind")
    def event_kind(self, obj: AlertDelivery) -> str:
        return obj.event.kind

    @admin.display(description="tracker")
    def tracker(self, obj: AlertDelivery) -> str:
        return obj.event.tracker.name

    @admin.display(description="geofence")
    def geofence(self, obj: AlertDelivery) -> str:
        return obj.event.geofence.name if obj.event.geofence else EMPTY

    @admin.display(description="last error")
    def error(self, obj: AlertDelivery) -> str:
        return short_text(obj.last_error)

    @admin.action(description="Retry (send again now)", permissions=["change"])
    def retry(self, request: HttpRequest, queryset: QuerySet[AlertDelivery]) -> None:
        selected = list(queryset.select_related(None).only("id", "status", "channel", "event_id"))
        retried = deliveries.retry([d.pk for d in selected])
        audit(request, selected, "Retried")
        self.message_user(request, f"{retried} delivery(ies) queued to be sent again.")
        if retried < len(selected):
            self.message_user(
                request,
                f"{len(selected) - retried} delivered or suppressed delivery(ies) left alone.",
                messages.WARNING,
            )


# --- latest locations -------------------------------------------------------------------
class InsideFilter(admin.SimpleListFilter):
    title = "inside a fence"
    parameter_name = "inside"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple]:
        return [("yes", "Yes"), ("no", "No")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() == "yes":
            return queryset.exclude(fence_ids=[])
        if self.value() == "no":
            return queryset.filter(fence_ids=[])
        return queryset


class InsideFenceFilter(FenceFilter):
    """The rows inside one fence (its id in fence_ids)."""

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        if value and value.isdigit():
            return queryset.filter(fence_ids__contains=[int(value)])
        return queryset


@admin.register(LatestLocation)
class LatestLocationAdmin(ReadOnlyAdmin, ReadOnlyMapAdmin):
    """Each tracker's latest position (the materialized view, refreshed every minute), with
    the page's positions on one map above the list."""

    change_list_template = "admin/locations/latestlocation/change_list.html"
    list_display = [
        "tracker",
        "owner",
        "timestamp",
        "address",
        "horizontal_accuracy",
        "fences",
        "refreshed_at",
    ]
    list_filter = [InsideFilter, InsideFenceFilter]
    search_fields = ["tracker__name", "address"]
    list_select_related = ["tracker", "tracker__owner"]
    show_full_result_count = False
    fields = [
        "tracker",
        "report_link",
        "timestamp",
        "address",
        "horizontal_accuracy",
        "fences",
        "refreshed_at",
        "map",
    ]
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[LatestLocation]:
        queryset = super().get_queryset(request).select_related("tracker", "tracker__owner")
        # The names of the fences it is inside, in the same query (no query per row). Constant
        # SQL: nothing of the request goes into it.
        fence_names = RawSQL(
            "ARRAY(SELECT g.name FROM geofences_geofence AS g "
            "WHERE g.id = ANY(locations_latestlocation.fence_ids) ORDER BY g.name)",
            [],
        )
        return queryset.defer("tracker__key_material").annotate(fence_names=fence_names)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # rows of a view: they go when their tracker's reports do

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        response = super().changelist_view(request, extra_context)
        context = getattr(response, "context_data", None)
        if context and "cl" in context:
            points = [row.point for row in context["cl"].result_list]
            context["positions_map"] = self.positions_map(points)
            context["media"] = context["media"] + self.gis_widget().media
        return response

    def positions_map(self, points: list[Point]) -> SafeString | str:
        if not points:
            return ""
        return self.map_display("positions", MultiPoint(points, srid=4326))

    @admin.display(description="owner")
    def owner(self, obj: LatestLocation) -> str:
        return obj.tracker.owner.username if obj.tracker.owner else EMPTY

    @admin.display(description="inside")
    def fences(self, obj: LatestLocation) -> SafeString | str:
        names = getattr(obj, "fence_names", None) or []
        if not names:
            return EMPTY
        return format_html_join(", ", "{}", ((n,) for n in names))

    @admin.display(description="report")
    def report_link(self, obj: LatestLocation) -> SafeString:
        url = reverse("admin:locations_locationreport_change", args=[obj.report_id])
        return format_html('<a href="{}">{}</a>', url, obj.report_id)

    @admin.display(description="position")
    def map(self, obj: LatestLocation) -> SafeString | str:
        return self.map_display("point", obj.point)
