"""/health/live, /health, /status/queue, /status/worker and /metrics: public, read-only, thin.

They answer without authentication: load balancers probe /health/live (and /health),
Prometheus scrapes /metrics, dashboards read /status/*. None of them shows a secret; keep
/status/* and /metrics on the internal network all the same (they name hosts, pids and
accounts). When the database is down or not migrated they answer 503 with a JSON body
naming it (monitoring.api.exceptions).
"""

from __future__ import annotations

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import BaseParser
from rest_framework.permissions import AllowAny
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from monitoring import health, metrics

from .serializers import (
    HealthSerializer,
    LiveSerializer,
    QueueStatusSerializer,
    UnavailableSerializer,
    WorkerStatusSerializer,
)

UNAVAILABLE = OpenApiResponse(
    UnavailableSerializer, description="The database is down or not migrated."
)


class JSONWhateverAccepted(BaseContentNegotiation):
    """Probes send all sorts of Accept headers (Prometheus asks for text formats first):
    answer JSON to every one of them rather than 406."""

    def select_parser(self, request: Request, parsers: list[BaseParser]) -> BaseParser:
        return parsers[0]

    def select_renderer(
        self, request: Request, renderers: list[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        return renderers[0], renderers[0].media_type


class PublicView(APIView):
    # No authentication at all: a probe's stray credentials must not turn into a 401, and
    # no session lookup touches the database before the view runs.
    authentication_classes = []
    permission_classes = [AllowAny]
    content_negotiation_class = JSONWhateverAccepted


class LiveView(PublicView):
    @extend_schema(
        summary="Liveness: the process can serve requests (no database, no Redis)",
        description="For load balancers and process supervisors: 200 whenever this process "
        "answers at all. The fleet's health is GET /health.",
        responses=LiveSerializer,
        tags=["monitoring"],
    )
    def get(self, request: Request) -> Response:
        return Response({"status": "ok"})


class HealthView(PublicView):
    @extend_schema(
        summary="Health of the service",
        responses={
            200: HealthSerializer,
            503: OpenApiResponse(
                HealthSerializer,
                description="A check is failing (the database, when it is down or not migrated).",
            ),
        },
        tags=["monitoring"],
    )
    def get(self, request: Request) -> Response:
        report = health.run_checks()
        code = status.HTTP_200_OK if report.healthy else status.HTTP_503_SERVICE_UNAVAILABLE
        return Response(HealthSerializer(report.as_dict()).data, status=code)


class QueueStatusView(PublicView):
    @extend_schema(
        summary="The fetch queue and the fleet's cycle capacity",
        responses={200: QueueStatusSerializer, 503: UNAVAILABLE},
        tags=["monitoring"],
    )
    def get(self, request: Request) -> Response:
        return Response(QueueStatusSerializer(health.queue_status().as_dict()).data)


class WorkerStatusView(PublicView):
    @extend_schema(
        summary="Service instances and their liveness",
        responses={200: WorkerStatusSerializer, 503: UNAVAILABLE},
        tags=["monitoring"],
    )
    def get(self, request: Request) -> Response:
        return Response(WorkerStatusSerializer(health.worker_status()).data)


class MetricsView(PublicView):
    @extend_schema(
        summary="Prometheus metrics (text exposition format)",
        responses={(200, "text/plain"): OpenApiTypes.STR, 503: UNAVAILABLE},
        tags=["monitoring"],
    )
    def get(self, request: Request) -> HttpResponse:
        # A database error answers 503 JSON like the other endpoints; Prometheus records the
        # failed scrape (up == 0) whatever the body says.
        body, content_type = metrics.render()
        return HttpResponse(body, content_type=content_type)
