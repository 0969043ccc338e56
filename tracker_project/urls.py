"""URL routes: the admin, health/status/metrics, fetch control and the OpenAPI schema."""

from __future__ import annotations

import sys

from django.contrib import admin
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import include, path
from django.views import defaults
from drf_spectacular.views import SpectacularAPIView
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response

from monitoring.api import views as monitoring
from monitoring.api.exceptions import database_unavailable
from trackers.api import views as control


class SchemaView(SpectacularAPIView):
    """The OpenAPI schema, YAML or JSON as asked; its refusals and errors are plain JSON like
    every other API answer (not a YAML "detail:" document)."""

    def handle_exception(self, exc: Exception) -> Response:
        response = super().handle_exception(exc)
        self.request.accepted_renderer = JSONRenderer()
        self.request.accepted_media_type = JSONRenderer.media_type
        return response


urlpatterns = [
    path("admin/", admin.site.urls),
    path("health", monitoring.HealthView.as_view(), name="health"),
    path("health/live", monitoring.LiveView.as_view(), name="health-live"),
    path("status/queue", monitoring.QueueStatusView.as_view(), name="status-queue"),
    path("status/worker", monitoring.WorkerStatusView.as_view(), name="status-worker"),
    path("metrics", monitoring.MetricsView.as_view(), name="metrics"),
    path("fetch/batch", control.FetchBatchView.as_view(), name="fetch-batch"),
    path("fetch/tracker/<int:pk>", control.FetchTrackerView.as_view(), name="fetch-tracker"),
    path("queue/initialize", control.QueueInitializeView.as_view(), name="queue-initialize"),
    path("api/schema/", SchemaView.as_view(), name="schema"),
    path("api/v1/", include("api.urls")),
    path("", include("web.urls")),  # the owners' map and its login
]


def _is_admin(request: HttpRequest) -> bool:
    return request.path.startswith("/admin/")


# Paths no view matched (e.g. /fetch/tracker/abc) answer JSON like the API; the admin keeps
# its HTML pages. Django uses these only with DEBUG off.
def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _is_admin(request):
        return defaults.page_not_found(request, exception)
    return JsonResponse({"detail": "Not found."}, status=404)


def server_error(request: HttpRequest) -> HttpResponse:
    if _is_admin(request):
        return defaults.server_error(request)
    exc = sys.exc_info()[1]  # Django calls this while handling the exception
    if isinstance(exc, DatabaseError):
        return JsonResponse(database_unavailable(exc), status=503)
    return JsonResponse({"detail": "Server error."}, status=500)


handler404 = not_found
handler500 = server_error
