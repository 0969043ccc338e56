"""Serve the local Find My network simulator (fetch and anisette endpoints) on localhost."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aiohttp import web
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import close_old_connections

from findmy_sim.simulator import ANISETTE_PATH, FAULT_MODES, FindMySimulator, account_state
from trackers.keyfiles import parse_key_file
from trackers.models import Tracker


def database_keys() -> list[dict[str, Any]]:
    """Key material (findmy JSON) of the trackers in the database (reloaded for new ids)."""
    close_old_connections()
    return list(Tracker.objects.values_list("key_material", flat=True))


class Command(BaseCommand):
    help = (
        "Run the local Find My network simulator. It answers findmy's fetch requests with "
        "real encrypted reports for the keys it knows: the trackers in the database "
        "(default) or the key files given with --keys (static keys and rolling-key "
        "accessories)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8765)
        parser.add_argument("--keys", action="append", default=[], metavar="FILE")
        parser.add_argument("--history-hours", type=float, default=24.0)
        parser.add_argument("--fault", choices=FAULT_MODES, default="none")
        parser.add_argument(
            "--write-account",
            metavar="FILE",
            help="write a logged-in account state for this simulator to FILE and exit "
            "(for add_apple_account --from-json)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        base = f"http://{options['host']}:{options['port']}"
        if options["write_account"]:
            state = account_state(base + ANISETTE_PATH)
            Path(options["write_account"]).write_text(json.dumps(state, indent=2))
            self.stdout.write(f"wrote a simulator account state to {options['write_account']}")
            return
        if not 0 < options["port"] < 65536:
            raise CommandError("--port must be between 1 and 65535")
        simulator = FindMySimulator(
            history_hours=options["history_hours"],
            key_loader=None if options["keys"] else database_keys,
        )
        simulator.add_material(
            self._file_keys(options["keys"]) if options["keys"] else database_keys()
        )
        simulator.set_fault(options["fault"])
        self.stdout.write(
            f"Find My simulator on {base} ({simulator.stats()['trackers']} trackers); "
            f"fetch endpoint {base}/findmyservice/v2/fetch, anisette {base}{ANISETTE_PATH}"
        )
        web.run_app(
            simulator.app(),
            host=options["host"],
            port=options["port"],
            print=None,
            access_log=None,
        )

    def _file_keys(self, paths: list[str]) -> list[dict[str, Any]]:
        keys: list[dict[str, Any]] = []
        for path in paths:
            try:
                text = Path(path).read_text(encoding="utf-8")
            except OSError as exc:
                raise CommandError(f"cannot read {path}: {exc}") from None
            entries, problems = parse_key_file(text, path)
            if problems:
                raise CommandError(f"{path}: " + "; ".join(str(p) for p in problems[:5]))
            keys += [e.key_material for e in entries]
        return keys
