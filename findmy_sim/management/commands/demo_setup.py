"""Set up the demo: an admin user, a fleet of simulated trackers, an account on the simulator,
geofences around places the simulated trackers dwell at, and an alert rule that posts enter and
exit events to a local webhook receiver (demo_webhook_receiver) and to Redis."""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.gis.geos import Point, Polygon
from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction
from django.utils import timezone
from findmy import FindMyAccessory, KeyPair

from findmy_sim.simulator import (
    ANISETTE_PATH,
    SimulatedAccessory,
    SimulatedTracker,
    _offset,
    account_state,
)
from geofences.deliveries import ensure_webhook_secret
from geofences.models import AlertRule, Channel, EventKind, FenceKind, Geofence
from trackers.keyfiles import entry_from_accessory, entry_from_keypair
from trackers.models import AccountStatus, AppleAccount, ProductionRun, Tracker, TrackerKind

RULE_NAME = "demo: enter/exit"
FENCE_RADIUS_M = 300  # the simulator scatters a dwelling tracker's fixes by about 30 m


class Command(BaseCommand):
    help = "Create (idempotently) the demo fleet and an admin user; print the credentials."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--trackers", type=int, default=60, help="static-key trackers")
        parser.add_argument(
            "--accessories", type=int, default=5, help="rolling-key accessories (AirTags)"
        )
        parser.add_argument("--simulator-url", default="http://127.0.0.1:8765")
        parser.add_argument("--username", default="admin")
        parser.add_argument(
            "--fences", type=int, default=6, help="trackers that get a fence around a place"
        )
        parser.add_argument(
            "--webhook-url",
            default="http://127.0.0.1:8766/alerts",
            help="where the demo alert rule posts (demo_webhook_receiver)",
        )

    @transaction.atomic
    def handle(self, *args: Any, **options: Any) -> None:
        base = options["simulator_url"].rstrip("/")
        run, _ = ProductionRun.objects.get_or_create(
            name="demo", defaults={"starts_at": dt.datetime(2024, 1, 1, tzinfo=dt.UTC)}
        )
        static = run.trackers.filter(kind=TrackerKind.STATIC).count()
        entries = [
            entry_from_keypair(KeyPair.new(), f"demo-{static + i + 1:03d}")
            for i in range(max(0, options["trackers"] - static))
        ]
        airtags = run.trackers.filter(kind=TrackerKind.ACCESSORY).count()
        now = timezone.now()
        entries += [
            entry_from_accessory(
                FindMyAccessory(
                    master_key=secrets.token_bytes(28),
                    skn=secrets.token_bytes(32),
                    sks=secrets.token_bytes(32),
                    paired_at=now - dt.timedelta(days=30 + i),
                ),
                f"airtag-{airtags + i + 1:02d}",
            )
            for i in range(max(0, options["accessories"] - airtags))
        ]
        Tracker.objects.bulk_create(entry.to_tracker(production_run=run) for entry in entries)
        AppleAccount.objects.update_or_create(
            name="demo-simulator",
            defaults={
                "state": account_state(base + ANISETTE_PATH, "demo@example.com"),
                "anisette_url": base + ANISETTE_PATH,
                "fetch_endpoint": base,
                "status": AccountStatus.ACTIVE,
            },
        )
        password = secrets.token_urlsafe(12)
        user, _ = get_user_model().objects.get_or_create(username=options["username"])
        user.is_staff = user.is_superuser = True
        user.set_password(password)
        user.save()
        # Fences belong to an owner and watch the owner's trackers: the admin owns the fleet.
        run.trackers.filter(owner__isnull=True).update(owner=user)
        fences = self.fences(run, user, options["fences"])
        rule = self.alert_rule(user, options["webhook_url"])
        self.stdout.write(
            f"demo fleet: {run.trackers.count()} trackers "
            f"({run.trackers.filter(kind=TrackerKind.ACCESSORY).count()} of them AirTags), "
            f"account 'demo-simulator' -> {base}\n"
            f"geofences: {fences}; alert rule '{rule.name}' -> {rule.webhook_url} and Redis\n"
            f"admin login: username={user.username} password={password}"
        )

    def fences(self, run: ProductionRun, owner: Any, count: int) -> int:
        """Circles around the first place of `count` trackers (the first AirTag among them),
        and a polygon around the second place of the first: where they come and go."""
        trackers = list(run.trackers.filter(kind=TrackerKind.STATIC).order_by("name")[:count])
        airtag = run.trackers.filter(kind=TrackerKind.ACCESSORY).order_by("name").first()
        if airtag is not None and trackers:
            trackers[-1] = airtag
        for tracker in trackers:
            lat, lon = places(tracker)[0]
            Geofence.objects.get_or_create(
                owner=owner,
                name=f"{tracker.name} place 1",
                defaults={
                    "kind": FenceKind.CIRCLE,
                    "center": Point(lon, lat, srid=4326),
                    "radius_m": FENCE_RADIUS_M,
                },
            )
        if trackers:
            lat, lon = places(trackers[0])[1]
            Geofence.objects.get_or_create(
                owner=owner,
                name=f"{trackers[0].name} place 2 (polygon)",
                defaults={"kind": FenceKind.POLYGON, "area": square(lat, lon, FENCE_RADIUS_M)},
            )
        return Geofence.objects.filter(owner=owner).count()

    def alert_rule(self, owner: Any, webhook_url: str) -> AlertRule:
        rule, _ = AlertRule.objects.update_or_create(
            owner=owner,
            name=RULE_NAME,
            defaults={
                "event_kinds": [EventKind.ENTER, EventKind.EXIT],
                "channels": [Channel.WEBHOOK, Channel.REDIS],
                "webhook_url": webhook_url,
            },
        )
        ensure_webhook_secret(rule)  # demo_webhook_receiver reads it by the rule's name
        return rule


def places(tracker: Tracker) -> list[tuple[float, float]]:
    """(lat, lon) of the places the simulator makes this tracker dwell at."""
    if tracker.kind == TrackerKind.ACCESSORY:
        return SimulatedAccessory(FindMyAccessory.from_json(tracker.key_material)).places
    return SimulatedTracker(KeyPair.from_json(tracker.key_material).adv_key_bytes).places


def square(lat: float, lon: float, half_side_m: float) -> Polygon:
    corners = [(-1, -1), (-1, 1), (1, 1), (1, -1), (-1, -1)]
    points = [_offset(lat, lon, n * half_side_m, e * half_side_m) for n, e in corners]
    return Polygon([(p_lon, p_lat) for p_lat, p_lon in points], srid=4326)
