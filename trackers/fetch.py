"""The fetch of one claim: ask Apple, decrypt, validate, store, finish.

The request runs outside any transaction, through findmy (findmy_client.ReportSource),
with retries for transient faults. Reports are decrypted with each tracker's key, checked
(locations.validation), stored by a binary COPY and one statement per batch
(locations.ingest), and the claim is finished conditionally on its lease. Whatever goes
wrong ends in a failure record and the batch given back at once: a fetch never kills the
worker that holds the leases.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import logging
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any

import tenacity
from django.conf import settings
from django.db import InterfaceError, OperationalError, transaction
from django.db.models import F
from django.db.models.functions import Coalesce, Now
from django.utils import timezone
from findmy import KeyPair

from locations.ingest import ingest
from locations.validation import report_problem

from . import breaker, quarantine
from .findmy_client import FailureCategory, FetchError, ReportSource, check_endpoints
from .leases import TRACKER_LEASE
from .models import Tracker
from .payloads import DecryptedReport, PayloadError, decrypt_payload
from .queue import Claim, database_now, release
from .signals import fetch_attempt, report_failure

log = logging.getLogger(__name__)


@dataclass
class BatchResult:
    trackers: int = 0
    requests: int = 0
    new: int = 0
    duplicates: int = 0
    failures: int = 0
    finished: int = 0  # trackers whose lease was still ours at the finish
    outcome: str = "ok"
    error: str = ""

    def add(self, other: BatchResult) -> None:
        for name in ("trackers", "requests", "new", "duplicates", "failures", "finished"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


class Stopped(Exception):
    """The worker was asked to stop while a request was in flight."""


# On shutdown, a request in flight gets this long to finish (findmy's own HTTP timeout is
# 5 s), so that what Apple already handed out is stored rather than fetched again later.
SHUTDOWN_GRACE_SECONDS = 6.0


# --- the request ------------------------------------------------------------------------
async def _request(
    claim: Claim, stop: threading.Event | None
) -> tuple[list[tuple[str, bytes]], dict[str, Any]]:
    source = ReportSource(claim.account_state, claim.fetch_endpoint, claim.anisette_url)
    async with source:
        task = asyncio.ensure_future(source.fetch_devices(claim.devices))
        stopping_since: float | None = None
        while not task.done():
            # Poll the stop flag: SIGTERM lets the request finish, but never waits out
            # findmy's 30 s retry loop for empty answers.
            await asyncio.wait({task}, timeout=0.2)
            if stop is None or not stop.is_set() or task.done():
                continue
            stopping_since = stopping_since or time.monotonic()
            if time.monotonic() - stopping_since > SHUTDOWN_GRACE_SECONDS:
                task.cancel()
                raise Stopped
        return task.result(), source.state()


def fetch_with_retries(
    claim: Claim, stop: threading.Event | None = None
) -> tuple[list[tuple[str, bytes]], dict[str, Any], int]:
    """Send the claim's request; retry transient faults with exponential backoff and jitter.

    A retry is another request of the same account, so it waits the account's minimum
    interval too, and only happens while the whole wait fits in FETCH_RETRY_MAX_WAIT (with
    the default 300 s interval, a failed batch is released to the next claim instead).
    """
    attempts = 0

    def attempt() -> tuple[list[tuple[str, bytes]], dict[str, Any]]:
        nonlocal attempts
        attempts += 1
        # Stamped before (a crash still leaves the account resting) and after (so the
        # minimum interval runs from the end of one request to the start of the next).
        breaker.mark_request(claim, count=True)
        try:
            return asyncio.run(_request(claim, stop))
        finally:
            breaker.mark_request(claim, count=False)

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(lambda e: isinstance(e, FetchError) and e.transient),
        wait=tenacity.wait_fixed(settings.ACCOUNT_MIN_REQUEST_INTERVAL)
        + tenacity.wait_exponential_jitter(initial=1, max=10),
        stop=tenacity.stop_after_attempt(settings.FETCH_RETRIES)
        | tenacity.stop_before_delay(settings.FETCH_RETRY_MAX_WAIT),
        sleep=lambda s: _interruptible_sleep(s, stop),
        reraise=True,
    )
    reports, state = retrying(attempt)
    return reports, state, attempts


def _interruptible_sleep(seconds_: float, stop: threading.Event | None) -> None:
    if stop is None:
        time.sleep(seconds_)
    elif stop.wait(seconds_):
        raise Stopped


# --- decrypting and checking --------------------------------------------------------------
def decrypt_all(
    claim: Claim, raw: list[tuple[str, bytes]], now: dt.datetime | None = None
) -> tuple[list[tuple[int, DecryptedReport]], int]:
    """Decrypt and check every payload. One that fails to decrypt, or decrypts to an
    impossible report, is recorded with its payload (nothing Apple returned is lost),
    never stored as a location, never a crash. `now`: the database clock.

    An accessory's alignment moves to the newest primary-key index seen in a valid report.
    """
    now = now or timezone.now()
    keys: dict[int, KeyPair] = {}
    out: list[tuple[int, DecryptedReport]] = []
    failures = 0
    seen: set[bytes] = set()
    for hashed_id, payload in raw:
        if payload in seen:
            continue
        seen.add(payload)
        tracker_id, key, index = claim.lookup.get(hashed_id, (None, None, None))
        try:
            if tracker_id is None:
                raise PayloadError("invalid_payload", f"unasked-for id {hashed_id}")
            if key is None:
                key = keys.get(tracker_id)
                if key is None:
                    key = keys[tracker_id] = _keypair(claim.key_material.get(tracker_id))
            report = decrypt_payload(payload, hashed_id, key)
        except PayloadError as exc:
            failures += 1
            _keep_payload(claim, exc.category, str(exc), hashed_id, payload, tracker_id)
            continue
        problem = report_problem(report, now)
        if problem is not None:
            failures += 1
            _keep_payload(
                claim,
                FailureCategory.INVALID_REPORT,
                problem,
                hashed_id,
                payload,
                tracker_id,
                decoded=report,
            )
            continue
        out.append((tracker_id, report))
        if index is not None:
            claim.accessories[tracker_id].update_alignment(report.timestamp, index)
            claim.aligned.add(tracker_id)
    return out, failures


def _keep_payload(
    claim: Claim,
    category: str,
    message: str,
    hashed_id: str,
    payload: bytes,
    tracker_id: int | None,
    decoded: DecryptedReport | None = None,
) -> None:
    detail: dict[str, Any] = {
        "hashed_id": hashed_id,
        "payload_b64": base64.b64encode(payload).decode(),
    }
    if decoded is not None:
        detail["decoded"] = {
            "timestamp": decoded.timestamp.isoformat(),
            "latitude": decoded.latitude,
            "longitude": decoded.longitude,
            "accuracy": decoded.accuracy,
            "confidence": decoded.confidence,
            "status": decoded.status,
        }
    report_failure(
        category,
        message,
        fingerprint="payload:" + hashlib.sha256(payload).hexdigest(),
        account_id=claim.account_id,
        tracker_id=tracker_id,
        detail=detail,
    )


def _keypair(material: dict[str, Any] | None) -> KeyPair:
    try:
        return KeyPair.from_json(material)  # type: ignore[arg-type]
    except (KeyError, ValueError, TypeError, AssertionError) as exc:
        raise PayloadError("invalid_key", f"unusable key material: {exc!r}") from None


# --- finishing --------------------------------------------------------------------------
def finish(claim: Claim, new_state: dict[str, Any]) -> int:
    """Mark the batch processed, if the lease is still ours; free the account.

    Accessories that had reports get their key material saved again, alignment included
    (findmy's advice: after every fetch). An accessory whose window did not fit in this
    request stays due, with its catch-up recorded; it is marked processed (as of the
    moment its catch-up began) only once its window is complete. One transaction.
    """
    with transaction.atomic():
        mine = TRACKER_LEASE.mine(Tracker.objects.all(), claim.token)
        for tracker_id in sorted(claim.aligned):
            mine.filter(id=tracker_id).update(key_material=claim.accessories[tracker_id].to_json())
        finished = 0
        complete = set(claim.tracker_ids)
        for tracker_id, window in claim.windows.items():
            if window.complete or window.oldest_index is None:
                continue
            complete.discard(tracker_id)
            finished += TRACKER_LEASE.release(
                Tracker.objects.filter(id=tracker_id),
                claim.token,
                window_top=Coalesce(F("window_top"), claim.planned_at),
                window_next_index=window.oldest_index - 1,
                consecutive_failures=0,
            )
        finished += TRACKER_LEASE.release(
            Tracker.objects.filter(id__in=complete),
            claim.token,
            last_processed_at=Coalesce(F("window_top"), Now()),
            window_top=None,
            window_next_index=None,
            consecutive_failures=0,
        )
        breaker.succeed(claim, new_state)
    if finished < len(claim.trackers):
        log.warning(
            "lease lost before finish",
            extra={"worker": claim.worker, "lost": len(claim.trackers) - finished},
        )
    return finished


def fail(claim: Claim, error: FetchError) -> None:
    """Release the batch after a failed request; move the account's breaker; count suspects."""
    breaker.trip(claim, error)
    report_failure(
        error.category,
        error.message,
        fingerprint=f"account:{claim.account_id}",
        account_id=claim.account_id,
        detail={"trackers": len(claim.trackers), "worker": claim.worker},
    )
    quarantine.release_after_failure(claim, error)


# --- one claim, start to end ----------------------------------------------------------------
@dataclass
class Fetched:
    """A claim whose request succeeded and whose reports are decrypted: ready to store."""

    claim: Claim
    decrypted: list[tuple[int, DecryptedReport]]
    state: dict[str, Any]
    started: dt.datetime
    result: BatchResult


def process_claim(claim: Claim, stop: threading.Event | None = None) -> BatchResult:
    """Fetch, decrypt, store and finish one claim. Never raises, but for a lost database
    connection (the caller reconnects; the leases run out by themselves)."""
    outcome = fetch_claim(claim, stop)
    return outcome if isinstance(outcome, BatchResult) else store_fetched(outcome)


def fetch_claim(claim: Claim, stop: threading.Event | None = None) -> BatchResult | Fetched:
    """Ask for the claim's reports and decrypt them: a Fetched to store, or the final
    result of a claim that ends here (failed, released, nothing to ask for)."""
    started = timezone.now()
    result = BatchResult(trackers=len(claim.trackers))
    try:
        return _fetch(claim, stop, started, result)
    except (OperationalError, InterfaceError):
        raise
    except Exception as exc:  # noqa: BLE001 - a bug or an unknown fault: recorded, not fatal
        return _gave_up(claim, exc, result)


def store_fetched(fetched: Fetched) -> BatchResult:
    """Store and finish a fetched claim (in the worker's thread, or in a BackgroundStore's)."""
    try:
        return _store(fetched)
    except (OperationalError, InterfaceError):
        raise
    except Exception as exc:  # noqa: BLE001 - as in fetch_claim
        return _gave_up(fetched.claim, exc, fetched.result)


def _gave_up(claim: Claim, exc: Exception, result: BatchResult) -> BatchResult:
    give_up(claim, exc)
    result.outcome, result.error = FailureCategory.UNEXPECTED, f"{type(exc).__name__}: {exc}"
    return result


def _fetch(
    claim: Claim, stop: threading.Event | None, started: dt.datetime, result: BatchResult
) -> BatchResult | Fetched:
    for tracker, reason in claim.load_secrets():
        quarantine.quarantine_unusable(claim, tracker, reason)
        result.failures += 1
    now = database_now()
    for tracker, reason in claim.plan_request(now):
        quarantine.quarantine_unusable(claim, tracker, reason)
        result.failures += 1
    if not claim.devices:  # nothing left that can be asked for: no request is sent
        if claim.trackers:  # accessories whose window was already complete
            result.finished = finish(claim, claim.account_state)
        else:
            release(claim)
            result.outcome = FailureCategory.INVALID_KEY
        return result
    try:
        check_endpoints(claim.fetch_endpoint, claim.anisette_url)  # before any request
        raw, state, result.requests = fetch_with_retries(claim, stop)
    except Stopped:
        release(claim)
        result.outcome = "released"
        return result
    except FetchError as exc:
        if exc.category != FailureCategory.ENDPOINT:  # refused before any request was sent
            result.requests = max(1, result.requests)
        result.failures = 1
        result.outcome, result.error = exc.category, exc.message
        fail(claim, exc)
        if result.requests:
            log_attempt(claim, started, result)
        return result
    decrypted, failures = decrypt_all(claim, raw, now)
    result.failures += failures
    return Fetched(claim, decrypted, state, started, result)


def _store(fetched: Fetched) -> BatchResult:
    claim, result = fetched.claim, fetched.result
    stored = ingest(fetched.decrypted, fetched_at=timezone.now())
    result.new, result.duplicates = stored.new, stored.duplicates
    result.finished = finish(claim, fetched.state)
    log_attempt(claim, fetched.started, result)
    return result


def give_up(claim: Claim, exc: BaseException) -> None:
    """After an unexpected error: the batch back at once, and the traceback on record."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f"{frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno}" if frames else "?"
    log.exception("unexpected error in a batch; released", extra={"worker": claim.worker})
    release(claim)
    report_failure(
        FailureCategory.UNEXPECTED,
        "".join(traceback.format_exception(exc)),
        fingerprint=f"unexpected:{type(exc).__name__}:{where}",
        account_id=claim.account_id,
        detail={"trackers": claim.tracker_ids, "worker": claim.worker},
    )


def log_attempt(claim: Claim, started: dt.datetime, result: BatchResult) -> None:
    fetch_attempt.send(
        sender=None,
        account_id=claim.account_id,
        worker=claim.worker,
        started_at=started,
        finished_at=timezone.now(),
        trackers=result.trackers,
        outcome=result.outcome,
        new_reports=result.new,
        duplicate_reports=result.duplicates,
        failed_reports=result.failures if result.outcome == "ok" else 0,
        error=result.error,
    )
