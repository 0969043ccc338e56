"""The long-running fetch worker: claim, fetch, store, repeat; stop cleanly on SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from typing import Any

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection
from django.utils import timezone

from monitoring.heartbeat import Heartbeat

from .fetching import BatchResult, PassSummary, claimable_trackers, run_pass

log = logging.getLogger(__name__)


def worker_name(prefix: str = "worker") -> str:
    return f"{prefix}:{socket.gethostname()}:{os.getpid()}"


class FetchStatus:
    """What a fetching process's heartbeat reports, kept up to date batch by batch."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.last_success: str | None = None
        self.last_outcome = "starting"

    def figures(self) -> dict[str, Any]:
        return {
            "worker": self.name,
            "queue_size": claimable_trackers().count(),
            "last_successful_operation": self.last_success,
            "api_status": self.last_outcome,
        }

    def on_batch(self, result: BatchResult) -> None:
        self.last_outcome = result.outcome
        if result.outcome == "ok":
            self.last_success = timezone.now().isoformat()
        log.info(
            "batch %s: %d trackers, %d new, %d duplicate, %d failed reports",
            result.outcome,
            result.trackers,
            result.new,
            result.duplicates,
            result.failures,
            extra={
                "worker": self.name,
                "trackers": result.trackers,
                "new": result.new,
                "duplicates": result.duplicates,
                "failures": result.failures,
            },
        )


_process_status: dict[int, FetchStatus] = {}


def process_status(prefix: str = "qcluster") -> FetchStatus:
    """This process's status (django-q2 worker processes: one per pid, made after the fork)."""
    pid = os.getpid()
    if pid not in _process_status:
        _process_status[pid] = FetchStatus(worker_name(prefix))
    return _process_status[pid]


class Worker:
    """One fetch worker process. The signal handlers only set a flag (SIGTERM acts in <1 s)."""

    def __init__(self, name: str | None = None, service_name: str = "fetch_trackers") -> None:
        self.name = name or worker_name()
        self.stop = threading.Event()
        self.status = FetchStatus(self.name)
        self.heartbeat = Heartbeat(service_name, figures=self.status.figures)

    def install_signal_handlers(self) -> None:
        def handler(signum: int, frame: Any) -> None:
            log.info("stopping on %s", signal.Signals(signum).name, extra={"worker": self.name})
            self.stop.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def run_once(self) -> PassSummary:
        """One pass: every due, eligible tracker once (waiting for accounts as needed)."""
        self.heartbeat.start()
        try:
            return run_pass(self.name, stop=self.stop, on_batch=self.status.on_batch)
        finally:
            self.heartbeat.stop()

    def run_forever(self) -> None:
        self.heartbeat.start()
        failures = 0
        try:
            while not self.stop.is_set():
                try:
                    summary = run_pass(
                        self.name,
                        stop=self.stop,
                        wait_for_accounts=False,
                        on_batch=self.status.on_batch,
                    )
                    failures = 0
                except DatabaseError:
                    # PostgreSQL restarted or unreachable: drop the connection, back off, retry.
                    failures += 1
                    log.exception("database error; retrying", extra={"worker": self.name})
                    connection.close()
                    self.stop.wait(min(2**failures, 30))
                    continue
                if summary.batches == 0:
                    close_old_connections()
                    self.stop.wait(settings.WORKER_IDLE_SLEEP)
        finally:
            self.heartbeat.stop()
            log.info("worker stopped", extra={"worker": self.name})


def run_for(seconds: float) -> dict[str, Any]:
    """A bounded pass for django-q2: fetch what is due for up to `seconds`, then return."""
    status = process_status()
    summary = run_pass(
        status.name,
        wait_for_accounts=False,
        deadline=time.monotonic() + seconds,
        on_batch=status.on_batch,
    )
    return {"batches": summary.batches, "summary": summary.line()}
