"""Delete old FetchAttempt rows (the audit log); the /metrics counters keep counting them."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from monitoring.attempts import prune_attempts


class Command(BaseCommand):
    help = (
        "Delete fetch attempts older than --days (default FETCH_ATTEMPT_RETENTION_DAYS). "
        "qcluster runs this daily; use it from cron where no qcluster runs."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--days", type=int, default=None)

    def handle(self, *args: Any, **options: Any) -> None:
        days = options["days"]
        if days is None:
            days = settings.FETCH_ATTEMPT_RETENTION_DAYS
        if days < 1:
            raise CommandError("--days must be at least 1")
        deleted = prune_attempts(days)
        self.stdout.write(f"deleted {deleted} fetch attempts older than {days} days")
