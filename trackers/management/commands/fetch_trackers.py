"""Fetch due trackers: a long-running worker, or one pass with --once."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from trackers.loop import check_name
from trackers.models import AppleAccount, Tracker
from trackers.worker import Worker


class Command(BaseCommand):
    help = (
        "Run a fetch worker: claim batches of due trackers (at most 64 a request), fetch "
        "their reports through findmy, store them. Any number of workers may run at once, "
        "on any number of machines. SIGTERM or Ctrl-C stops it cleanly within a second."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--once",
            action="store_true",
            help="fetch every due, eligible tracker once, print a summary and exit",
        )
        parser.add_argument("--name", help="worker name in leases and logs (default host:pid)")

    def handle(self, *args: Any, **options: Any) -> None:
        name = options["name"]
        check_name(name, Tracker._meta.get_field("claimed_by").max_length)
        if options["once"] and not AppleAccount.objects.usable().exists():
            # A long-running worker waits for an account (heartbeat: no_account); one pass
            # has nothing to wait for.
            raise CommandError(
                "no usable Apple account: add one with `manage.py add_apple_account`"
            )
        worker = Worker(name)
        worker.install_signal_handlers()
        if options["once"]:
            summary = worker.run_once()
            self.stdout.write(summary.line())
        else:
            self.stdout.write(f"worker {worker.name} started")
            worker.run_forever()
