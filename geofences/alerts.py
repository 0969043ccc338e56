"""Which alert rules an event matches, and the delivery rows it creates (one per channel).

Deliveries are created in the transaction that creates the event, under a unique
(event, rule, channel) constraint, so there is exactly one whatever the number of
processors. Sending them is the senders' work (deliveries.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import connection
from django.utils import timezone

from trackers.models import Tracker

from .models import AlertRule, DeliveryStatus


def matching_rules(event: dict[str, Any], rules: Iterable[AlertRule]) -> list[AlertRule]:
    out = []
    for rule in rules:
        if event["kind"] not in rule.event_kinds:
            continue
        fences = {f.pk for f in rule.geofences.all()}
        if fences and event["geofence_id"] not in fences:
            continue
        trackers = {t.pk for t in rule.trackers.all()}
        if trackers and event["tracker_id"] not in trackers:
            continue
        out.append(rule)
    return out


def create_deliveries(events: list[dict[str, Any]]) -> int:
    """One delivery per (event, matching rule, channel); returns how many were new."""
    if not events:
        return 0
    owners = dict(
        Tracker.objects.filter(id__any={e["tracker_id"] for e in events}).values_list(
            "id", "owner_id"
        )
    )
    rules = list(
        AlertRule.objects.filter(owner_id__in=set(owners.values()), is_active=True)
        .prefetch_related("geofences", "trackers")
        .defer("webhook_secret")
    )
    rows = []
    now = timezone.now()
    for event in events:
        owner = owners.get(event["tracker_id"])
        for rule in matching_rules(event, [r for r in rules if r.owner_id == owner]):
            quiet = rule.in_quiet_hours(event["occurred_at"])
            status = DeliveryStatus.SUPPRESSED if quiet else DeliveryStatus.PENDING
            rows += [(event["id"], rule.pk, channel, status) for channel in rule.channels]
    if not rows:
        return 0
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO geofences_alertdelivery
                (event_id, rule_id, channel, status, attempts, last_error, next_attempt_at,
                 created_at, claimed_by)
            SELECT e, r, c, s, 0, '', %s, %s, '' FROM unnest(
                %s::bigint[], %s::bigint[], %s::varchar[], %s::varchar[]
            ) AS t(e, r, c, s)
            ON CONFLICT (event_id, rule_id, channel) DO NOTHING
            """,
            [now, now, *map(list, zip(*rows, strict=True))],
        )
        return cursor.rowcount
