"""The fetch queue: the tracker table, claimed in leases (see leases.py).

A claim is one short transaction that locks an Apple account that may send now and up to 64
keys' worth of due trackers, most starved first (`SELECT ... FOR UPDATE SKIP LOCKED`), and
leases both: the account for one request, the trackers for the batch. Everything after it is
conditional on the claim's tokens. `release()` gives a batch back untouched.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, transaction
from django.db.models import F, Min
from django.utils import timezone
from findmy import FindMyAccessory, KeyPair
from findmy.keys import KeyPairType

from . import rolling
from .fields import decrypt_text
from .leases import ACCOUNT_LEASE, TRACKER_LEASE
from .models import AppleAccount, Tracker, TrackerKind, TrackerQuerySet


@dataclass
class ClaimedTracker:
    id: int
    hashed_id: str
    consecutive_failures: int
    kind: str = TrackerKind.STATIC
    last_processed_at: dt.datetime | None = None
    keys: int = 1  # the share of the request's key budget this tracker may use
    window_top: dt.datetime | None = None  # an accessory's catch-up under way (models.py)
    window_next_index: int | None = None


@dataclass
class AccessoryWindow:
    """How far one request gets through an accessory's window of indices."""

    complete: bool
    oldest_index: int | None


@dataclass
class Claim:
    """What a worker holds: one account's next request, and the trackers to ask it for."""

    worker: str
    token: uuid.UUID  # the trackers' lease
    request_token: uuid.UUID  # the account's lease
    account_id: int
    account_name: str
    fetch_endpoint: str
    anisette_url: str
    trackers: list[ClaimedTracker]
    # The secrets are decrypted after the claim's transaction, by load_secrets(): keeping
    # Fernet work out of the claim keeps the row locks short.
    account_state: dict[str, Any] = field(default_factory=dict)
    key_material: dict[int, dict[str, Any]] = field(default_factory=dict)
    # Filled by plan_request(): what is sent, and how to map answers back to trackers.
    planned_at: dt.datetime | None = None
    devices: list[tuple[list[str], list[str]]] = field(default_factory=list)
    lookup: dict[str, tuple[int, KeyPair | None, int | None]] = field(default_factory=dict)
    accessories: dict[int, FindMyAccessory] = field(default_factory=dict)
    windows: dict[int, AccessoryWindow] = field(default_factory=dict)
    aligned: set[int] = field(default_factory=set)  # accessories that had reports: save them

    @property
    def tracker_ids(self) -> list[int]:
        return [t.id for t in self.trackers]

    def load_secrets(self) -> list[tuple[ClaimedTracker, str]]:
        """Decrypt the account state and every tracker's key material. Returns the trackers
        whose material no key in FIELD_ENCRYPTION_KEY decrypts (an incomplete key rotation),
        with the reason: they cannot be asked for, and must not take the batch down."""
        self.account_state = AppleAccount.objects.values_list("state", flat=True).get(
            id=self.account_id
        )
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT id, key_material FROM trackers_tracker WHERE id = ANY(%s)",
                [self.tracker_ids],
            )
            ciphertexts = dict(cursor.fetchall())
        unusable = []
        for tracker in self.trackers:
            try:
                self.key_material[tracker.id] = json.loads(decrypt_text(ciphertexts[tracker.id]))
            except (ImproperlyConfigured, KeyError, ValueError) as exc:
                unusable.append((tracker, f"key material unreadable: {exc}"))
        return unusable

    def plan_request(self, now: dt.datetime) -> list[tuple[ClaimedTracker, str]]:
        """Work out the lookup ids of the request: one per static tracker; for an accessory
        the keys of its window, newest first, as many as its share of the budget holds.
        Returns the trackers that cannot be asked for (unusable key material), with the
        reason; they are left out."""
        self.planned_at = now
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
            plan = rolling.plan_keys(
                accessory,
                tracker.last_processed_at,
                now,
                tracker.keys,
                newest_index=tracker.window_next_index,
            )
            self.windows[tracker.id] = AccessoryWindow(plan.complete, plan.oldest_index)
            if len(plan):
                self.devices.append((plan.primary, plan.secondary))
            for hashed_id, (key, index) in plan.keys.items():
                primary = key.key_type == KeyPairType.PRIMARY
                self.lookup[hashed_id] = (tracker.id, key, index if primary else None)
        return unusable


def fetchable_trackers() -> TrackerQuerySet:
    """Trackers the workers fetch now: eligible and due (leased or not)."""
    return Tracker.objects.eligible().due()


def claimable_trackers() -> TrackerQuerySet:
    """Trackers a claim may take now: fetchable and not leased."""
    return fetchable_trackers().unleased()


# id, failures, hashed id, kind, processed, window top, window next index
Row = tuple[int, int, str, str, "dt.datetime | None", "dt.datetime | None", "int | None"]


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
    for tracker_id, row_failures, hashed_id, kind, processed, top, next_index in rows:
        if row_failures != failures:
            continue
        keys = 1
        if kind == TrackerKind.ACCESSORY:
            keys = rolling.estimated_keys(processed, now, max_keys, next_index is not None)
        if picked and keys > budget:
            break  # oldest first: the next request takes it
        keys = min(keys, budget)
        picked.append(
            ClaimedTracker(tracker_id, hashed_id, failures, kind, processed, keys, top, next_index)
        )
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
    due_only: bool = True,
) -> Claim | None:
    """Lease an account that may send now and the most starved due trackers, or None.

    `tracker_ids` restricts the claim to those trackers (with `due_only=False`, whether due
    or not: the fetch-now endpoint, which changes nothing unless the claim succeeds); a
    pass leaves out what it already did: trackers processed since `not_since`, and the
    (few) `exclude_ids` it tried without success.
    """
    max_keys = max_keys or settings.MAX_KEYS_PER_BATCH
    with transaction.atomic():
        account = (
            AppleAccount.objects.ready()
            .select_for_update(skip_locked=True)
            .order_by(F("last_request_at").asc(nulls_first=True), "id")
            .only("id", "name", "fetch_endpoint", "anisette_url")
            .first()
        )
        if account is None:
            return None
        candidates = claimable_trackers() if due_only else Tracker.objects.eligible().unleased()
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
                "id",
                "consecutive_failures",
                "hashed_adv_key",
                "kind",
                "last_processed_at",
                "window_top",
                "window_next_index",
            )[:max_keys]
        )
        if not rows:
            return None
        picked = _pick(rows, max_keys, timezone.now())  # most starved first
        token, request_token = uuid.uuid4(), uuid.uuid4()
        lease = settings.PROCESSING_TIMEOUT
        Tracker.objects.filter(id__in=[t.id for t in picked]).update(
            **TRACKER_LEASE.take(worker, token, lease)
        )
        AppleAccount.objects.filter(id=account.id).update(
            **ACCOUNT_LEASE.take(worker, request_token, lease)
        )
    return Claim(
        worker=worker,
        token=token,
        request_token=request_token,
        account_id=account.id,
        account_name=account.name,
        fetch_endpoint=account.fetch_endpoint,
        anisette_url=account.anisette_url,
        trackers=picked,
    )


def release(claim: Claim) -> None:
    """Give the batch back untouched: the next claim takes it again at once."""
    TRACKER_LEASE.release(Tracker.objects.filter(id__in=claim.tracker_ids), claim.token)
    release_account(claim)


def release_account(claim: Claim, **changes: Any) -> int:
    """End the claim's request lease on its account, with `changes` in the same UPDATE."""
    return ACCOUNT_LEASE.release(
        AppleAccount.objects.filter(id=claim.account_id), claim.request_token, **changes
    )


def initialize_queue() -> dict[str, int]:
    """Clear expired leases and make every eligible tracker due at once.

    Due, not forgotten: no accessory's window shrinks (TrackerQuerySet.make_due).
    """
    with transaction.atomic():
        released = TRACKER_LEASE.release_expired(Tracker.objects.all())
        made_due = Tracker.objects.eligible().make_due()
    return {"released": released, "made_due": made_due}


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
