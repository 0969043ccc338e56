"""The owners' map: their trackers' latest positions, a day's track, their fences.

The page is a shell: its script reads everything from the REST API (/api/v1/latest,
/api/v1/geofences, /api/v1/trackers/{id}/locations) with the browser's session, so an owner
sees on the map exactly what the API lets them see. Leaflet comes from django-leaflet's static
files (no CDN); the tiles are MAP_TILE_URL, or none.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.contrib.auth.mixins import LoginRequiredMixin
from django.utils.decorators import method_decorator
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.generic import TemplateView

API_ROOT = "/api/v1/"


@method_decorator(ensure_csrf_cookie, name="dispatch")  # the script's unsafe requests send it
class MapView(LoginRequiredMixin, TemplateView):
    template_name = "web/map.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context["map_config"] = map_config()
        return context


def map_config() -> dict[str, Any]:
    """What the map's script needs, handed over as JSON (json_script) rather than in code."""
    return {
        "api": {
            "latest": f"{API_ROOT}latest",
            "trackers": f"{API_ROOT}trackers",
            "geofences": f"{API_ROOT}geofences",
            "locations": f"{API_ROOT}trackers/{{id}}/locations",
        },
        "tileUrl": settings.MAP_TILE_URL,
        "tileAttribution": settings.MAP_TILE_ATTRIBUTION,
        "refreshSeconds": settings.MAP_REFRESH_SECONDS,
    }


class LoginView(auth_views.LoginView):
    """Owners log in here (operators may too); a logged-in visitor goes straight to the map."""

    template_name = "web/login.html"
    redirect_authenticated_user = True


class LogoutView(auth_views.LogoutView):
    """POST only (Django's rule): the map's "Log out" button is a form with the CSRF token."""
