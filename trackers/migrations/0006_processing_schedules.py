"""Adds the processing schedules: process-locations, send-alerts and geocode-newest (every
minute), refresh-latest-locations (every minute), geocode-backfill (every 5 minutes),
detect-silent-trackers (every 15 minutes).
ensure_schedules is idempotent by name."""

from django.db import migrations

from trackers.schedules import ensure_schedules

NEW = (
    "process-locations",
    "send-alerts",
    "geocode-newest",
    "geocode-backfill",
    "refresh-latest-locations",
    "detect-silent-trackers",
)


def create_schedules(apps, schema_editor):
    ensure_schedules(apps.get_model("django_q", "Schedule"))


def delete_schedules(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name__in=NEW).delete()


class Migration(migrations.Migration):
    dependencies = [("trackers", "0005_accessory_window")]

    operations = [migrations.RunPython(create_schedules, delete_schedules)]
