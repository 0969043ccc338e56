"""locations.pgarrays: integer array literals for `= ANY(%s::bigint[])`."""

from __future__ import annotations

import pytest
from django.db import connection

from locations.models import TrackerProcessing
from locations.pgarrays import int_array
from trackers.models import Tracker

from ..factories import TrackerFactory


def test_literal_of_integers() -> None:
    assert int_array([3, 1, 2]) == "{3,1,2}"
    assert int_array([]) == "{}"
    assert int_array(x for x in (7,)) == "{7}"


def test_anything_but_integers_is_refused() -> None:
    with pytest.raises(ValueError, match="invalid literal for int"):
        int_array(["1}, {2"])


@pytest.mark.django_db
def test_postgresql_reads_it_as_the_same_integers() -> None:
    values = [1, -5, 2**62, 0]
    with connection.cursor() as cursor:
        cursor.execute("SELECT %s::bigint[]", [int_array(values)])
        assert cursor.fetchone()[0] == values
        cursor.execute("SELECT cardinality(%s::bigint[])", [int_array([])])
        assert cursor.fetchone()[0] == 0


@pytest.mark.django_db
def test_the_any_lookup_finds_what_in_finds() -> None:
    trackers = [TrackerFactory() for _ in range(3)]
    wanted = [trackers[0].pk, trackers[2].pk, 10**12]
    by_any = Tracker.objects.filter(id__any=wanted)
    assert sorted(by_any.values_list("pk", flat=True)) == sorted(
        Tracker.objects.filter(id__in=wanted).values_list("pk", flat=True)
    )
    assert "= ANY(" in str(by_any.query)
    assert not Tracker.objects.filter(id__any=[]).exists()
    # On a foreign key's column as well.
    assert TrackerProcessing.objects.filter(tracker_id__any=wanted).count() == 0
