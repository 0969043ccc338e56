"""Location reports in the admin: read-only, the biggest table, kept fast."""

from __future__ import annotations

import base64

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.safestring import SafeString

from locations.models import LocationReport

from .base import EstimatedCountPaginator, ReadOnlyAdmin, ReadOnlyMapAdmin


class ConfidenceFilter(admin.SimpleListFilter):
    """Apple's confidence is 1 to 3: fixed choices, no SELECT DISTINCT over every report."""

    title = "confidence"
    parameter_name = "confidence"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("1", "1"), ("2", "2"), ("3", "3")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return queryset.filter(confidence=int(self.value())) if self.value() else queryset


@admin.register(LocationReport)
class LocationReportAdmin(ReadOnlyAdmin, ReadOnlyMapAdmin):
    list_display = [
        "tracker",
        "timestamp",
        "latitude",
        "longitude",
        "horizontal_accuracy",
        "confidence",
        "status",
        "fetched_at",
    ]
    date_hierarchy = "timestamp"
    # The production runs themselves, not RelatedOnlyFieldListFilter: that one would collect
    # the runs in use with a DISTINCT over every report.
    list_filter = ["tracker__production_run", ConfidenceFilter]
    search_fields = ["tracker__name"]
    raw_id_fields = ["tracker"]
    list_select_related = ["tracker"]
    paginator = EstimatedCountPaginator
    show_full_result_count = False
    fields = [
        "tracker",
        "timestamp",
        "latitude",
        "longitude",
        "horizontal_accuracy",
        "confidence",
        "status",
        "fetched_at",
        "payload_base64",
        "map",
    ]
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[LocationReport]:
        # The payload is read on the report's own page only; the tracker's keys never.
        queryset = super().get_queryset(request).select_related("tracker")
        return queryset.defer("payload", "tracker__key_material")

    @admin.display(description="payload (base64)")
    def payload_base64(self, obj: LocationReport) -> str:
        # Not a secret: it is encrypted to the tracker's key, as Apple returned it.
        return base64.b64encode(bytes(obj.payload)).decode()

    @admin.display(description="position")
    def map(self, obj: LocationReport) -> SafeString | str:
        return self.map_display("point", obj.point)
