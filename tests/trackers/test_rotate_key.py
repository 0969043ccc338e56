"""rotate_encryption_key: every encrypted column onto the first key, resumable, worker-safe."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from cryptography.fernet import Fernet, InvalidToken
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, transaction

from trackers.fields import encrypted_fields
from trackers.models import Tracker

from ..factories import AppleAccountFactory, TrackerFactory

OLD, NEW, UNKNOWN = (Fernet.generate_key().decode() for _ in range(3))


@pytest.fixture
def old_key(settings):
    """Rows written with OLD; the returned function prepends NEW, as an operator would."""
    settings.FIELD_ENCRYPTION_KEYS = [OLD]

    def prepend_new() -> None:
        settings.FIELD_ENCRYPTION_KEYS = [NEW, OLD]

    return prepend_new


def raw(table: str, column: str) -> dict[int, str]:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT id, {column} FROM {table} ORDER BY id")  # noqa: S608
        return dict(cursor.fetchall())


def raw_keys() -> dict[int, str]:
    return raw("trackers_tracker", "key_material")


def on_new_key(token: str) -> bool:
    try:
        Fernet(NEW).decrypt(token.encode())
    except InvalidToken:
        return False
    return True


def rotate(*args: str) -> None:
    call_command("rotate_encryption_key", *args)


def test_it_finds_every_encrypted_column():
    found = {(model._meta.label, field.name) for model, field in encrypted_fields()}
    assert {("trackers.AppleAccount", "state"), ("trackers.Tracker", "key_material")} <= found


@pytest.mark.django_db
def test_every_encrypted_value_ends_on_the_new_key(old_key, capsys):
    TrackerFactory.create_batch(3)
    AppleAccountFactory()
    old_key()

    rotate("--batch-size", "2")

    assert all(on_new_key(t) for t in raw_keys().values())
    assert all(on_new_key(t) for t in raw("trackers_appleaccount", "state").values())
    out = capsys.readouterr().out
    assert "trackers.Tracker.key_material: 3 rotated, 0 already current" in out
    assert "trackers.AppleAccount.state: 1 rotated, 0 already current" in out
    assert "0 values left on an old key" in out


@pytest.mark.django_db
def test_the_old_key_can_be_dropped_afterwards(old_key, settings):
    material = TrackerFactory().key_material
    old_key()
    rotate()
    settings.FIELD_ENCRYPTION_KEYS = [NEW]
    assert Tracker.objects.get().key_material == material


@pytest.mark.django_db
def test_a_rerun_leaves_rows_already_on_the_new_key_alone(old_key, capsys):
    TrackerFactory.create_batch(2)
    old_key()
    TrackerFactory.create_batch(2)  # as if an interrupted run had rotated these
    before = raw_keys()

    rotate("--batch-size", "1")

    after = raw_keys()
    assert "2 rotated, 2 already current" in capsys.readouterr().out
    assert sum(after[pk] == before[pk] for pk in before) == 2


@pytest.mark.django_db
def test_dry_run_counts_and_writes_nothing(old_key, capsys):
    TrackerFactory.create_batch(3)
    old_key()
    before = raw_keys()

    rotate("--dry-run")

    assert raw_keys() == before
    out = capsys.readouterr().out
    assert "trackers.Tracker.key_material: 3 to rotate, 0 already current" in out
    assert "3 values left on an old key (dry run" in out


@pytest.mark.django_db
def test_a_value_no_key_decrypts_is_reported_and_the_rest_rotated(old_key, settings, capsys):
    TrackerFactory.create_batch(2)
    settings.FIELD_ENCRYPTION_KEYS = [UNKNOWN]  # a key the operator no longer has
    lost = TrackerFactory()
    old_key()
    lost_token = raw_keys()[lost.pk]

    with pytest.raises(CommandError, match="not every value was rotated: 1 that no key decrypts"):
        rotate()

    assert f"trackers.Tracker.key_material id={lost.pk}: no key" in capsys.readouterr().err
    tokens = raw_keys()
    assert tokens.pop(lost.pk) == lost_token
    assert len(tokens) == 2
    assert all(on_new_key(t) for t in tokens.values())


@contextmanager
def held_by_a_worker(tracker: Tracker, new_material: dict) -> Iterator[None]:
    """Another connection locks `tracker`'s row and saves new key material, committed on exit."""
    locked, release = threading.Event(), threading.Event()

    def worker() -> None:
        try:
            with transaction.atomic():
                list(Tracker.objects.select_for_update().filter(pk=tracker.pk).values("pk"))
                Tracker.objects.filter(pk=tracker.pk).update(key_material=new_material)
                locked.set()
                release.wait(10)
        finally:
            connection.close()

    thread = threading.Thread(target=worker)
    thread.start()
    assert locked.wait(10)
    try:
        yield
    finally:
        release.set()
        thread.join()


@pytest.mark.django_db(transaction=True)
def test_a_row_a_worker_holds_is_left_for_the_next_run_with_the_workers_value(old_key):
    first, held, last = TrackerFactory.create_batch(3)
    old_key()
    saved_by_worker = {"type": "keypair", "saved": "by the worker"}

    with held_by_a_worker(held, saved_by_worker):
        with pytest.raises(CommandError, match="1 locked by another process"):
            rotate("--batch-size", "1")
        tokens = raw_keys()
        assert on_new_key(tokens[first.pk])
        assert on_new_key(tokens[last.pk])

    assert Tracker.objects.get(pk=held.pk).key_material == saved_by_worker
    rotate()  # the next run finds nothing left to do
    assert all(on_new_key(t) for t in raw_keys().values())
