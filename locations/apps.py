from django.apps import AppConfig


class LocationsConfig(AppConfig):
    name = "locations"
    verbose_name = "Locations"

    def ready(self) -> None:
        from django.db.models import ForeignObject, IntegerField
        from django.db.models.signals import post_delete, post_save

        from .pgarrays import AnyOf

        IntegerField.register_lookup(AnyOf)  # ids (AutoField and BigAutoField included)
        ForeignObject.register_lookup(AnyOf)  # foreign keys' columns

        from .models import LocationReport

        # ingest() and the geocoder announce their writes themselves (locations.generations);
        # a report saved or deleted through the ORM (a script, the shell, the admin) is
        # announced here, so the API's cached searches never outlive it either.
        post_save.connect(
            _report_changed, sender=LocationReport, dispatch_uid="locations.report_saved"
        )
        post_delete.connect(
            _report_changed, sender=LocationReport, dispatch_uid="locations.report_deleted"
        )


def _report_changed(sender: type, instance: object, **kwargs: object) -> None:
    from . import generations

    generations.bump_on_commit([instance.tracker_id])  # type: ignore[attr-defined]
