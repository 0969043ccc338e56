"""The processor: geofence states, events and alert deliveries for a claim of reports.

Reads everything it needs, decides in Python (state.py) on evidence from PostGIS
(membership.py), and writes the outcome in one transaction that first checks the lease
(locations.processing): states, events (unique by dedupe key), one delivery per
(event, rule, channel), the trackers' processing rows, and the reports' queue rows (deleted).
Geofencing never waits for geocoding: addresses are filled in by the geocoder afterwards.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from locations import processing
from locations.models import TrackerProcessing
from trackers.models import Tracker, TrackerKind

from . import alerts
from .membership import evidence
from .models import EventKind, Geofence, GeofenceState, Side
from .state import FenceState, step

log = logging.getLogger(__name__)

# AirTag status byte: the top two bits are the battery level (00 full, 01 medium, 10 low,
# 11 critical). OpenHaystack-style beacons may use the byte freely: accessories only.
BATTERY_LOW_LEVEL = 2


class LeaseLost(Exception):
    """Another processor holds the trackers now: nothing of this batch was written."""


@dataclass
class NewEvent:
    tracker_id: int
    geofence_id: int | None
    kind: str
    report_id: int | None
    occurred_at: dt.datetime
    dedupe_key: str


@dataclass
class ProcessResult:
    trackers: int = 0
    reports: int = 0
    late: int = 0
    events: int = 0
    deliveries: int = 0
    kinds: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class FenceRef:
    """What the processor needs of a fence (no model instance: a claim reads hundreds)."""

    id: int
    schedule: dict[str, Any]
    time_zone: str
    radius_m: float | None = None

    def scheduled_at(self, moment: dt.datetime) -> bool:
        if not self.schedule:
            return True
        return Geofence(schedule=self.schedule, time_zone=self.time_zone).scheduled_at(moment)


def applicable_fences(trackers: dict[int, dict[str, Any]]) -> dict[int, list[FenceRef]]:
    """Each tracker's active fences: its owner's, assigned to it or to no tracker at all."""
    owners = {t["owner_id"] for t in trackers.values() if t["owner_id"] is not None}
    by_owner: dict[int, list[FenceRef]] = defaultdict(list)
    for fence_id, owner_id, schedule, time_zone, radius_m in Geofence.objects.filter(
        owner_id__in=owners, is_active=True
    ).values_list("id", "owner_id", "schedule", "time_zone", "radius_m"):
        by_owner[owner_id].append(FenceRef(fence_id, schedule, time_zone, radius_m))
    assigned: dict[int, set[int]] = defaultdict(set)
    for fence_id, tracker_id in Geofence.trackers.through.objects.filter(
        geofence__owner_id__in=owners, geofence__is_active=True
    ).values_list("geofence_id", "tracker_id"):
        assigned[fence_id].add(tracker_id)
    # Most fences are assigned to no tracker: one shared list per owner, plus the few
    # fences assigned to a tracker (no per-tracker scan of every fence).
    shared = {owner: [f for f in refs if not assigned[f.id]] for owner, refs in by_owner.items()}
    for_tracker: dict[int, list[FenceRef]] = defaultdict(list)
    for refs in by_owner.values():
        for f in refs:
            for tracker_id in assigned[f.id]:
                for_tracker[tracker_id].append(f)
    return {
        tracker_id: shared.get(tracker["owner_id"], []) + for_tracker.get(tracker_id, [])
        if tracker_id in for_tracker
        else shared.get(tracker["owner_id"], [])
        for tracker_id, tracker in trackers.items()
    }


def process(claim: processing.ProcessingClaim) -> ProcessResult:
    """Process one claim; LeaseLost if it was taken over (nothing written)."""
    result = ProcessResult(trackers=len(claim.tracker_ids), reports=len(claim.reports))
    trackers = {
        t["id"]: t
        for t in Tracker.objects.filter(id__any=claim.tracker_ids).values("id", "owner_id", "kind")
    }
    fences = applicable_fences(trackers)
    rows = {p.tracker_id: p for p in TrackerProcessing.objects.filter(tracker_id__any=trackers)}
    by_tracker: dict[int, list[processing.PendingReport]] = defaultdict(list)
    for report in claim.reports:
        by_tracker[report.tracker_id].append(report)
    report_tracker = {r.id: r.tracker_id for r in claim.reports}
    fresh = [
        r
        for r in claim.reports
        if rows[r.tracker_id].newest_timestamp is None
        or r.timestamp > rows[r.tracker_id].newest_timestamp
    ]
    # Trackers of one owner share one list object (applicable_fences): read each list once.
    distinct_lists = {id(fs): fs for fs in fences.values()}.values()
    fence_by_id = {f.id: f for fs in distinct_lists for f in fs}
    ids_of = {id(fs): {f.id for f in fs} for fs in distinct_lists}
    fence_ids = sorted(fence_by_id)
    reach = max((f.radius_m or 0.0 for f in fence_by_id.values()), default=0.0)
    near = evidence([r.id for r in fresh], fence_ids, reach)  # only pairs within reach
    # The trackers' unsettled states (the fences are filtered here: an IN list of every
    # fence id cost more to build and parse than the rows it spared).
    states = {
        (s.tracker_id, s.geofence_id): s
        for s in GeofenceState.objects.filter(tracker_id__any=trackers).exclude(
            side=Side.OUTSIDE, candidate=""
        )
        if s.geofence_id in fence_by_id
    }
    unsettled: dict[int, set[int]] = defaultdict(set)
    for tracker_id, fence_id in states:
        unsettled[tracker_id].add(fence_id)
    near_fences: dict[int, set[int]] = defaultdict(set)
    for report_id, fence_id in near:
        near_fences[report_tracker[report_id]].add(fence_id)
    machines: dict[tuple[int, int], FenceState] = {}
    events: list[NewEvent] = []
    confirmations = settings.GEOFENCE_CONFIRMATIONS
    dwell = dt.timedelta(seconds=settings.GEOFENCE_MIN_DWELL_SECONDS)
    for tracker_id, reports in by_tracker.items():
        row = rows[tracker_id]
        accessory = trackers[tracker_id]["kind"] == TrackerKind.ACCESSORY
        # A fence this tracker is clearly outside of, far from every report of the batch,
        # changes nothing (unknown and outside both enter on the next inside run): only
        # fences near a report, or with an unsettled state, are stepped through.
        wanted = near_fences[tracker_id] | unsettled[tracker_id]
        relevant = []
        if wanted and tracker_id in fences:
            applicable = ids_of[id(fences[tracker_id])]
            relevant = [fence_by_id[f] for f in sorted(wanted) if f in applicable]
        for report in reports:
            if row.newest_timestamp is not None and report.timestamp <= row.newest_timestamp:
                result.late += 1  # stored and geocoded, but it never changes state
                continue
            events += _tracker_events(row, report, accessory)
            for fence in relevant:
                if not fence.scheduled_at(report.timestamp):
                    continue
                key = (tracker_id, fence.id)
                if key not in machines:
                    saved = states.get(key)
                    machines[key] = (
                        FenceState(
                            saved.side,
                            saved.candidate,
                            saved.candidate_count,
                            saved.candidate_since,
                            saved.changed_at,
                        )
                        if saved
                        else FenceState()
                    )
                change = step(
                    machines[key],
                    near.get((report.id, fence.id), Side.OUTSIDE),
                    report.timestamp,
                    confirmations=confirmations,
                    min_dwell=dwell,
                )
                if change is not None and change.event_kind is not None:
                    events.append(
                        NewEvent(
                            tracker_id,
                            fence.id,
                            change.event_kind,
                            report.id,
                            change.since,
                            f"fence:{fence.id}:{tracker_id}:{change.event_kind}:{report.id}",
                        )
                    )
            row.newest_timestamp, row.newest_report_id = report.timestamp, report.id
    with transaction.atomic():
        if not processing.still_ours(claim):
            raise LeaseLost
        _save_states(machines)
        created = _insert_events(events)
        result.events = len(created)
        result.deliveries = alerts.create_deliveries(created)
        _save_processing(list(rows.values()))
        processing.mark_processed(claim)
    for event in created:
        result.kinds[event["kind"]] = result.kinds.get(event["kind"], 0) + 1
    return result


def _tracker_events(
    row: TrackerProcessing, report: processing.PendingReport, accessory: bool
) -> list[NewEvent]:
    """First seen, back online and battery low, from one report newer than any before."""
    out = []
    tracker_id = row.tracker_id
    if row.first_seen_at is None:
        row.first_seen_at = report.timestamp
        out.append(
            NewEvent(
                tracker_id,
                None,
                EventKind.FIRST_SEEN,
                report.id,
                report.timestamp,
                f"first_seen:{tracker_id}",
            )
        )
    if row.silent_since is not None:
        row.silent_since = None
        out.append(
            NewEvent(
                tracker_id,
                None,
                EventKind.BACK_ONLINE,
                report.id,
                report.timestamp,
                f"back_online:{tracker_id}:{report.id}",
            )
        )
    if accessory:
        low = (report.status >> 6) & 0b11 >= BATTERY_LOW_LEVEL
        if low and not row.battery_low:
            out.append(
                NewEvent(
                    tracker_id,
                    None,
                    EventKind.BATTERY_LOW,
                    report.id,
                    report.timestamp,
                    f"battery_low:{tracker_id}:{report.id}",
                )
            )
        row.battery_low = low
    return out


def _save_states(machines: dict[tuple[int, int], FenceState]) -> None:
    GeofenceState.objects.bulk_create(
        [
            GeofenceState(
                tracker_id=tracker_id,
                geofence_id=fence_id,
                side=m.side,
                candidate=m.candidate,
                candidate_count=m.candidate_count,
                candidate_since=m.candidate_since,
                changed_at=m.changed_at,
            )
            for (tracker_id, fence_id), m in machines.items()
        ],
        update_conflicts=True,
        unique_fields=["tracker", "geofence"],
        update_fields=["side", "candidate", "candidate_count", "candidate_since", "changed_at"],
    )


def _save_processing(rows: list[TrackerProcessing]) -> None:
    """What processing remembers per tracker, and the end of the lease: one statement."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            UPDATE locations_trackerprocessing AS p SET
                newest_timestamp = u.newest_timestamp, newest_report_id = u.newest_report_id,
                first_seen_at = u.first_seen_at, silent_since = u.silent_since,
                battery_low = u.battery_low, claimed_by = '', claim_token = NULL,
                lease_until = NULL
            FROM unnest(
                %s::bigint[], %s::timestamptz[], %s::bigint[], %s::timestamptz[],
                %s::timestamptz[], %s::boolean[]
            ) AS u(tracker_id, newest_timestamp, newest_report_id, first_seen_at,
                   silent_since, battery_low)
            WHERE p.tracker_id = u.tracker_id
            """,
            [
                [r.tracker_id for r in rows],
                [r.newest_timestamp for r in rows],
                [r.newest_report_id for r in rows],
                [r.first_seen_at for r in rows],
                [r.silent_since for r in rows],
                [r.battery_low for r in rows],
            ],
        )


def _insert_events(events: list[NewEvent]) -> list[dict[str, Any]]:
    """Insert the events not written before (by dedupe key); return the new ones."""
    if not events:
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO geofences_geofenceevent
                (tracker_id, geofence_id, kind, report_id, occurred_at, created_at, dedupe_key)
            SELECT * FROM unnest(
                %s::bigint[], %s::bigint[], %s::varchar[], %s::bigint[], %s::timestamptz[],
                %s::timestamptz[], %s::varchar[]
            )
            ON CONFLICT (dedupe_key) DO NOTHING
            RETURNING id, tracker_id, geofence_id, kind, occurred_at
            """,
            [
                [e.tracker_id for e in events],
                [e.geofence_id for e in events],
                [e.kind for e in events],
                [e.report_id for e in events],
                [e.occurred_at for e in events],
                [timezone.now()] * len(events),
                [e.dedupe_key for e in events],
            ],
        )
        columns = ["id", "tracker_id", "geofence_id", "kind", "occurred_at"]
        return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


def mark_silent_trackers() -> int:
    """Raise `silent` for trackers without a new report for TRACKER_SILENT_HOURS (schedule)."""
    hours = settings.TRACKER_SILENT_HOURS
    cutoff = timezone.now() - dt.timedelta(hours=hours)
    silent = list(
        TrackerProcessing.objects.filter(
            Q(newest_timestamp__lt=cutoff), silent_since__isnull=True
        ).values_list("tracker_id", "newest_timestamp", "newest_report_id")
    )
    events = [
        NewEvent(
            tracker_id,
            None,
            EventKind.SILENT,
            None,
            newest + dt.timedelta(hours=hours),
            f"silent:{tracker_id}:{report_id}",
        )
        for tracker_id, newest, report_id in silent
    ]
    with transaction.atomic():
        created = _insert_events(events)
        alerts.create_deliveries(created)
        TrackerProcessing.objects.filter(
            tracker_id__in=[e["tracker_id"] for e in created], silent_since__isnull=True
        ).update(silent_since=timezone.now())
    return len(created)
