"""/alert-rules (CRUD), /deliveries (read) and POST /deliveries/{id}/retry."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from api.envelope import Conflict
from api.serializers.alerts import AlertRuleSerializer, DeliverySerializer
from api.views.base import OwnedViewSet
from geofences import deliveries
from geofences.models import AlertDelivery, AlertRule


class AlertRuleViewSet(
    mixins.ListModelMixin,
    mixins.CreateModelMixin,
    mixins.RetrieveModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    OwnedViewSet,
):
    """The requester's alert rules (staff: all)."""

    queryset = AlertRule.objects.prefetch_related("geofences", "trackers")
    serializer_class = AlertRuleSerializer
    pagination_key = "created_at"
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_queryset(self) -> Any:
        queryset = super().get_queryset()
        # The secret is loaded only where a save may need it, never to list rules.
        return queryset.defer("webhook_secret") if self.action in ("list", "retrieve") else queryset

    def get_serializer_context(self) -> dict[str, Any]:
        return {**super().get_serializer_context(), "owner": self.request.user}


class DeliveryViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, OwnedViewSet):
    """Deliveries of the requester's rules (staff: all), newest first."""

    queryset = AlertDelivery.objects.all()
    serializer_class = DeliverySerializer
    owner_path = "rule__owner"
    pagination_key = "created_at"
    pagination_descending = True

    @extend_schema(
        request=None,
        responses={
            200: DeliverySerializer,
            409: OpenApiResponse(description="delivered or suppressed: not sent again"),
        },
    )
    @action(detail=True, methods=["post"])
    def retry(self, request: Request, pk: str | None = None) -> Response:
        """Send a failed (or pending) delivery again now, as the admin's action does; a
        delivered or suppressed one is a 409."""
        delivery = self.get_object()
        if not deliveries.retry([delivery.pk]):
            raise Conflict(f"a {delivery.status} delivery is not sent again")
        delivery.refresh_from_db()
        return Response(self.get_serializer(delivery).data)
