"""The django-q2 schedule that drives fetching from `manage.py qcluster`: idempotent by name."""

from django.db import migrations

from trackers.schedules import SCHEDULES, ensure_schedules


def create_schedules(apps, schema_editor):
    ensure_schedules(apps.get_model("django_q", "Schedule"))


def delete_schedules(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name__in=SCHEDULES).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("trackers", "0001_initial"),
        ("django_q", "0018_task_success_index"),
    ]

    operations = [migrations.RunPython(create_schedules, delete_schedules)]
