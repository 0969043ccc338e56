"""A small read/write API of the tests' own, under /api/v1/ like the real one, that says
which server answered: every row carries `inet_server_port()` and `pg_is_in_recovery()` of
the connection the router chose for the query."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import BooleanField, Func, IntegerField
from django.urls import include, path
from django.utils import timezone
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from tracker_project import replicas
from trackers.models import ProductionRun


class ServerPort(Func):
    template = "inet_server_port()"
    output_field = IntegerField()


class InRecovery(Func):
    template = "pg_is_in_recovery()"
    output_field = BooleanField()


def runs() -> dict[str, Any]:
    rows = list(
        ProductionRun.objects.annotate(port=ServerPort(), recovery=InRecovery())
        .order_by("name")
        .values("name", "port", "recovery")
    )
    servers = {(row["port"], row["recovery"]) for row in rows}
    return {
        "names": [row["name"] for row in rows],
        "servers": [{"port": port, "in_recovery": rec} for port, rec in sorted(servers)],
        "alias": replicas.current_read_alias(),
    }


class RunsView(APIView):
    def get(self, request: Request) -> Response:
        return Response(runs())

    def post(self, request: Request) -> Response:
        ProductionRun.objects.create(name=request.data["name"], starts_at=timezone.now())
        return Response(runs(), status=status.HTTP_201_CREATED)


class AtomicRunsView(APIView):
    def get(self, request: Request) -> Response:
        with transaction.atomic():
            return Response(runs())


class WriteThenReadView(APIView):
    def get(self, request: Request) -> Response:
        ProductionRun.objects.create(name=request.query_params["name"], starts_at=timezone.now())
        return Response(runs())


urlpatterns = [
    path("api/v1/_probe/runs", RunsView.as_view()),
    path("api/v1/_probe/atomic-runs", AtomicRunsView.as_view()),
    path("api/v1/_probe/write-then-read", WriteThenReadView.as_view()),
    path("_probe/runs", RunsView.as_view()),  # outside /api/v1/: never a replica
    path("", include("tracker_project.urls")),
]
