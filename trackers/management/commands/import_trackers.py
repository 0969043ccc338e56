"""Import tracker keys: findmy's JSON (objects, lists, JSON lines) or CSV `name,private_key`."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from trackers.keyfiles import parse_key_file, store_entries
from trackers.models import ProductionRun


class Command(BaseCommand):
    help = (
        "Import tracker keys from PATH ('-' for standard input). Re-importing is harmless: "
        "keys already known (by hashed advertisement key) are left as they are. Any invalid "
        "entry stops the import unless --skip-invalid is given."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path")
        parser.add_argument("--production-run", metavar="NAME")
        parser.add_argument("--owner", metavar="USERNAME")
        parser.add_argument(
            "--skip-invalid", action="store_true", help="import the valid entries anyway"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        text = self._read(options["path"])
        run = self._lookup(ProductionRun, "name", options["production_run"], "production run")
        owner = self._lookup(get_user_model(), "username", options["owner"], "user")
        entries, problems = parse_key_file(text, options["path"])
        for problem in problems:
            self.stderr.write(f"{options['path']}: {problem}")
        if problems and not options["skip_invalid"]:
            raise CommandError(
                f"{len(problems)} invalid entr{'y' if len(problems) == 1 else 'ies'}; nothing "
                f"imported ({len(entries)} valid; use --skip-invalid to import those)"
            )
        result = store_entries(entries, production_run=run, owner=owner)
        new, known = result.created, result.known
        self.stdout.write(
            f"imported {len(new)} trackers, {len(known)} already known, "
            f"{len(problems)} invalid skipped"
            if problems
            else f"imported {len(new)} trackers, {len(known)} already known"
        )

    def _read(self, path: str) -> str:
        if path == "-":
            # The bytes, where there are any: the terminal's locale must not decide the encoding.
            stream = getattr(sys.stdin, "buffer", sys.stdin)
            return self._text(stream.read, "standard input")
        return self._text(Path(path).read_bytes, path)

    def _text(self, read: Callable[[], bytes | str], source: str) -> str:
        try:
            data = read()
            return data if isinstance(data, str) else data.decode("utf-8")
        except OSError as exc:
            raise CommandError(f"cannot read {source}: {exc}") from None
        except UnicodeDecodeError as exc:
            raise CommandError(
                f"{source} is not UTF-8 text (byte {exc.start}): a binary file? Key files are "
                "findmy JSON or CSV; nothing imported"
            ) from None

    def _lookup(self, model: Any, field: str, value: str | None, label: str) -> Any:
        if value is None:
            return None
        try:
            # A NUL cannot be in a PostgreSQL string, hence in no name: not even a query for it.
            if "\x00" in value:
                raise model.DoesNotExist
            return model.objects.get(**{field: value})
        except model.DoesNotExist:
            raise CommandError(f"no {label} named {value!r}; create it first (admin)") from None
