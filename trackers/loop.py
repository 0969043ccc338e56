"""The loop every long-running service process shares: passes until it is asked to stop.

`fetch_trackers`, `process_locations` and `send_alerts` each run passes over their own queue;
around a pass they behave alike. A heartbeat runs from start to end (trackers.signals). A lost
database connection (PostgreSQL restarted, the connection killed) is dropped and reconnected
after a pause that grows to 30 s; leases held meanwhile run out by themselves and are claimed
again, so nothing is lost. Any other error is recorded (failure category `unexpected`) and the
loop goes on after WORKER_ERROR_BACKOFF. A pass that found nothing to do is followed by a pause
of `idle_seconds`. The stop event is set by a signal handler, so SIGTERM acts within a second.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Hashable
from typing import Any

from django.conf import settings
from django.core.management.base import CommandError
from django.db import DatabaseError, close_old_connections, connection

from .findmy_client import FailureCategory
from .signals import process_started, process_stopped, report_failure

log = logging.getLogger(__name__)

MAX_RECONNECT_PAUSE = 30  # seconds


def check_name(name: str | None, limit: int) -> None:
    """A long-running command's --name (it goes into lease columns and logs): 1 to `limit`
    characters without NUL, or a CommandError saying so. None: the default name."""
    if name is not None and (not name.strip() or len(name) > limit or "\x00" in name):
        raise CommandError(f"--name must be 1 to {limit} characters, without NUL")


def stop_on_signals(stop: threading.Event) -> None:
    """SIGTERM and SIGINT set `stop`; the handler does nothing else, so a pass ends cleanly."""

    def handler(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def run_loop(
    *,
    name: str,
    service_name: str,
    stop: threading.Event,
    one_pass: Callable[[], bool],
    idle_seconds: float,
    figures: Callable[[], dict[str, Any]],
    key: Hashable,
) -> None:
    """Run `one_pass` (True when it found work) until `stop` is set, heartbeating meanwhile."""
    process_started.send(sender=type(key), service_name=service_name, figures=figures, key=key)
    failures = 0
    try:
        while not stop.is_set():
            try:
                busy = one_pass()
                failures = 0
            except DatabaseError:
                failures += 1
                log.exception("database error; reconnecting", extra={"worker": name})
                connection.close()
                stop.wait(min(2**failures, MAX_RECONNECT_PAUSE))
                continue
            except Exception as exc:  # noqa: BLE001 - a bug outside a batch: on record
                failures += 1
                _record_unexpected(name, service_name, exc)
                stop.wait(settings.WORKER_ERROR_BACKOFF)
                continue
            if not busy:
                close_old_connections()
                stop.wait(idle_seconds)
    finally:
        process_stopped.send(sender=type(key), key=key)
        log.info("%s stopped", service_name, extra={"worker": name})


def _record_unexpected(name: str, service_name: str, exc: Exception) -> None:
    log.exception("unexpected error in the %s loop", service_name, extra={"worker": name})
    try:
        report_failure(
            FailureCategory.UNEXPECTED,
            f"{service_name}: {type(exc).__name__}: {exc}",
            fingerprint=f"{service_name}-loop:{type(exc).__name__}",
            detail={"worker": name},
        )
    except Exception:
        log.warning("could not record the unexpected error", exc_info=True)
