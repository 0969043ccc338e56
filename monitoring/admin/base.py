"""The admin building blocks every page of the operators' dashboard shares: read-only admins,
change forms that save only what the operator changed, a paginator for big tables, short text
with a tooltip, positions on a map that is not a form field, and the fleet actions."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.contrib import admin
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.admin.utils import NestedObjects, quote
from django.contrib.gis.admin import GISModelAdmin
from django.contrib.gis.geos import GEOSGeometry
from django.core.paginator import Paginator
from django.db import connection, models, router
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import NoReverseMatch, reverse
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.text import Truncator, capfirst

from trackers.fields import EncryptedJSONField
from trackers.models import AccountStatus, AppleAccount, Tracker

EMPTY = "—"


# --- shared building blocks -------------------------------------------------------------
def short_text(text: str, length: int = 80) -> str:
    """The start of a long text for a list column; the whole text shows on hover."""
    if not text:
        return EMPTY
    return format_html('<span title="{}">{}</span>', text, Truncator(text).chars(length))


def audit(request: HttpRequest, objects: Iterable[models.Model], message: str) -> None:
    """Record an admin action in each object's history, like a change through the form."""
    LogEntry.objects.log_actions(request.user.pk, list(objects), CHANGE, change_message=message)


class EstimatedCountPaginator(Paginator):
    """Counts a big unfiltered table from PostgreSQL's statistics instead of scanning it.

    The admin counts the rows of every changelist page; on hundreds of millions of location
    reports an exact COUNT(*) takes longer than the page itself. Filtered lists (a tracker,
    a day) are counted exactly: the filters use indexes.
    """

    exact_below = 100_000

    @cached_property
    def count(self) -> int:
        object_list = self.object_list
        if isinstance(object_list, QuerySet) and not object_list.query.where:
            estimate = estimated_rows(object_list.model._meta.db_table)
            if estimate >= self.exact_below:
                return estimate
        return super().count


def estimated_rows(table: str) -> int:
    """pg_class.reltuples: the planner's row count (-1 until the table is first analysed)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass", [table])
        row = cursor.fetchone()
    return int(row[0]) if row else -1


class SaveChangedFieldsMixin:
    """A change form writes only the fields the operator changed.

    Workers update the same rows concurrently (leases, breaker state, refreshed account
    tokens); a full save() would write back the values read when the form was loaded.
    """

    def save_model(self, request: HttpRequest, obj: models.Model, form: Any, change: bool) -> None:
        if not change:
            super().save_model(request, obj, form, change)  # type: ignore[misc]
            return
        if form.changed_data:
            auto_now = [f.name for f in obj._meta.concrete_fields if getattr(f, "auto_now", False)]
            obj.save(update_fields=[*form.changed_data, *auto_now])


def secret_fields(model: type[models.Model]) -> list[str]:
    """The model's encrypted fields: never loaded for an admin page."""
    return [f.name for f in model._meta.concrete_fields if isinstance(f, EncryptedJSONField)]


class SecretFreeCollector(NestedObjects):
    """The delete confirmation page's collector, never loading an encrypted field: not of the
    rows a delete takes with it (a user's alert rules), nor of the rows Django joins to them
    to name them (a delivery's rule, a fence assignment's tracker)."""

    def related_objects(
        self, related_model: type[models.Model], related_fields: list, objs: Any
    ) -> QuerySet:
        queryset = super().related_objects(related_model, related_fields, objs)
        deferred = secret_fields(related_model)
        for field in related_fields:
            target = field.remote_field.model
            deferred += [f"{field.name}__{name}" for name in secret_fields(target)]
        return queryset.defer(*deferred) if deferred else queryset


def deleted_objects(
    objs: list[models.Model], request: HttpRequest, admin_site: admin.AdminSite
) -> tuple[list[Any], dict[str, int], set[str], list[Any]]:
    """django.contrib.admin.utils.get_deleted_objects (Django 5.2), with SecretFreeCollector."""
    if not objs:
        return [], {}, set(), []
    collector = SecretFreeCollector(using=router.db_for_write(type(objs[0])), origin=objs)
    collector.collect(objs)
    perms_needed: set[str] = set()

    def format_callback(obj: models.Model) -> str:
        opts = obj._meta
        no_edit_link = f"{capfirst(opts.verbose_name)}: {obj}"
        if not admin_site.is_registered(type(obj)):
            return no_edit_link
        if not admin_site.get_model_admin(type(obj)).has_delete_permission(request, obj):
            perms_needed.add(opts.verbose_name)
        try:
            url = reverse(
                f"{admin_site.name}:{opts.app_label}_{opts.model_name}_change",
                args=[quote(obj.pk)],
            )
        except NoReverseMatch:
            return no_edit_link
        return format_html('{}: <a href="{}">{}</a>', capfirst(opts.verbose_name), url, obj)

    to_delete = collector.nested(format_callback)
    protected = [format_callback(obj) for obj in collector.protected]
    counts = {m._meta.verbose_name_plural: len(o) for m, o in collector.model_objs.items()}
    return to_delete, counts, perms_needed, protected


class SecretFreeDeleteMixin:
    """Delete confirmation pages that list what goes with the object without decrypting it."""

    def get_deleted_objects(
        self, objs: Iterable[models.Model], request: HttpRequest
    ) -> tuple[list[Any], dict[str, int], set[str], list[Any]]:
        return deleted_objects(list(objs), request, self.admin_site)  # type: ignore[attr-defined]


class ReadOnlyAdmin(SecretFreeDeleteMixin, admin.ModelAdmin):
    """Records written by the system: viewed, acted on through actions, deleted by superusers.

    The change permission is kept on the changelist (obj is None) so that actions declared
    with `permissions=["change"]` stay available; every object page is view-only.
    """

    empty_value_display = EMPTY

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
        return obj is None and super().has_change_permission(request)

    def has_delete_permission(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
        return request.user.is_superuser


class AccountFilter(admin.RelatedFieldListFilter):
    """The accounts by name, without loading (and decrypting) their saved state."""

    def field_choices(
        self, field: models.Field, request: HttpRequest, model_admin: admin.ModelAdmin
    ) -> list[tuple[int, str]]:
        return list(AppleAccount.objects.order_by("name").values_list("pk", "name"))


def reset_breakers(accounts: QuerySet[AppleAccount]) -> int:
    """Close the circuit of these accounts: active, no failures counted, no cool-down."""
    return accounts.update(
        status=AccountStatus.ACTIVE, consecutive_failures=0, backoff_until=None, last_error=""
    )


def release_trackers(trackers: QuerySet[Tracker], *, due_now: bool = False) -> int:
    """Take trackers out of quarantine with a clean failure count (and fetch them next)."""
    released = trackers.update(quarantined_at=None, consecutive_failures=0)
    if due_now:
        trackers.make_due()
    return released


class ReadOnlyMapAdmin(GISModelAdmin):
    """Positions shown on the GIS admin's map, as a display rather than a form field.

    Positions come from reports only; a map that is not a form field cannot be saved over a
    position a worker has just moved.
    """

    empty_value_display = EMPTY

    def map_display(self, name: str, geometry: GEOSGeometry | None) -> SafeString | str:
        if geometry is None:
            return EMPTY
        widget = self.gis_widget(**self.gis_widget_kwargs)
        return widget.render(name, geometry, attrs={"id": f"id_{name}", "disabled": True})

    def render_change_form(
        self, request: HttpRequest, context: dict[str, Any], *args: Any, **kwargs: Any
    ) -> HttpResponse:
        # The map is not in the form, so the form's media lacks OpenLayers.
        context["media"] = context["media"] + self.gis_widget().media
        return super().render_change_form(request, context, *args, **kwargs)
