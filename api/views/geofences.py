"""/geofences (CRUD); `?format=geojson` on the list gives the shapes as a FeatureCollection."""

from __future__ import annotations

from typing import Any

from django.db.models import Prefetch
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins
from rest_framework.request import Request
from rest_framework.response import Response

from api.envelope import EnvelopeJSONRenderer, GeoJSONRenderer
from api.serializers.geofences import GeofenceFeatureSerializer, GeofenceSerializer
from api.views.base import OwnedViewSet
from geofences.models import Geofence
from trackers.models import Tracker

FORMAT_PARAMETER = OpenApiParameter(
    "format",
    OpenApiTypes.STR,
    enum=["json", "geojson"],
    description="geojson: a FeatureCollection of the fence outlines (circles as polygons), "
    "unpaginated, not enveloped",
)


@extend_schema_view(list=extend_schema(parameters=[FORMAT_PARAMETER]))
class GeofenceViewSet(
    mixins.ListModelMixin,
    mixins.CreateModelMixin,
    mixins.RetrieveModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    OwnedViewSet,
):
    """The requester's geofences (staff: all)."""

    queryset = Geofence.objects.prefetch_related(
        Prefetch("trackers", Tracker.objects.only("id", "owner_id"))
    )
    serializer_class = GeofenceSerializer
    pagination_key = "created_at"
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_renderers(self) -> list[Any]:
        if self.action == "list" or getattr(self, "action", None) is None:
            return [EnvelopeJSONRenderer(), GeoJSONRenderer()]
        return [EnvelopeJSONRenderer()]

    def get_serializer_context(self) -> dict[str, Any]:
        return {**super().get_serializer_context(), "owner": self.request.user}

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        if request.accepted_renderer.format == "geojson":
            fences = self.get_queryset().order_by("created_at", "id")
            features = GeofenceFeatureSerializer(fences, many=True).data
            return Response({"type": "FeatureCollection", "features": features})
        return super().list(request, *args, **kwargs)
