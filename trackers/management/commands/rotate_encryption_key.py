"""Re-encrypt every encrypted value with the first key of FIELD_ENCRYPTION_KEY.

Safe while workers run, and resumable. Rows are visited in primary-key order, a small batch
per short transaction. A batch locks its rows with `FOR NO KEY UPDATE SKIP LOCKED`, then
updates only the encrypted column, with the ciphertext it read under that lock re-encrypted
(`MultiFernet.rotate`: no JSON round trip). A worker that saves the same row before or after
the batch keeps its own value. Rows already on the first key are skipped, so a rerun after
an interruption continues where the last one stopped. A row another process holds is tried
once more at the end, then left for the next run. A row no key decrypts is reported. Either
way, the command exits non-zero once it has rotated everything else.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.fernet import InvalidToken
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections, models, router, transaction

from trackers.fields import EncryptedJSONField, encrypted_fields, is_current, rotate_token


class EncryptedColumn:
    """The SQL for one encrypted column: raw, so that nothing decrypts or re-serializes JSON.

    The only names put into SQL text are the model's own table and columns, quoted; every
    value is a parameter (hence the S608 exemptions).
    """

    def __init__(self, model: type[models.Model], encrypted: EncryptedJSONField) -> None:
        self.label = f"{model._meta.label}.{encrypted.name}"
        self.db = router.db_for_write(model)
        quote = connections[self.db].ops.quote_name
        self.table = quote(model._meta.db_table)
        self.pk = quote(model._meta.pk.column)
        self.column = quote(encrypted.column)

    def next_ids(self, after: Any, limit: int) -> list[Any]:
        """Up to `limit` ids with a value, in order, after `after` (None: from the start)."""
        where = f"{self.column} IS NOT NULL" + ("" if after is None else f" AND {self.pk} > %s")
        params = [] if after is None else [after]
        sql = f"SELECT {self.pk} FROM {self.table} WHERE {where} ORDER BY {self.pk} LIMIT %s"  # noqa: S608
        return [row[0] for row in self._fetch(sql, [*params, limit])]

    def read(self, ids: Sequence[Any], *, lock: bool) -> list[tuple[Any, str]]:
        # NO KEY UPDATE is the lock an UPDATE of a non-key column takes: unlike FOR UPDATE it
        # does not block a worker inserting reports that reference the row (FOR KEY SHARE).
        suffix = " FOR NO KEY UPDATE SKIP LOCKED" if lock else ""
        sql = (
            f"SELECT {self.pk}, {self.column} FROM {self.table} "  # noqa: S608
            f"WHERE {self.pk} = ANY(%s) AND {self.column} IS NOT NULL ORDER BY {self.pk}{suffix}"
        )
        return self._fetch(sql, [list(ids)])

    def write(self, values: list[tuple[str, Any]]) -> None:
        """Set the column to each (token, id)."""
        with connections[self.db].cursor() as cursor:
            sql = f"UPDATE {self.table} SET {self.column} = %s WHERE {self.pk} = %s"  # noqa: S608
            cursor.executemany(sql, values)

    def _fetch(self, sql: str, params: list[Any]) -> list[Any]:
        with connections[self.db].cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()


@dataclass
class Tally:
    rotated: int = 0
    current: int = 0
    unreadable: list[Any] = field(default_factory=list)
    locked: list[Any] = field(default_factory=list)

    def summary(self, dry_run: bool) -> str:
        parts = [
            f"{self.rotated} {'to rotate' if dry_run else 'rotated'}",
            f"{self.current} already current",
        ]
        if self.unreadable:
            parts.append(f"{len(self.unreadable)} no key decrypts")
        if self.locked:
            parts.append(f"{len(self.locked)} locked by another process (left for the next run)")
        return ", ".join(parts)


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def rotate_batch(column: EncryptedColumn, ids: Sequence[Any], tally: Tally, dry_run: bool) -> None:
    """Rotate the rows `ids` that are not on the first key yet, in one short transaction."""
    with transaction.atomic(using=column.db):
        rows = column.read(ids, lock=not dry_run)
        seen = {pk for pk, _ in rows}
        # Not returned: locked by another process (or deleted meanwhile, then gone on retry).
        tally.locked.extend(pk for pk in ids if pk not in seen)
        updates = []
        for pk, token in rows:
            if is_current(token):
                tally.current += 1
                continue
            try:
                updates.append((rotate_token(token), pk))
            except InvalidToken:
                tally.unreadable.append(pk)
        if updates and not dry_run:
            column.write(updates)
        tally.rotated += len(updates)


def rotate_column(column: EncryptedColumn, batch_size: int, dry_run: bool) -> Tally:
    tally = Tally()
    after = None
    while ids := column.next_ids(after, batch_size):
        after = ids[-1]
        rotate_batch(column, ids, tally, dry_run)
    # A worker holds a row for milliseconds (a claim, a save): by now it has most likely let go.
    retry, tally.locked = tally.locked, []
    for ids in chunks(retry, batch_size):
        rotate_batch(column, ids, tally, dry_run)
    return tally


def positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(value)
    return number


class Command(BaseCommand):
    help = (
        "Re-encrypt every encrypted value (account states, tracker keys) with the first key of "
        "FIELD_ENCRYPTION_KEY. Safe while workers run; rerun to continue an interrupted run."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run", action="store_true", help="count what would be rotated; write nothing"
        )
        parser.add_argument(
            "--batch-size", type=positive_int, default=100, metavar="N", help="rows per transaction"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        dry_run = options["dry_run"]
        left = unreadable = locked = 0
        for model, encrypted in encrypted_fields():
            column = EncryptedColumn(model, encrypted)
            tally = rotate_column(column, options["batch_size"], dry_run)
            self.stdout.write(f"{column.label}: {tally.summary(dry_run)}")
            for pk in tally.unreadable:
                self.stderr.write(
                    f"{column.label} id={pk}: no key in FIELD_ENCRYPTION_KEY decrypts it"
                )
            left += tally.rotated if dry_run else 0
            unreadable += len(tally.unreadable)
            locked += len(tally.locked)
        if dry_run:
            self.stdout.write(f"{left} values left on an old key (dry run: nothing written)")
        if unreadable or locked:
            raise CommandError(
                f"not every value was rotated: {unreadable} that no key decrypts (listed above), "
                f"{locked} locked by another process (run the command again)"
            )
        if not dry_run:
            self.stdout.write("0 values left on an old key: the other keys can be dropped")
