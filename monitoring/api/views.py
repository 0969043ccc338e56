"""/health, /status/queue, /status/worker and /metrics: public, read-only, thin.

They answer without authentication: load balancers probe /health, Prometheus scrapes
/metrics, dashboards read /status/*. None of them shows a secret; keep /status/* and
/metrics on the internal network all the same (they name hosts, pids and accounts).
"""

from __future__ import annotations

from django.db import DatabaseError
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from monitoring import health, metrics

from .serializers import HealthSerializer, QueueStatusSerializer, WorkerStatusSerializer


class PublicView(APIView):
    # No authentication at all: a probe's stray credentials must not turn into a 401.
    authentication_classes = []
    permission_classes = [AllowAny]


class HealthView(PublicView):
    @extend_schema(
        summary="Health of the service",
        responses={
            200: HealthSerializer,
            503: OpenApiResponse(HealthSerializer, description="A check is failing."),
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
        responses=QueueStatusSerializer,
        tags=["monitoring"],
    )
    def get(self, request: Request) -> Response:
        return Response(QueueStatusSerializer(health.queue_status().as_dict()).data)


class WorkerStatusView(PublicView):
    @extend_schema(
        summary="Service instances and their liveness",
        responses=WorkerStatusSerializer,
        tags=["monitoring"],
    )
    def get(self, request: Request) -> Response:
        return Response(WorkerStatusSerializer(health.worker_status()).data)


class MetricsView(PublicView):
    @extend_schema(
        summary="Prometheus metrics (text exposition format)",
        responses={
            (200, "text/plain"): OpenApiTypes.STR,
            (503, "text/plain"): OpenApiResponse(
                OpenApiTypes.STR, description="The database is unavailable."
            ),
        },
        tags=["monitoring"],
    )
    def get(self, request: Request) -> HttpResponse:
        try:
            body, content_type = metrics.render()
        except DatabaseError as exc:
            # Prometheus records the failed scrape (up == 0); say why, without details.
            return HttpResponse(
                f"database unavailable: {type(exc).__name__}\n",
                status=status.HTTP_503_SERVICE_UNAVAILABLE,
                content_type="text/plain; charset=utf-8",
            )
        return HttpResponse(body, content_type=content_type)
