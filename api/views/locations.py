"""Location history: `trackers/{id}/locations` and `locations`, as JSON pages or exports.

JSON answers are pages in (timestamp, id) order with a keyset cursor (api/cursor.py), cached
per user and query (api/search_cache.py). `format=geojson|gpx|csv` streams the whole range
from a server-side cursor (rows are never all in memory, here or in the web server).

Which index serves what (EXPLAIN in tests/api/test_locations.py and bench/api.py):
* one tracker, or a few named ones: `report_tracker_time_idx` (tracker_id, timestamp DESC),
  read backwards for (timestamp, id) order, the id ties sorted per timestamp (incremental
  sort), the range and the cursor as index conditions;
* a bbox: the GiST index on `point` (`&&`, a box per side of the antimeridian);
* the whole fleet over a time range: `report_time_idx` (timestamp DESC).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from django.contrib.gis.geos import Polygon
from django.db import router, transaction
from django.db.models import F, FloatField, Func, Q, QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param

from api import cursor as keyset
from api import search_cache
from api.envelope import EnvelopeJSONRenderer, GeoJSONRenderer
from api.filters import LocationQuery, parse_location_query
from api.formats import (
    CSVRenderer,
    GPXRenderer,
    filename_time,
    location_object,
    streaming_response,
)
from api.permissions import owned
from api.views.base import ApiView
from locations import generations
from locations.models import LocationReport
from trackers.models import FleetVersion, Tracker, fleet_version

# Rows a server-side cursor fetches per round trip while an export streams.
EXPORT_CHUNK_ROWS = 2000
ROW_COLUMNS = (
    "id",
    "tracker_id",
    "timestamp",
    "_lat",
    "_lon",
    "horizontal_accuracy",
    "confidence",
    "status",
    "address__label",
)


def latitude() -> Func:
    return Func(F("point"), function="ST_Y", output_field=FloatField())


def longitude() -> Func:
    return Func(F("point"), function="ST_X", output_field=FloatField())


def owned_tracker_ids(user: Any, ids: Sequence[int] | None = None) -> list[int]:
    """The ids (sorted) of the trackers `user` may see, among `ids` when given."""
    trackers = owned(Tracker.objects.all(), user, "owner")
    if ids is not None:
        trackers = trackers.filter(pk__in=ids)
    return list(trackers.order_by("pk").values_list("pk", flat=True))


def user_fleet_version(user: Any) -> int:
    """The user's fleet version: read with the token at authentication (api.auth), else now."""
    version = getattr(user, "fleet_version", None)
    if version is None:
        version = fleet_version(user.pk, router.db_for_read(FleetVersion))
    return version


def check_trackers(user: Any, ids: Sequence[int]) -> None:
    """A 400 naming `tracker` for ids the user may not see (unknown and foreign alike)."""
    missing = sorted(set(ids) - set(owned_tracker_ids(user, ids)))
    if missing:
        raise ValidationError({"tracker": [f"no such tracker: {', '.join(map(str, missing))}"]})


def report_rows(user: Any, query: LocationQuery) -> QuerySet:
    """The reports the query asks for (as ROW_COLUMNS tuples), unordered.

    `query.trackers` must already be checked as the user's: the filter is then on tracker_id
    alone, with no join to the tracker table.
    """
    reports = LocationReport.objects.filter(
        timestamp__gte=query.starts_at, timestamp__lt=query.ends_at
    )
    if query.trackers is not None:
        reports = reports.filter(tracker_id__in=query.trackers)
    else:
        reports = owned(reports, user, "tracker__owner")
    if query.bbox is not None:
        within = Q()
        for part in query.bbox.parts():
            within |= Q(point__bboverlaps=Polygon.from_bbox(part))
        reports = reports.filter(within)
    if query.max_accuracy is not None:
        reports = reports.filter(horizontal_accuracy__lte=query.max_accuracy)
    return reports.annotate(_lat=latitude(), _lon=longitude()).values_list(*ROW_COLUMNS)


def page(rows: QuerySet, query: LocationQuery) -> dict[str, Any]:
    """One JSON page: {"results": [...], "cursor": token of the next page or None}."""
    rows = rows.order_by("timestamp", "id")
    if query.after is not None:
        moment, report_id = query.after
        # The range condition lets the index start at the cursor; the OR settles ties.
        rows = rows.filter(
            Q(timestamp__gt=moment) | Q(timestamp=moment, id__gt=report_id),
            timestamp__gte=moment,
        )
    found = list(rows[: query.limit + 1])
    token = None
    if len(found) > query.limit:
        found = found[: query.limit]
        token = keyset.encode(found[-1][2], found[-1][0])
    return {"results": [location_object(row) for row in found], "cursor": token}


def streamed(rows: QuerySet) -> Iterator[tuple]:
    """Rows from a server-side cursor, EXPORT_CHUNK_ROWS per fetch.

    Inside a transaction, so the cursor is a plain one that PostgreSQL produces as it is read
    (outside one, Django declares it WITH HOLD, which computes the whole result first). A
    client that goes away closes the generator: the transaction ends and the cursor with it.
    """
    with transaction.atomic():
        yield from rows.iterator(chunk_size=EXPORT_CHUNK_ROWS)


LOCATION_OBJECT = inline_serializer(
    "Location",
    {
        "id": serializers.IntegerField(),
        "tracker": serializers.IntegerField(),
        "timestamp": serializers.DateTimeField(),
        "latitude": serializers.FloatField(),
        "longitude": serializers.FloatField(),
        "accuracy": serializers.IntegerField(help_text="Metres."),
        "confidence": serializers.IntegerField(),
        "status": serializers.IntegerField(help_text="Status byte (battery on AirTags)."),
        "address": serializers.CharField(allow_null=True),
    },
)
LOCATION_PAGE = inline_serializer(
    "LocationPage",
    {
        "results": LOCATION_OBJECT.__class__(many=True),
        "next": serializers.URLField(allow_null=True),
    },
)
QUERY_PARAMETERS = [
    OpenApiParameter(
        "starts_at",
        OpenApiTypes.DATETIME,
        required=True,
        description="ISO 8601 with a time zone; included",
    ),
    OpenApiParameter(
        "ends_at",
        OpenApiTypes.DATETIME,
        required=True,
        description="ISO 8601 with a time zone; excluded; at most API_MAX_RANGE_DAYS after "
        "starts_at",
    ),
    OpenApiParameter(
        "bbox",
        str,
        description="min_lon,min_lat,max_lon,max_lat in degrees; min_lon > max_lon crosses "
        "the antimeridian",
    ),
    OpenApiParameter("max_accuracy", int, description="only reports this accurate (metres)"),
    OpenApiParameter(
        "format", str, enum=["json", "geojson", "gpx", "csv"], description="default json"
    ),
    OpenApiParameter("limit", int, description="JSON: rows per page, 1 to 1000 (default 100)"),
    OpenApiParameter("cursor", str, description="JSON: the `next` page's position"),
]


class LocationSearchView(ApiView):
    """Shared by both location endpoints: parse, check, then page (cached) or stream."""

    renderer_classes = [EnvelopeJSONRenderer, GeoJSONRenderer, GPXRenderer, CSVRenderer]
    query_params = ("starts_at", "ends_at", "bbox", "max_accuracy", "limit", "cursor")

    def answer(
        self,
        request: Request,
        query: LocationQuery,
        filename: str,
        check: Callable[[], None] = lambda: None,
    ) -> Any:
        """The answer to a parsed query. `check()` raises unless the user may see the
        trackers the query names: run before any rows are read, and skipped for an owner's
        cached page, which was stored after the same check under the owner's fleet version:
        while that version stands, no tracker has joined or left the owner's fleet."""
        user = request.user
        if query.format != "json":
            check()
            rows = report_rows(user, query)
            if query.format == "gpx":
                # One track per tracker: grouped by tracker, each in time order.
                rows = rows.values_list(*ROW_COLUMNS, "tracker__name").order_by(
                    "tracker_id", "timestamp", "id"
                )
            else:
                rows = rows.order_by("timestamp", "id")
            span = f"{filename_time(query.starts_at)}-{filename_time(query.ends_at)}"
            return streaming_response(query.format, streamed(rows), f"{filename}-{span}")
        if user.is_staff:
            check()  # staff's entries stand for every tracker: the check runs every time

        def scope() -> tuple[list[str], object]:
            if query.trackers is not None:
                keys = generations.tracker_keys(query.trackers)
            elif user.is_staff:
                keys = [generations.fleet_key()]
            else:
                keys = [generations.owner_key(user.pk)]
            return keys, "staff" if user.is_staff else ("owner", user_fleet_version(user))

        def compute() -> dict[str, Any]:
            if not user.is_staff:
                check()
            return page(report_rows(user, query), query)

        result = search_cache.cached(user.pk, query.identity(), scope, compute)
        url = None
        if result["cursor"] is not None:
            url = replace_query_param(request.build_absolute_uri(), "cursor", result["cursor"])
        return Response({"results": result["results"], "next": url})


class TrackerLocationsView(LocationSearchView):
    """One tracker's reports in a time range."""

    @extend_schema(
        parameters=QUERY_PARAMETERS,
        responses={200: LOCATION_PAGE},
        description="A tracker's location reports in [starts_at, ends_at), oldest first: "
        "JSON pages, or the whole range as GeoJSON, GPX 1.1 or CSV (streamed).",
    )
    def get(self, request: Request, pk: int) -> Any:
        query = parse_location_query(request.query_params, allow_tracker=False)
        query = dataclasses.replace(query, trackers=(pk,))

        def check() -> None:
            if not owned_tracker_ids(request.user, [pk]):
                raise NotFound()

        return self.answer(request, query, f"tracker-{pk}-locations", check)


class LocationsView(LocationSearchView):
    """Reports of my trackers (or of the named ones) in a time range, optionally in a box."""

    query_params = (*LocationSearchView.query_params, "tracker")

    @extend_schema(
        parameters=[
            *QUERY_PARAMETERS,
            OpenApiParameter(
                "tracker",
                str,
                description="tracker ids, comma-separated (or repeated); another user's "
                "or an unknown id is a 400 naming `tracker`",
            ),
        ],
        responses={200: LOCATION_PAGE},
        description="Location reports of the trackers you may see in [starts_at, ends_at), "
        "oldest first: JSON pages, or the whole range as GeoJSON, GPX 1.1 or CSV (streamed).",
    )
    def get(self, request: Request) -> Any:
        query = parse_location_query(request.query_params, allow_tracker=True)
        named = query.trackers

        def check() -> None:
            if named is not None:
                check_trackers(request.user, named)

        return self.answer(request, query, "locations", check)
