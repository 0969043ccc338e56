"""Send alert deliveries: webhooks, emails, Redis notifications."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from geofences.models import AlertDelivery
from trackers.loop import check_name, stop_on_signals
from trackers.worker import worker_name

from ...deliveries import Sender, run_pass


class Command(BaseCommand):
    help = (
        "Run an alert sender: claim due deliveries (SKIP LOCKED, under a lease), send each "
        "by webhook, email or Redis pub/sub, retry transient faults with backoff and jitter. "
        "Any number may run. SIGTERM stops it within a second."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--once", action="store_true", help="send every delivery due now once, print, exit"
        )
        parser.add_argument("--name", help="sender name in leases and logs (default host:pid)")

    def handle(self, *args: Any, **options: Any) -> None:
        name = options["name"]
        check_name(name, AlertDelivery._meta.get_field("claimed_by").max_length)
        sender = Sender(name or worker_name("sender"))
        stop_on_signals(sender.stop)
        if options["once"]:
            summary = run_pass(sender.name, stop=sender.stop)
            self.stdout.write(summary.line())
            return
        self.stdout.write(f"sender {sender.name} started")
        sender.run_forever()
