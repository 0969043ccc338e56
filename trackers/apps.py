from django.apps import AppConfig


class TrackersConfig(AppConfig):
    name = "trackers"
    verbose_name = "Trackers"

    def ready(self) -> None:
        from . import signals  # noqa: F401  (django-q2 worker heartbeats)
