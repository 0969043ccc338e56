"""`GET /api/v1/latest`: each of my trackers' latest position, with the fences it is inside.

Read from the latest-location materialized view (locations/latest.py, refreshed every
minute), never from a DISTINCT ON over the report table. JSON answers are pages ordered by
tracker id (keyset on the id); `format=geojson` is one FeatureCollection of every tracker.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param

from api import cursor as keyset
from api.envelope import EnvelopeJSONRenderer, GeoJSONRenderer
from api.filters import parse_latest_query
from api.formats import feature_collection, iso
from api.permissions import owned
from api.views.base import ApiView
from api.views.locations import check_trackers, latitude, longitude
from geofences.models import Geofence
from locations.models import LatestLocation

COLUMNS = (
    "tracker_id",
    "tracker__name",
    "timestamp",
    "_lat",
    "_lon",
    "horizontal_accuracy",
    "address",
    "fence_ids",
)


def latest_object(row: tuple, fence_names: dict[int, str]) -> dict[str, Any]:
    tracker, name, timestamp, lat, lon, accuracy, address, fence_ids = row
    return {
        "tracker": tracker,
        "tracker_name": name,
        "timestamp": iso(timestamp),
        "latitude": lat,
        "longitude": lon,
        "accuracy": accuracy,
        "address": address,
        "fences": [{"id": f, "name": fence_names[f]} for f in fence_ids if f in fence_names],
    }


def fence_names(user: Any, rows: Iterable[tuple]) -> dict[int, str]:
    """{id: name} of the fences the rows are inside, among those the user may see."""
    ids = {f for row in rows for f in row[-1]}
    if not ids:
        return {}
    fences = owned(Geofence.objects.filter(pk__in=ids), user, "owner")
    return dict(fences.values_list("pk", "name"))


def feature(item: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "Feature",
        "id": item["tracker"],
        "geometry": {"type": "Point", "coordinates": [item["longitude"], item["latitude"]]},
        "properties": item,
    }


LATEST_OBJECT = inline_serializer(
    "LatestLocation",
    {
        "tracker": serializers.IntegerField(),
        "tracker_name": serializers.CharField(),
        "timestamp": serializers.DateTimeField(),
        "latitude": serializers.FloatField(),
        "longitude": serializers.FloatField(),
        "accuracy": serializers.IntegerField(help_text="Metres."),
        "address": serializers.CharField(allow_null=True),
        "fences": inline_serializer(
            "FenceRef",
            {"id": serializers.IntegerField(), "name": serializers.CharField()},
            many=True,
        ),
    },
)


class LatestView(ApiView):
    """Each tracker's newest report from the latest-location view."""

    renderer_classes = [EnvelopeJSONRenderer, GeoJSONRenderer]
    query_params = ("tracker", "limit", "cursor")

    @extend_schema(
        parameters=[
            OpenApiParameter("format", str, enum=["json", "geojson"]),
            OpenApiParameter("tracker", str, description="tracker ids, comma-separated"),
            OpenApiParameter("limit", int, description="JSON: 1 to 1000 (default 100)"),
            OpenApiParameter("cursor", str, description="JSON: the `next` page's position"),
        ],
        responses={
            200: inline_serializer(
                "LatestPage",
                {
                    "results": LATEST_OBJECT.__class__(many=True),
                    "next": serializers.URLField(allow_null=True),
                },
            )
        },
        description="The latest position of each of your trackers (refreshed every minute), "
        "with its address and the active fences it is inside.",
    )
    def get(self, request: Request) -> Any:
        fmt, trackers, limit, after = parse_latest_query(request.query_params)
        user = request.user
        if trackers is not None:
            check_trackers(user, trackers)
        rows = owned(LatestLocation.objects.all(), user, "tracker__owner")
        if trackers is not None:
            rows = rows.filter(tracker_id__in=trackers)
        rows = rows.annotate(_lat=latitude(), _lon=longitude()).values_list(*COLUMNS)
        rows = rows.order_by("tracker_id")
        if fmt == "geojson":
            found = list(rows)
            names = fence_names(user, found)
            return Response(feature_collection(feature(latest_object(r, names)) for r in found))
        if after is not None:
            rows = rows.filter(tracker_id__gt=after)
        found = list(rows[: limit + 1])
        url = None
        if len(found) > limit:
            found = found[:limit]
            token = keyset.encode(found[-1][2], found[-1][0])
            url = replace_query_param(request.build_absolute_uri(), "cursor", token)
        names = fence_names(user, found)
        return Response({"results": [latest_object(r, names) for r in found], "next": url})
