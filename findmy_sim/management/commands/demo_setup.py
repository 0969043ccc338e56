"""Set up the demo: an admin user, a fleet of simulated trackers, an account on the simulator."""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction
from django.utils import timezone
from findmy import FindMyAccessory, KeyPair

from findmy_sim.simulator import ANISETTE_PATH, account_state
from trackers.keyfiles import entry_from_accessory, entry_from_keypair
from trackers.models import AccountStatus, AppleAccount, ProductionRun, Tracker, TrackerKind


class Command(BaseCommand):
    help = "Create (idempotently) the demo fleet and an admin user; print the credentials."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--trackers", type=int, default=60, help="static-key trackers")
        parser.add_argument(
            "--accessories", type=int, default=5, help="rolling-key accessories (AirTags)"
        )
        parser.add_argument("--simulator-url", default="http://127.0.0.1:8765")
        parser.add_argument("--username", default="admin")

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
        self.stdout.write(
            f"demo fleet: {run.trackers.count()} trackers "
            f"({run.trackers.filter(kind=TrackerKind.ACCESSORY).count()} of them AirTags), "
            f"account 'demo-simulator' -> {base}\n"
            f"admin login: username={user.username} password={password}"
        )
