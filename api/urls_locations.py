"""Location search, export and latest-position routes (included by api/urls.py)."""

from __future__ import annotations

from django.urls import path

from api.views.latest import LatestView
from api.views.locations import LocationsView, TrackerLocationsView

urlpatterns = [
    path(
        "trackers/<int:pk>/locations",
        TrackerLocationsView.as_view(),
        name="api-tracker-locations",
    ),
    path("locations", LocationsView.as_view(), name="api-locations"),
    path("latest", LatestView.as_view(), name="api-latest"),
]
