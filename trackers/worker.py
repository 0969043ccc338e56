"""The fetch loop: a pass over the fleet, and the long-running worker around it.

A pass claims batches until no due tracker is left; the worker runs passes until SIGTERM or
SIGINT (the handlers only set a flag, so it stops within a second). A worker outlives what
would kill a naive one: no Apple account yet (it waits and beats `no_account`), a lost
database connection (it reconnects; its leases run out by themselves), an unexpected error
in a batch (recorded, the batch released, a short pause, on).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import connection
from django.utils import timezone

from locations.pipeline import BackgroundStore

from .fetch import BatchResult, Fetched, fetch_claim, store_fetched
from .findmy_client import FailureCategory
from .loop import run_loop
from .models import AppleAccount
from .queue import claim_work, claimable_trackers, database_now, seconds_until_work
from .signals import process_started, process_stopped

log = logging.getLogger(__name__)

NO_ACCOUNT = "no_account"


def worker_name(prefix: str = "worker") -> str:
    return f"{prefix}:{socket.gethostname()}:{os.getpid()}"


@dataclass
class PassSummary(BatchResult):
    batches: int = 0
    by_outcome: dict[str, int] = field(default_factory=dict)

    def line(self) -> str:
        return (
            f"trackers={self.trackers} requests={self.requests} new_reports={self.new} "
            f"duplicate_reports={self.duplicates} failures={self.failures}"
        )


def _wait(stop: threading.Event | None, seconds: float) -> bool:
    """Sleep, or less if asked to stop; True when asked to stop."""
    if stop is not None:
        return stop.wait(seconds)
    time.sleep(seconds)
    return False


def run_pass(
    worker: str,
    *,
    stop: threading.Event | None = None,
    wait_for_accounts: bool = True,
    deadline: float | None = None,
    on_batch: Callable[[BatchResult], None] | None = None,
) -> PassSummary:
    """Fetch until no due tracker is left (one pass over the fleet), or stop/deadline.

    Each tracker is tried at most once per pass: what was processed since the pass began is
    left out by a range condition (cheap at any fleet size, even with FETCH_INTERVAL=0), and
    the few that failed by id; they wait for the next pass. An accessory catching up on a
    long window is not processed until its window is complete, so the pass asks again.

    Pipelined (FETCH_PIPELINE, outside a transaction): batch n is stored and finished in a
    background thread while this one claims, fetches and decrypts batch n+1, so PostgreSQL
    works on the other core while the worker decrypts.
    """
    pipelined = settings.FETCH_PIPELINE and not connection.in_atomic_block
    with BackgroundStore("store") if pipelined else contextlib.nullcontext() as store:
        return _run_pass(worker, store, stop, wait_for_accounts, deadline, on_batch)


def _run_pass(
    worker: str,
    store: BackgroundStore | None,
    stop: threading.Event | None,
    wait_for_accounts: bool,
    deadline: float | None,
    on_batch: Callable[[BatchResult], None] | None,
) -> PassSummary:
    summary = PassSummary()
    started = database_now()
    failed: set[int] = set()
    waiting_said = False

    def done(result: BatchResult | None, tracker_ids: list[int]) -> None:
        if result is None:
            return
        if result.outcome != "ok":
            failed.update(tracker_ids)
        summary.add(result)
        summary.batches += 1
        summary.by_outcome[result.outcome] = summary.by_outcome.get(result.outcome, 0) + 1
        if on_batch:
            on_batch(result)
        if result.outcome == FailureCategory.UNEXPECTED:
            _wait(stop, settings.WORKER_ERROR_BACKOFF)  # a bug must not spin

    in_flight: list[int] = []  # the trackers of the batch being stored in the background
    while not (stop and stop.is_set()) and (deadline is None or time.monotonic() < deadline):
        claim = claim_work(worker, exclude_ids=failed, not_since=started)
        if claim is None:
            if store is not None and in_flight:  # its trackers may be what is left
                done(store.drain(), in_flight)
                in_flight = []
                continue
            wait = seconds_until_work(failed, started) if wait_for_accounts else None
            if wait is None:
                break
            if wait > 5 and not waiting_said:
                log.warning(
                    "due trackers remain; waiting %.0f s for an account that may send "
                    "(ACCOUNT_MIN_REQUEST_INTERVAL=%s s; more accounts fetch faster)",
                    wait,
                    settings.ACCOUNT_MIN_REQUEST_INTERVAL,
                )
            waiting_said = wait > 5
            if _wait(stop, min(wait, 1.0)):
                break
            continue
        waiting_said = False
        outcome = fetch_claim(claim, stop)
        if not isinstance(outcome, Fetched):
            done(outcome, claim.tracker_ids)
        elif store is None:
            done(store_fetched(outcome), claim.tracker_ids)
        else:
            done(store.submit(store_fetched, outcome), in_flight)
            in_flight = claim.tracker_ids
    if store is not None and in_flight:
        done(store.drain(), in_flight)
    return summary


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

    def on_idle(self) -> None:
        """Between passes: say so when there is no account to fetch with."""
        if not AppleAccount.objects.usable().exists():
            if self.last_outcome != NO_ACCOUNT:
                log.warning(
                    "no usable Apple account: waiting for one (manage.py add_apple_account)",
                    extra={"worker": self.name},
                )
            self.last_outcome = NO_ACCOUNT
        elif self.last_outcome == NO_ACCOUNT:
            self.last_outcome = "idle"


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
        self.service_name = service_name
        self.stop = threading.Event()
        self.status = FetchStatus(self.name)

    def install_signal_handlers(self) -> None:
        def handler(signum: int, frame: Any) -> None:
            log.info("stopping on %s", signal.Signals(signum).name, extra={"worker": self.name})
            self.stop.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def _start_heartbeat(self) -> None:
        process_started.send(
            sender=Worker, service_name=self.service_name, figures=self.status.figures, key=self
        )

    def _stop_heartbeat(self) -> None:
        process_stopped.send(sender=Worker, key=self)

    def run_once(self) -> PassSummary:
        """One pass: every due, eligible tracker once (waiting for accounts as needed)."""
        self._start_heartbeat()
        try:
            return run_pass(self.name, stop=self.stop, on_batch=self.status.on_batch)
        finally:
            self._stop_heartbeat()

    def run_forever(self) -> None:
        def one_pass() -> bool:
            summary = run_pass(
                self.name, stop=self.stop, wait_for_accounts=False, on_batch=self.status.on_batch
            )
            if summary.batches == 0:
                self.status.on_idle()
            return summary.batches > 0

        run_loop(
            name=self.name,
            service_name=self.service_name,
            stop=self.stop,
            one_pass=one_pass,
            idle_seconds=settings.WORKER_IDLE_SLEEP,
            figures=self.status.figures,
            key=self,
        )


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
