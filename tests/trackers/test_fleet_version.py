"""trackers_fleetversion: database triggers count every change of an owner's set of trackers,
whatever the write path (save, queryset update, raw SQL, deletion)."""

from __future__ import annotations

import pytest
from django.db import connection

from trackers.models import Tracker, fleet_version

from ..factories import TrackerFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_a_new_tracker_changes_no_version() -> None:
    alice = UserFactory()
    TrackerFactory(owner=alice)
    Tracker.objects.bulk_create([Tracker(owner=alice, name="b", key_material={})])
    assert fleet_version(alice.pk) == 0


def test_giving_a_tracker_away_bumps_both_owners_by_any_write_path() -> None:
    alice, bob = UserFactory(), UserFactory()
    tracker = TrackerFactory(owner=alice)

    tracker.owner = bob
    tracker.save()
    assert (fleet_version(alice.pk), fleet_version(bob.pk)) == (1, 1)

    Tracker.objects.filter(pk=tracker.pk).update(owner=alice)
    assert (fleet_version(alice.pk), fleet_version(bob.pk)) == (2, 2)

    with connection.cursor() as cursor:
        cursor.execute("UPDATE trackers_tracker SET owner_id = NULL WHERE id = %s", [tracker.pk])
    assert (fleet_version(alice.pk), fleet_version(bob.pk)) == (3, 2)


def test_a_rename_or_a_same_owner_update_bumps_nothing() -> None:
    alice = UserFactory()
    tracker = TrackerFactory(owner=alice)
    tracker.name = "renamed"
    tracker.save()
    Tracker.objects.filter(pk=tracker.pk).update(owner=alice, is_active=False)
    assert fleet_version(alice.pk) == 0


def test_deleting_a_tracker_or_its_owner_bumps_the_owner() -> None:
    alice, bob = UserFactory(), UserFactory()
    TrackerFactory(owner=alice).delete()
    assert fleet_version(alice.pk) == 1

    TrackerFactory(owner=bob)
    bob_id = bob.pk
    bob.delete()  # the tracker stays, without an owner
    assert fleet_version(bob_id) == 1
    assert Tracker.objects.filter(owner__isnull=True).count() == 1
