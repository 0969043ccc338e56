"""The project's admin site: Django's, plus the operator dashboard's two pages
(monitoring.admin.dashboard) and a link to them on the index page.

A module of its own, apart from the monitoring.admin package: INSTALLED_APPS imports
FleetAdminConfig before any model is loaded, and the package's modules register models on
this site as they are imported.
"""

from __future__ import annotations

from django.contrib.admin import AdminSite
from django.contrib.admin.apps import AdminConfig
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, URLResolver, path


class FleetAdminSite(AdminSite):
    site_header = "Tracker fleet"
    site_title = "Tracker fleet admin"
    index_template = "admin/fleet_index.html"

    def get_urls(self) -> list[URLResolver | URLPattern]:
        return [
            path("dashboard/", self.admin_view(self.dashboard), name="dashboard"),
            path(
                "dashboard/figures",
                self.admin_view(self.dashboard_figures),
                name="dashboard-figures",
            ),
            *super().get_urls(),
        ]

    # Imported when called: the admin package registers its models on this site while it loads.
    def dashboard(self, request: HttpRequest) -> HttpResponse:
        from .admin.dashboard import dashboard

        return dashboard(self, request)

    def dashboard_figures(self, request: HttpRequest) -> HttpResponse:
        from .admin.dashboard import dashboard_figures

        return dashboard_figures(self, request)


class FleetAdminConfig(AdminConfig):
    default_site = "monitoring.admin_site.FleetAdminSite"
