from django.apps import AppConfig


class FindMySimConfig(AppConfig):
    """Installed for its commands (`findmy_simulator`, `demo_setup`); it has no models."""

    name = "findmy_sim"
    verbose_name = "Find My network simulator"
