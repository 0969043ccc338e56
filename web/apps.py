from __future__ import annotations

from django.apps import AppConfig


class WebConfig(AppConfig):
    """The owners' pages: the map of their trackers, and the login that leads to it."""

    name = "web"
    verbose_name = "Owners' pages"
