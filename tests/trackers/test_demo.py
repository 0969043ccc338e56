"""demo_setup: the demo fleet (static trackers and AirTags), fetched from the simulator."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from locations.models import LocationReport
from trackers.models import AppleAccount, Tracker, TrackerKind
from trackers.worker import run_pass

pytestmark = pytest.mark.django_db


def demo_setup(simulator, *args: str) -> str:
    out = io.StringIO()
    call_command("demo_setup", "--simulator-url", simulator.base_url, *args, stdout=out)
    return out.getvalue()


def test_demo_setup_creates_the_fleet_once_and_prints_a_working_login(simulator):
    first = demo_setup(simulator, "--trackers", "12", "--accessories", "3")
    second = demo_setup(simulator, "--trackers", "12", "--accessories", "3")

    assert Tracker.objects.filter(kind=TrackerKind.STATIC).count() == 12
    assert Tracker.objects.filter(kind=TrackerKind.ACCESSORY).count() == 3
    assert AppleAccount.objects.count() == 1
    assert "15 trackers (3 of them AirTags)" in first
    password = second.rsplit("password=", 1)[1].strip()
    assert get_user_model().objects.get(username="admin").check_password(password)


def test_the_demo_fleet_is_fetched_through_the_simulator(simulator):
    demo_setup(simulator, "--trackers", "12", "--accessories", "3")
    # What `manage.py findmy_simulator` does by default: serve the trackers in the database.
    simulator.simulator.add_material(Tracker.objects.values_list("key_material", flat=True))

    summary = run_pass("demo")

    # AirTags catch up on their window over several requests: 15 trackers, more batches.
    assert summary.trackers >= 15
    assert summary.failures == 0
    assert not Tracker.objects.filter(last_processed_at__isnull=True).exists()
    assert not Tracker.objects.filter(window_next_index__isnull=False).exists()
    for tracker in Tracker.objects.all():
        assert LocationReport.objects.filter(tracker=tracker).exists(), tracker.name
