"""GET /events, /events/{id}: geofence and tracker events, newest first."""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins

from api.serializers.events import EventSerializer
from api.views import params
from api.views.base import OwnedViewSet
from geofences.models import EventKind, GeofenceEvent


@extend_schema_view(
    list=extend_schema(
        parameters=[
            OpenApiParameter("tracker", OpenApiTypes.INT, description="a tracker's id"),
            OpenApiParameter("geofence", OpenApiTypes.INT, description="a geofence's id"),
            OpenApiParameter("kind", OpenApiTypes.STR, enum=EventKind.values),
            *params.TIME_RANGE_PARAMETERS,
        ]
    )
)
class EventViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, OwnedViewSet):
    """Events of the requester's trackers (staff: all), newest first by `occurred_at`."""

    queryset = GeofenceEvent.objects.select_related("tracker", "geofence").defer(
        "tracker__key_material"
    )
    serializer_class = EventSerializer
    owner_path = "tracker__owner"
    pagination_key = "occurred_at"
    pagination_descending = True
    list_query_params = ("tracker", "geofence", "kind", "starts_at", "ends_at")

    def get_queryset(self) -> Any:
        queryset = super().get_queryset()
        if not self.is_list():
            return queryset
        request = self.request
        filters: dict[str, Any] = {}
        starts_at, ends_at = params.time_range(request)
        if starts_at:
            filters["occurred_at__gte"] = starts_at
        if ends_at:
            filters["occurred_at__lte"] = ends_at
        for name in ("tracker", "geofence"):
            if (value := params.positive_int(request, name)) is not None:
                filters[f"{name}_id"] = value
        if (kind := params.choice(request, "kind", EventKind.values)) is not None:
            filters["kind"] = kind
        return queryset.filter(**filters)
