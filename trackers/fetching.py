"""Claim a batch, fetch it through findmy, decrypt, store, finish: the data path of a worker.

A claim is one short transaction that locks an Apple account that may send now and up to 64
due trackers (`SELECT ... FOR UPDATE SKIP LOCKED`), and records who holds them until when
(a lease). The network call runs outside any transaction. The finish is conditional on the
claim token: a worker whose lease expired and was taken over cannot overwrite the new
holder's work. Reports are idempotent, so a batch fetched twice stores nothing twice.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import tenacity
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Case, F, Min, Value, When
from django.db.models.functions import Now
from django.utils import timezone
from findmy import FindMyAccessory, KeyPair
from findmy.keys import KeyPairType

from locations.ingest import ingest
from monitoring.attempts import log_attempt
from monitoring.failures import record_failure

from . import rolling
from .findmy_client import FailureCategory, FetchError, ReportSource
from .models import (
    USABLE_STATUSES,
    AccountStatus,
    AppleAccount,
    Tracker,
    TrackerKind,
    TrackerQuerySet,
    seconds,
)
from .payloads import DecryptedReport, PayloadError, decrypt_payload

log = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 24 * 3600


@dataclass
class ClaimedTracker:
    id: int
    hashed_id: str
    consecutive_failures: int
    kind: str = TrackerKind.STATIC
    last_processed_at: dt.datetime | None = None
    keys: int = 1  # the share of the request's key budget this tracker may use


@dataclass
class Claim:
    """What a worker holds: one account's next request, and the trackers to ask it for."""

    worker: str
    token: uuid.UUID  # the trackers' lease
    request_token: uuid.UUID  # the account's lease
    account_id: int
    account_name: str
    fetch_endpoint: str
    trackers: list[ClaimedTracker]
    # The secrets are decrypted after the claim's transaction, by load_secrets(): keeping
    # Fernet work out of the claim keeps the row locks short.
    account_state: dict[str, Any] = field(default_factory=dict)
    key_material: dict[int, dict[str, Any]] = field(default_factory=dict)
    # Filled by plan_request(): what is sent, and how to map answers back to trackers.
    devices: list[tuple[list[str], list[str]]] = field(default_factory=list)
    lookup: dict[str, tuple[int, KeyPair | None, int | None]] = field(default_factory=dict)
    accessories: dict[int, FindMyAccessory] = field(default_factory=dict)
    aligned: set[int] = field(default_factory=set)  # accessories that had reports: save them

    def load_secrets(self) -> None:
        self.account_state = AppleAccount.objects.values_list("state", flat=True).get(
            id=self.account_id
        )
        self.key_material = dict(
            Tracker.objects.filter(id__in=[t.id for t in self.trackers]).values_list(
                "id", "key_material"
            )
        )

    def plan_request(self, now: dt.datetime) -> list[tuple[ClaimedTracker, str]]:
        """Work out the lookup ids of the request: one per static tracker, the keys of the
        indices since the last fetch for an accessory. Returns the trackers that cannot be
        asked for (unusable key material), with the reason; they are left out."""
        unusable = []
        for tracker in self.trackers:
            if tracker.kind != TrackerKind.ACCESSORY:
                self.devices.append(([tracker.hashed_id], []))
                self.lookup[tracker.hashed_id] = (tracker.id, None, None)
                continue
            try:
                accessory = rolling.load(self.key_material.get(tracker.id) or {})
            except ValueError as exc:
                unusable.append((tracker, str(exc)))
                continue
            self.accessories[tracker.id] = accessory
            plan = rolling.plan_keys(accessory, tracker.last_processed_at, now, tracker.keys)
            self.devices.append((plan.primary, plan.secondary))
            for hashed_id, (key, index) in plan.keys.items():
                primary = key.key_type == KeyPairType.PRIMARY
                self.lookup[hashed_id] = (tracker.id, key, index if primary else None)
        return unusable


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


# --- claiming ---------------------------------------------------------------------------
def fetchable_trackers() -> TrackerQuerySet:
    """Trackers the workers fetch now: eligible and due (leased or not)."""
    return Tracker.objects.eligible().due()


def claimable_trackers() -> TrackerQuerySet:
    """Trackers a claim may take now: fetchable and not leased."""
    return fetchable_trackers().unleased()


Row = tuple[int, int, str, str, "dt.datetime | None"]  # id, failures, hashed id, kind, processed


def _pick(rows: list[Row], max_keys: int, now: dt.datetime) -> list[ClaimedTracker]:
    """Choose the batch from the most starved candidates, within the request's key budget.

    A static tracker needs one key; an accessory the keys of every 15 minutes since its last
    fetch (rolling.estimated_keys). A tracker that failed k times in a row is retried in a
    batch of max_keys >> k keys (halving each time) with others that failed as often, so a
    poison tracker ends up alone, is quarantined, and never holds back healthy trackers for
    long.
    """
    failures = rows[0][1]
    budget = max(1, max_keys >> failures)
    picked: list[ClaimedTracker] = []
    for tracker_id, row_failures, hashed_id, kind, processed in rows:
        if row_failures != failures:
            continue
        keys = 1
        if kind == TrackerKind.ACCESSORY:
            keys = rolling.estimated_keys(processed, now, max_keys)
        if picked and keys > budget:
            break  # oldest first: the next request takes it
        keys = min(keys, budget)
        picked.append(ClaimedTracker(tracker_id, hashed_id, failures, kind, processed, keys))
        budget -= keys
        if budget <= 0:
            break
    return picked


def claim_work(
    worker: str,
    max_keys: int | None = None,
    tracker_ids: list[int] | None = None,
    exclude_ids: set[int] | None = None,
    not_since: dt.datetime | None = None,
) -> Claim | None:
    """Lease an account that may send now and the most starved due trackers, or None.

    `tracker_ids` restricts the claim to those trackers (the fetch-now endpoint);
    a pass leaves out what it already did: trackers processed since `not_since`, and the
    (few) `exclude_ids` it tried without success.
    """
    max_keys = max_keys or settings.MAX_KEYS_PER_BATCH
    lease = seconds(settings.PROCESSING_TIMEOUT)
    with transaction.atomic():
        account = (
            AppleAccount.objects.ready()
            .select_for_update(skip_locked=True)
            .order_by(F("last_request_at").asc(nulls_first=True), "id")
            .only("id", "name", "fetch_endpoint")
            .first()
        )
        if account is None:
            return None
        candidates = claimable_trackers()
        if tracker_ids is not None:
            candidates = candidates.filter(id__in=tracker_ids)
        if exclude_ids:
            candidates = candidates.exclude(id__in=exclude_ids)
        if not_since is not None:
            candidates = candidates.not_processed_since(not_since)
        rows = list(
            candidates.oldest_first()
            .select_for_update(skip_locked=True, of=("self",))
            .values_list(
                "id", "consecutive_failures", "hashed_adv_key", "kind", "last_processed_at"
            )[:max_keys]
        )
        if not rows:
            return None
        picked = _pick(rows, max_keys, timezone.now())  # most starved first
        ids = [t.id for t in picked]
        token, request_token = uuid.uuid4(), uuid.uuid4()
        Tracker.objects.filter(id__in=ids).update(
            claimed_by=worker, claim_token=token, lease_until=Now() + lease
        )
        AppleAccount.objects.filter(id=account.id).update(
            request_holder=worker,
            request_token=request_token,
            request_lease_until=Now() + lease,
        )
    return Claim(
        worker=worker,
        token=token,
        request_token=request_token,
        account_id=account.id,
        account_name=account.name,
        fetch_endpoint=account.fetch_endpoint,
        trackers=picked,
    )


# --- fetching ---------------------------------------------------------------------------
class Stopped(Exception):
    """The worker was asked to stop while a request was in flight."""


# On shutdown, a request in flight gets this long to finish (findmy's own HTTP timeout is
# 5 s), so that what Apple already handed out is stored rather than fetched again later.
SHUTDOWN_GRACE_SECONDS = 6.0


async def _request(
    claim: Claim, stop: threading.Event | None
) -> tuple[list[tuple[str, bytes]], dict[str, Any]]:
    async with ReportSource(claim.account_state, claim.fetch_endpoint) as source:
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


def _mark_request(claim: Claim, *, count: bool) -> None:
    changes: dict[str, Any] = {"last_request_at": Now()}
    if count:
        changes["requests_total"] = F("requests_total") + 1
    AppleAccount.objects.filter(id=claim.account_id, request_token=claim.request_token).update(
        **changes
    )


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
        _mark_request(claim, count=True)
        try:
            return asyncio.run(_request(claim, stop))
        finally:
            _mark_request(claim, count=False)

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


def decrypt_all(
    claim: Claim, raw: list[tuple[str, bytes]]
) -> tuple[list[tuple[int, DecryptedReport]], int]:
    """Decrypt every payload; one that fails is recorded (payload kept), never a crash.

    An accessory's alignment moves to the newest primary-key index seen in a report.
    """
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
            out.append((tracker_id, report))
            if index is not None:
                claim.accessories[tracker_id].update_alignment(report.timestamp, index)
                claim.aligned.add(tracker_id)
        except PayloadError as exc:
            failures += 1
            record_failure(
                exc.category,
                str(exc),
                fingerprint="payload:" + hashlib.sha256(payload).hexdigest(),
                account_id=claim.account_id,
                tracker_id=tracker_id,
                detail={"hashed_id": hashed_id, "payload_b64": base64.b64encode(payload).decode()},
            )
    return out, failures


def _keypair(material: dict[str, Any] | None) -> KeyPair:
    try:
        return KeyPair.from_json(material)  # type: ignore[arg-type]
    except (KeyError, ValueError, TypeError, AssertionError) as exc:
        raise PayloadError("invalid_key", f"unusable key material: {exc!r}") from None


# --- finishing --------------------------------------------------------------------------
def finish(claim: Claim, new_state: dict[str, Any]) -> int:
    """Mark the batch processed, if the lease is still ours; free the account.

    Accessories that had reports get their key material saved again, alignment included
    (findmy's advice: after every fetch), in the same transaction as the rest of the finish.
    """
    with transaction.atomic():
        for tracker_id in sorted(claim.aligned):
            Tracker.objects.filter(id=tracker_id, claim_token=claim.token).update(
                key_material=claim.accessories[tracker_id].to_json()
            )
        return _finish(claim, new_state)


def _finish(claim: Claim, new_state: dict[str, Any]) -> int:
    finished = Tracker.objects.filter(
        id__in=[t.id for t in claim.trackers], claim_token=claim.token
    ).update(
        last_processed_at=Now(),
        claimed_by="",
        claim_token=None,
        lease_until=None,
        consecutive_failures=0,
    )
    AppleAccount.objects.filter(id=claim.account_id, request_token=claim.request_token).update(
        state=new_state,
        request_holder="",
        request_token=None,
        request_lease_until=None,
        consecutive_failures=0,
        backoff_until=None,
        last_error="",
        # An operator may have disabled the account meanwhile: only a breaker closes here.
        status=Case(
            When(status=AccountStatus.BACKING_OFF, then=Value(AccountStatus.ACTIVE)),
            default=F("status"),
        ),
    )
    if finished < len(claim.trackers):
        log.warning(
            "lease lost before finish",
            extra={"worker": claim.worker, "lost": len(claim.trackers) - finished},
        )
    return finished


def release(claim: Claim) -> None:
    """Give the batch back untouched (shutdown): the next claim takes it again at once."""
    Tracker.objects.filter(id__in=[t.id for t in claim.trackers], claim_token=claim.token).update(
        claimed_by="", claim_token=None, lease_until=None
    )
    AppleAccount.objects.filter(id=claim.account_id, request_token=claim.request_token).update(
        request_holder="", request_token=None, request_lease_until=None
    )


def fail(claim: Claim, error: FetchError) -> None:
    """Release the batch after a failed request; move the account's breaker; count suspects."""
    with transaction.atomic():
        account = (
            AppleAccount.objects.select_for_update()
            .filter(id=claim.account_id, request_token=claim.request_token)
            .first()
        )
        if account is not None:
            _trip(account, error)
    record_failure(
        error.category,
        error.message,
        fingerprint=f"account:{claim.account_id}",
        account_id=claim.account_id,
        detail={"trackers": len(claim.trackers), "worker": claim.worker},
    )
    _release_after_failure(claim, error)


def _trip(account: AppleAccount, error: FetchError) -> None:
    """The shared circuit breaker: every worker sees the account row."""
    failures = account.consecutive_failures + 1
    threshold = settings.BREAKER_FAILURE_THRESHOLD
    changes: dict[str, Any] = {
        "consecutive_failures": failures,
        "last_error": error.message[:2000],
        "request_holder": "",
        "request_token": None,
        "request_lease_until": None,
    }
    usable = account.status in USABLE_STATUSES
    if error.category == FailureCategory.AUTH:
        changes["status"] = AccountStatus.NEEDS_LOGIN
    elif usable and (failures >= threshold or error.category == FailureCategory.RATE_LIMITED):
        # Rate limiting opens the circuit at once; other faults after `threshold` in a row.
        # The cool-down doubles for every further failure (half-open probes included).
        cooldown = settings.BREAKER_COOLDOWN * 2 ** min(max(failures - threshold, 0), 10)
        changes["status"] = AccountStatus.BACKING_OFF
        changes["backoff_until"] = Now() + seconds(min(cooldown, MAX_BACKOFF_SECONDS))
    AppleAccount.objects.filter(id=account.id).update(**changes)


def _release_after_failure(claim: Claim, error: FetchError) -> None:
    ids = [t.id for t in claim.trackers]
    mine = Tracker.objects.filter(id__in=ids, claim_token=claim.token)
    if error.category != FailureCategory.UPSTREAM:
        # Account- or network-wide faults say nothing about these trackers.
        mine.update(claimed_by="", claim_token=None, lease_until=None)
        return
    # An upstream error may be caused by one tracker in the batch: count it against all of
    # them; the halving batches of _pick() isolate the culprit, which is quarantined once it
    # has failed QUARANTINE_AFTER times, the last time alone.
    if len(ids) == 1 and claim.trackers[0].consecutive_failures + 1 >= settings.QUARANTINE_AFTER:
        if mine.update(
            quarantined_at=Now(),
            consecutive_failures=F("consecutive_failures") + 1,
            claimed_by="",
            claim_token=None,
            lease_until=None,
        ):
            record_failure(
                error.category,
                f"quarantined after {settings.QUARANTINE_AFTER} failed fetches: {error.message}",
                fingerprint=f"tracker:{ids[0]}",
                tracker_id=ids[0],
                account_id=claim.account_id,
            )
        return
    mine.update(
        consecutive_failures=F("consecutive_failures") + 1,
        claimed_by="",
        claim_token=None,
        lease_until=None,
    )


def initialize_queue() -> dict[str, int]:
    """Clear expired leases and make every eligible tracker due at once."""
    with transaction.atomic():
        released = Tracker.objects.filter(lease_until__lt=Now()).update(
            claimed_by="", claim_token=None, lease_until=None
        )
        made_due = (
            Tracker.objects.eligible()
            .filter(last_processed_at__isnull=False)
            .update(last_processed_at=None)
        )
    return {"released": released, "made_due": made_due}


# --- one batch, and a pass over the fleet ------------------------------------------------
def process_claim(claim: Claim, stop: threading.Event | None = None) -> BatchResult:
    """Fetch, decrypt, store and finish one claim. Never raises for a fetch failure."""
    started = timezone.now()
    result = BatchResult(trackers=len(claim.trackers))
    claim.load_secrets()
    for tracker, reason in claim.plan_request(database_now()):
        _quarantine_unusable(claim, tracker, reason)
        result.failures += 1
    if not claim.devices:  # nothing left that can be asked for: no request is sent
        release(claim)
        result.outcome = FailureCategory.INVALID_KEY
        return result
    try:
        raw, state, result.requests = fetch_with_retries(claim, stop)
    except Stopped:
        release(claim)
        result.outcome = "released"
        return result
    except FetchError as exc:
        result.requests = max(1, result.requests)
        result.failures = 1
        result.outcome, result.error = exc.category, exc.message
        fail(claim, exc)
        _log_attempt(claim, started, result)
        return result
    decrypted, failures = decrypt_all(claim, raw)
    result.failures += failures
    stored = ingest(decrypted, fetched_at=timezone.now())
    result.new, result.duplicates = stored.new, stored.duplicates
    result.finished = finish(claim, state)
    _log_attempt(claim, started, result)
    return result


def _quarantine_unusable(claim: Claim, tracker: ClaimedTracker, reason: str) -> None:
    """Key material that findmy cannot read will not get better by itself: park the tracker
    at once (an operator re-imports its keys and lifts the quarantine)."""
    claim.trackers.remove(tracker)
    Tracker.objects.filter(id=tracker.id, claim_token=claim.token).update(
        quarantined_at=Now(), claimed_by="", claim_token=None, lease_until=None
    )
    record_failure(
        FailureCategory.INVALID_KEY,
        reason,
        fingerprint=f"tracker:{tracker.id}",
        tracker_id=tracker.id,
        account_id=claim.account_id,
    )


def _log_attempt(claim: Claim, started: dt.datetime, result: BatchResult) -> None:
    log_attempt(
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


@dataclass
class PassSummary(BatchResult):
    batches: int = 0
    by_outcome: dict[str, int] = field(default_factory=dict)

    def line(self) -> str:
        return (
            f"trackers={self.trackers} requests={self.requests} new_reports={self.new} "
            f"duplicate_reports={self.duplicates} failures={self.failures}"
        )


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
    the few that failed by id; they wait for the next pass.
    """
    summary = PassSummary()
    started = database_now()
    failed: set[int] = set()
    waiting_said = False
    while not (stop and stop.is_set()) and (deadline is None or time.monotonic() < deadline):
        claim = claim_work(worker, exclude_ids=failed, not_since=started)
        if claim is None:
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
            if stop is not None:
                if stop.wait(min(wait, 1.0)):
                    break
            else:
                time.sleep(min(wait, 1.0))
            continue
        waiting_said = False
        result = process_claim(claim, stop)
        if result.outcome != "ok":
            failed.update(t.id for t in claim.trackers)
        summary.add(result)
        summary.batches += 1
        summary.by_outcome[result.outcome] = summary.by_outcome.get(result.outcome, 0) + 1
        if on_batch:
            on_batch(result)
    return summary


def database_now() -> dt.datetime:
    with connection.cursor() as cursor:
        cursor.execute("SELECT now()")
        return cursor.fetchone()[0]


def seconds_until_work(
    exclude_ids: set[int] | None = None, not_since: dt.datetime | None = None
) -> float | None:
    """How long until a claim can succeed, or None when waiting would not help.

    Due trackers remain but no account may send right now (its minimum interval, another
    worker's request, an open circuit): wait for the soonest account, up to 15 minutes.
    Due trackers remain but another worker holds them: wait until it finishes them, or
    until its lease expires if it died, so that a pass really covers every due tracker.
    """
    remaining = claimable_trackers().exclude(id__in=exclude_ids or ())
    held = fetchable_trackers().leased().exclude(id__in=exclude_ids or ())
    if not_since is not None:
        remaining = remaining.not_processed_since(not_since)
        held = held.not_processed_since(not_since)
    if not remaining.exists():
        lease_end = held.aggregate(soonest=Min("lease_until"))["soonest"]
        if lease_end is None:
            return None
        return max((lease_end - timezone.now()).total_seconds(), 0.5)
    times = [a.next_request_at() for a in AppleAccount.objects.usable()]
    soonest = min((t for t in times if t is not None), default=None)
    if soonest is None:
        return None
    wait = (soonest - timezone.now()).total_seconds()
    return None if wait > 900 else max(wait, 0.1)
