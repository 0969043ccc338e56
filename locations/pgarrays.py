"""Integer arrays as SQL parameters, built in one `str.join`.

Django's PostgreSQL backend binds parameters on the client (psycopg's ClientCursor), which
renders a Python list into an array literal element by element in Python: for the processor's
few thousand report and fence ids per batch that was a tenth of its CPU time. The literal is
passed as one string and cast in SQL (`= ANY(%s::bigint[])`); `int()` on each value keeps it
a list of integers whatever the caller passed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db.models import Lookup


def int_array(values: Iterable[int]) -> str:
    """'{1,2,3}': a PostgreSQL array literal of integers (cast it: `%s::bigint[]`)."""
    return "{" + ",".join(str(int(v)) for v in values) + "}"


class AnyOf(Lookup):
    """`field__any=[ids]`: `field = ANY('{...}'::bigint[])`, one parameter where `__in` makes
    one per id (each resolved by Django and rendered by psycopg in Python). For the few hundred
    ids of a processing batch. Registered on integer fields and foreign keys (locations app)."""

    lookup_name = "any"
    prepare_rhs = False

    def get_db_prep_lookup(self, value: Iterable[int], connection: Any) -> tuple[str, list[str]]:
        return "%s", [int_array(value)]

    def as_sql(self, compiler: Any, connection: Any) -> tuple[str, list[Any]]:
        lhs, lhs_params = self.process_lhs(compiler, connection)
        rhs, rhs_params = self.process_rhs(compiler, connection)
        return f"{lhs} = ANY({rhs}::bigint[])", [*lhs_params, *rhs_params]
