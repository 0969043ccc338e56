"""Process new location reports: geofence states, events and alert deliveries."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from trackers.loop import check_name, stop_on_signals
from trackers.models import Tracker
from trackers.worker import worker_name

from ...worker import Processor, run_pass


class Command(BaseCommand):
    help = (
        "Run a location processor: claim trackers with new reports (one processor per "
        "tracker at a time), check them against geofences in timestamp order, raise events "
        "and alert deliveries exactly once. Any number may run. SIGTERM stops it cleanly."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--once", action="store_true", help="process everything pending, print a summary, exit"
        )
        parser.add_argument("--name", help="processor name in leases and logs (default host:pid)")

    def handle(self, *args: Any, **options: Any) -> None:
        name = options["name"]
        check_name(name, Tracker._meta.get_field("claimed_by").max_length)
        if options["once"]:
            summary = run_pass(name or worker_name("processor"))
            self.stdout.write(summary.line())
            return
        processor = Processor(name)
        stop_on_signals(processor.stop)
        self.stdout.write(f"processor {processor.name} started")
        processor.run_forever()
