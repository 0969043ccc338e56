"""Set up the demo: an admin user, a fleet of simulated trackers, an account on the simulator."""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction
from findmy import KeyPair

from trackers.keyfiles import entry_from_keypair
from trackers.models import AccountStatus, AppleAccount, ProductionRun, Tracker
from trackers.simulator import ANISETTE_PATH, account_state


class Command(BaseCommand):
    help = "Create (idempotently) the demo fleet and an admin user; print the credentials."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--trackers", type=int, default=60)
        parser.add_argument("--simulator-url", default="http://127.0.0.1:8765")
        parser.add_argument("--username", default="admin")

    @transaction.atomic
    def handle(self, *args: Any, **options: Any) -> None:
        base = options["simulator_url"].rstrip("/")
        run, _ = ProductionRun.objects.get_or_create(
            name="demo", defaults={"starts_at": dt.datetime(2024, 1, 1, tzinfo=dt.UTC)}
        )
        missing = options["trackers"] - run.trackers.count()
        trackers = []
        for i in range(max(0, missing)):
            entry = entry_from_keypair(KeyPair.new(), f"demo-{run.trackers.count() + i + 1:03d}")
            trackers.append(
                Tracker(
                    name=entry.name,
                    key_material=entry.key_material,
                    hashed_adv_key=entry.hashed_adv_key,
                    production_run=run,
                )
            )
        Tracker.objects.bulk_create(trackers)
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
            f"demo fleet: {run.trackers.count()} trackers, account 'demo-simulator' -> {base}\n"
            f"admin login: username={user.username} password={password}"
        )
