"""Routes of the REST API, mounted at /api/v1/ (tracker_project/urls.py)."""

from __future__ import annotations

from importlib.util import find_spec

from django.urls import include, path, re_path
from rest_framework.routers import SimpleRouter

from api.views import alerts, events, geofences, me, schema, tokens, trackers
from api.views.base import NotFoundView

app_name = "api"

router = SimpleRouter(trailing_slash=False)
router.register("trackers", trackers.TrackerViewSet, basename="tracker")
router.register("geofences", geofences.GeofenceViewSet, basename="geofence")
router.register("events", events.EventViewSet, basename="event")
router.register("alert-rules", alerts.AlertRuleViewSet, basename="alert-rule")
router.register("deliveries", alerts.DeliveryViewSet, basename="delivery")
router.register("tokens", tokens.TokenViewSet, basename="token")

urlpatterns: list = [
    path("", include(router.urls)),
    path("me", me.MeView.as_view(), name="me"),
    path("schema", schema.SchemaView.as_view(), name="schema"),
    path("docs", schema.SwaggerView.as_view(), name="docs"),
    path("redoc", schema.RedocView.as_view(), name="redoc"),
]

# The location search and export routes live in their own module (api/urls_locations.py).
if find_spec("api.urls_locations") is not None:
    urlpatterns.append(path("", include("api.urls_locations")))

# Last: any other path under /api/v1/ is an enveloped 404, whatever DEBUG says.
urlpatterns.append(re_path(r"^.*$", NotFoundView.as_view(), name="not-found"))
