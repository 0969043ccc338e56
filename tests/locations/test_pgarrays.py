"""locations.pgarrays: integer array literals for `= ANY(%s::bigint[])`."""

from __future__ import annotations

import pytest
from django.db import connection

from locations.pgarrays import int_array


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
