"""Reverse-geocode location reports: at once for the newest, off-peak for the rest."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser

from trackers.loop import check_name, stop_on_signals
from trackers.worker import worker_name

from ...geocoders import configured_provider
from ...geocoding import Backfill, Geocoder, immediate_pass, retry_given_up
from ...resolver import Resolver


class Command(BaseCommand):
    help = (
        "Run a geocoder: new reports are answered from the address cache, the newest report "
        "of each tracker and the reports alerts wait for are looked up at once (one request "
        "per second for the whole deployment, however many geocoders run), the rest in the "
        "off-peak GEOCODE_BACKFILL_WINDOW. Any number may run. SIGTERM stops it within a second."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--once",
            action="store_true",
            help="one immediate pass over everything new, print a summary, exit",
        )
        parser.add_argument(
            "--backfill",
            action="store_true",
            help="one backfill run (inside GEOCODE_BACKFILL_WINDOW), print a summary, exit",
        )
        parser.add_argument(
            "--ignore-window",
            action="store_true",
            help="with --backfill: run it now, whatever the time",
        )
        parser.add_argument(
            "--retry-failed",
            action="store_true",
            help="clear the given-up cells and their reports' notes, so they are tried again",
        )
        parser.add_argument("--name", help="geocoder name in leases and logs (default host:pid)")

    def handle(self, *args: Any, **options: Any) -> None:
        name = options["name"] or worker_name("geocoder")
        check_name(name, 180)
        if options["ignore_window"] and not options["backfill"]:
            raise CommandError("--ignore-window goes with --backfill")
        try:
            configured_provider()
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from exc
        if options["retry_failed"]:
            cells, reports = retry_given_up()
            self.stdout.write(f"retry: cells={cells} reports={reports}")
        if options["once"] or options["backfill"]:
            self.one_shot(name, options)
        elif not options["retry_failed"]:
            self.run_forever(name)

    def one_shot(self, name: str, options: dict[str, Any]) -> None:
        resolver = Resolver(name)
        if options["once"]:
            immediate_pass(resolver, max_ids=None)
            self.stdout.write(f"once: {resolver.summary.line()}")
        if options["backfill"]:
            resolver = Resolver(name)
            run = Backfill(resolver, ignore_window=options["ignore_window"])
            run.run()
            self.stdout.write(
                f"backfill: {run.reason}; batches={run.batches} {resolver.summary.line()}"
            )

    def run_forever(self, name: str) -> None:
        geocoder = Geocoder(name)
        stop_on_signals(geocoder.stop)
        self.stdout.write(f"geocoder {geocoder.name} started ({geocoder.provider.name})")
        geocoder.run_forever()
