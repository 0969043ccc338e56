"""Adds the daily prune-fetch-attempts schedule (ensure_schedules is idempotent by name)."""

from django.db import migrations

from trackers.schedules import ensure_schedules


def create_schedules(apps, schema_editor):
    ensure_schedules(apps.get_model("django_q", "Schedule"))


def delete_prune_schedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name="prune-fetch-attempts").delete()


class Migration(migrations.Migration):
    dependencies = [("trackers", "0002_fetch_schedule")]

    operations = [migrations.RunPython(create_schedules, delete_prune_schedule)]
