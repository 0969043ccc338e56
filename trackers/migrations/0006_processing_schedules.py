"""Adds the process-locations and send-alerts (every minute) and detect-silent-trackers
(every 15 minutes) schedules (ensure_schedules is idempotent by name)."""

from django.db import migrations

from trackers.schedules import ensure_schedules

NEW = ("process-locations", "send-alerts", "detect-silent-trackers")


def create_schedules(apps, schema_editor):
    ensure_schedules(apps.get_model("django_q", "Schedule"))


def delete_schedules(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name__in=NEW).delete()


class Migration(migrations.Migration):
    dependencies = [("trackers", "0005_accessory_window")]

    operations = [migrations.RunPython(create_schedules, delete_schedules)]
