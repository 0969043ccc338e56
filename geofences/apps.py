from django.apps import AppConfig


class GeofencesConfig(AppConfig):
    name = "geofences"
    verbose_name = "Geofences"
