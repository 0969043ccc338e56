"""Leases: who holds a row of a work queue, under which token, until when (database clock).

A queue in this project is a table whose rows carry three lease columns (holder, token,
expiry). A claim takes rows with `SELECT ... FOR UPDATE SKIP LOCKED` and stamps them with
`LeaseColumns.take()`; everything after the claim is conditional on the token
(`LeaseColumns.mine()`), so a holder whose lease expired and was taken over changes nothing.
The tracker queue (claimed_by, claim_token, lease_until), the accounts' one-request-at-a-time
lease (request_holder, request_token, request_lease_until) and the processing queue of the
next pipeline all use this one helper.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from django.db.models import DurationField, Q, QuerySet, Value
from django.db.models.functions import Now


def seconds(n: int) -> Value:
    """A duration literal for arithmetic on the database clock (`Now() - seconds(60)`)."""
    return Value(dt.timedelta(seconds=n), output_field=DurationField())


@dataclass(frozen=True)
class LeaseColumns:
    """The names of a queue table's three lease columns."""

    holder: str = "claimed_by"
    token: str = "claim_token"  # noqa: S105 - a column name
    until: str = "lease_until"

    def take(self, holder: str, token: uuid.UUID, lease_seconds: int) -> dict[str, Any]:
        """Update values that lease a row to `holder` until now + `lease_seconds`."""
        return {
            self.holder: holder,
            self.token: token,
            self.until: Now() + seconds(lease_seconds),
        }

    def cleared(self) -> dict[str, Any]:
        """Update values that end a lease."""
        return {self.holder: "", self.token: None, self.until: None}

    def mine(self, queryset: QuerySet, token: uuid.UUID) -> QuerySet:
        """The rows of `queryset` still leased under `token`."""
        return queryset.filter(**{self.token: token})

    def release(self, queryset: QuerySet, token: uuid.UUID, **changes: Any) -> int:
        """End the lease on the rows still ours, with `changes` in the same UPDATE."""
        return self.mine(queryset, token).update(**self.cleared(), **changes)

    def unleased(self) -> Q:
        """Rows nobody holds now: never leased, released, or expired."""
        return Q(**{f"{self.until}__isnull": True}) | Q(**{f"{self.until}__lt": Now()})

    def leased(self) -> Q:
        return Q(**{f"{self.until}__gte": Now()})

    def release_expired(self, queryset: QuerySet) -> int:
        """Clear leases that ran out (their holders died): housekeeping, never required."""
        return queryset.filter(**{f"{self.until}__lt": Now()}).update(**self.cleared())


TRACKER_LEASE = LeaseColumns("claimed_by", "claim_token", "lease_until")
ACCOUNT_LEASE = LeaseColumns("request_holder", "request_token", "request_lease_until")
