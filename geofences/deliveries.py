"""Sending alert deliveries: the sender queue, its outcomes, and what the admin calls.

The processor writes one pending delivery per (event, rule, channel) in its own transaction
(alerts.py). A sender claims due ones the database way: a short transaction with
`SELECT ... FOR UPDATE SKIP LOCKED` that leases them (claimed_by, claim_token, lease_until),
then, outside any transaction, renews the lease of one delivery, sends it (channels.py) and
records the outcome with an UPDATE conditional on its token, so a sender whose lease ran out
changes nothing:

- sent: `delivered`, delivered_at, attempts + 1;
- a fault another attempt may cure: attempts + 1, last_error, next_attempt_at = now + a
  backoff with full jitter (uniform over 0 .. min(ALERT_RETRY_MAX_SECONDS,
  ALERT_RETRY_BASE_SECONDS * 2^(attempts - 1)))), or `failed` once attempts reach
  ALERT_MAX_ATTEMPTS;
- a permanent fault: `failed` at once.

A failed delivery also counts in a failure record (category `delivery`, one per rule and
channel). Each delivery is sent once by one sender at a time; a sender killed mid-send, or
stopped while a request hangs, leaves a delivery that is sent again later, with the same
Idempotency-Key (webhooks), id (Redis) and Message-ID (email), so receivers can drop the
repeat: at-least-once on the wire, exactly-once for receivers that honour the key.
"""

from __future__ import annotations

import logging
import random
import secrets
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import Count, DurationField, ExpressionWrapper, F, Min, Q
from django.db.models.functions import Now
from django.utils import timezone

from trackers.findmy_client import FailureCategory
from trackers.leases import LeaseColumns
from trackers.loop import run_loop
from trackers.models import seconds
from trackers.signals import report_failure
from trackers.worker import worker_name

from .channels import SendError, send_email, send_redis, send_webhook
from .models import AlertDelivery, AlertRule, Channel, DeliveryStatus

log = logging.getLogger(__name__)

DELIVERY_LEASE = LeaseColumns("claimed_by", "claim_token", "lease_until")
# On SIGTERM, a send in flight gets this long before it is abandoned (and retried later).
SHUTDOWN_GRACE_SECONDS = 0.25


# --- webhook secrets (the admin calls these) ------------------------------------------------
def new_webhook_secret() -> str:
    return secrets.token_urlsafe(32)


def ensure_webhook_secret(rule: AlertRule) -> str:
    """The rule's webhook secret, generated (and stored) if it has none yet."""
    if rule.webhook_secret:
        return rule.webhook_secret
    if rule.pk is None:
        rule.webhook_secret = new_webhook_secret()
        return rule.webhook_secret
    with transaction.atomic():
        # Locked: two callers at once end with one secret, not two different answers.
        stored = (
            AlertRule.objects.select_for_update()
            .values_list("webhook_secret", flat=True)
            .get(pk=rule.pk)
        )
        if not stored:
            stored = new_webhook_secret()
            AlertRule.objects.filter(pk=rule.pk).update(webhook_secret=stored)
    rule.webhook_secret = stored
    return stored


def rotate_webhook_secret(rule: AlertRule) -> str:
    """A new webhook secret for the rule (stored); the old one stops verifying at once."""
    rule.webhook_secret = new_webhook_secret()
    if rule.pk is not None:
        AlertRule.objects.filter(pk=rule.pk).update(webhook_secret=rule.webhook_secret)
    return rule.webhook_secret


# --- the admin's view ---------------------------------------------------------------------
def retry(delivery_ids: Iterable[int]) -> int:
    """Failed or pending deliveries back to pending, due now (attempts kept: a failed one
    that reached ALERT_MAX_ATTEMPTS gets one more attempt). Returns how many."""
    return AlertDelivery.objects.filter(
        pk__in=list(delivery_ids), status__in=[DeliveryStatus.FAILED, DeliveryStatus.PENDING]
    ).update(status=DeliveryStatus.PENDING, next_attempt_at=Now())


def stats() -> dict[str, int]:
    """Deliveries by status, and the age of the oldest pending one (0 when none)."""
    by_status = {status: Count("pk", filter=Q(status=status)) for status in DeliveryStatus.values}
    oldest = Min("created_at", filter=Q(status=DeliveryStatus.PENDING))
    figures = AlertDelivery.objects.aggregate(
        **by_status,
        oldest_pending_age=ExpressionWrapper(Now() - oldest, output_field=DurationField()),
    )
    age = figures.pop("oldest_pending_age")
    figures["oldest_pending_age_seconds"] = max(0, int(age.total_seconds())) if age else 0
    return figures


# --- the queue ------------------------------------------------------------------------------
@dataclass
class DeliveryClaim:
    worker: str
    token: uuid.UUID
    ids: list[int]


def lease_seconds() -> int:
    """How long a claim, and each renewal before a send, holds a delivery: a send is
    abandoned after send_budget(), well inside it."""
    return max(settings.PROCESSING_TIMEOUT, 3 * int(send_budget()))


def send_budget() -> float:
    # Name resolution and the request (urllib3's total timeout), or an SMTP conversation.
    return max(settings.ALERT_WEBHOOK_TIMEOUT, settings.EMAIL_TIMEOUT) + 5.0


def claim(
    worker: str, limit: int | None = None, exclude: Iterable[int] = ()
) -> DeliveryClaim | None:
    """Lease up to `limit` (ALERT_BATCH_SIZE) due pending deliveries, oldest due first."""
    with transaction.atomic():
        ids = list(
            AlertDelivery.objects.filter(status=DeliveryStatus.PENDING)
            .filter(Q(next_attempt_at__lte=Now()) | Q(next_attempt_at__isnull=True))
            .filter(DELIVERY_LEASE.unleased())
            .exclude(pk__in=list(exclude))
            .order_by("next_attempt_at", "pk")
            .select_for_update(skip_locked=True)
            .values_list("pk", flat=True)[: limit or settings.ALERT_BATCH_SIZE]
        )
        if not ids:
            return None
        token = uuid.uuid4()
        AlertDelivery.objects.filter(pk__in=ids).update(
            **DELIVERY_LEASE.take(worker, token, lease_seconds())
        )
    return DeliveryClaim(worker, token, ids)


def release(ids: list[int], token: uuid.UUID) -> int:
    """Give back deliveries not sent (shutdown): due again at once, attempts unchanged."""
    return DELIVERY_LEASE.release(AlertDelivery.objects.filter(pk__in=ids), token)


def renew(delivery_id: int, token: uuid.UUID) -> bool:
    """Just before a send: a full lease again, and proof that the delivery is still ours."""
    mine = DELIVERY_LEASE.mine(
        AlertDelivery.objects.filter(pk=delivery_id, status=DeliveryStatus.PENDING), token
    )
    return mine.update(lease_until=Now() + seconds(lease_seconds())) == 1


def claimed(claim_: DeliveryClaim) -> list[AlertDelivery]:
    """The claim's deliveries with what their payloads need (no tracker key material)."""
    return list(
        DELIVERY_LEASE.mine(AlertDelivery.objects.filter(pk__in=claim_.ids), claim_.token)
        .select_related("rule", "event__tracker", "event__geofence", "event__report__address")
        .only(
            "channel",
            "attempts",
            "next_attempt_at",
            "event",
            "rule",
            "event__tracker",
            "event__geofence",
            "event__report",
            "event__report__address",
            "event__kind",
            "event__occurred_at",
            "event__tracker__name",
            "event__geofence__name",
            "event__report__timestamp",
            "event__report__point",
            "event__report__horizontal_accuracy",
            "event__report__address__label",
            "rule__name",
            "rule__owner_id",
            "rule__is_active",
            "rule__channels",
            "rule__webhook_url",
            "rule__webhook_secret",
            "rule__email_to",
        )
        .order_by("next_attempt_at", "pk")
    )


# --- one delivery -------------------------------------------------------------------------
def payload(delivery: AlertDelivery) -> dict[str, Any]:
    """What every channel sends: the webhook body, the Redis message, the email's facts."""
    event, report = delivery.event, delivery.event.report
    return {
        "id": delivery.pk,
        "event": {
            "id": event.pk,
            "kind": event.kind,
            "tracker": {"id": event.tracker_id, "name": event.tracker.name},
            "geofence": (
                {"id": event.geofence_id, "name": event.geofence.name}
                if event.geofence_id
                else None
            ),
            "occurred_at": event.occurred_at.isoformat(),
            "report": (
                {
                    "latitude": report.latitude,
                    "longitude": report.longitude,
                    "accuracy": report.horizontal_accuracy,
                    "timestamp": report.timestamp.isoformat(),
                }
                if report
                else None
            ),
            "address": report.address.label if report and report.address else None,
        },
        "rule": {"id": delivery.rule_id, "name": delivery.rule.name},
    }


def cancelled(delivery: AlertDelivery) -> str | None:
    """Why a pending delivery should no longer go out (its owner changed the rule)."""
    if not delivery.rule.is_active:
        return "not sent: the rule was deactivated"
    if delivery.channel not in delivery.rule.channels:
        return f"not sent: the rule no longer has the {delivery.channel} channel"
    return None


def send(delivery: AlertDelivery, body: dict[str, Any], secret: str | None) -> None:
    """Send through the delivery's channel; SendError when it did not go out."""
    rule = delivery.rule
    if delivery.channel == Channel.WEBHOOK:
        if not rule.webhook_url:
            raise SendError("the rule has no webhook URL", permanent=True)
        send_webhook(delivery.pk, body, rule.webhook_url, secret or "")
    elif delivery.channel == Channel.EMAIL:
        send_email(delivery.pk, body, rule.email_to)
    elif delivery.channel == Channel.REDIS:
        send_redis(body, rule.owner_id)
    else:
        raise SendError(f"unknown channel {delivery.channel!r}", permanent=True)


def send_bounded(delivery: AlertDelivery, stop: threading.Event | None = None) -> SendError | None:
    """Send in a thread this one can walk away from: after send_budget(), or shortly after
    a stop request, the send counts as a transient fault (the thread finishes on its own;
    it touches no database). None when sent."""
    try:
        body = payload(delivery)
        webhook = delivery.channel == Channel.WEBHOOK
        secret = ensure_webhook_secret(delivery.rule) if webhook else None
    except DatabaseError:
        raise
    except Exception as exc:  # a bug: kept as the error, retried, failed
        log.exception("unexpected error preparing delivery %s", delivery.pk)
        return SendError(f"unexpected {type(exc).__name__}: {exc}", permanent=False)
    outcome: list[SendError | None] = []
    done = threading.Event()

    def target() -> None:
        try:
            send(delivery, body, secret)
            outcome.append(None)
        except SendError as exc:
            outcome.append(exc)
        except Exception as exc:  # a bug: kept as the error, retried, failed
            log.exception("unexpected error sending delivery %s", delivery.pk)
            outcome.append(SendError(f"unexpected {type(exc).__name__}: {exc}", permanent=False))
        finally:
            done.set()

    threading.Thread(target=target, name=f"send-{delivery.pk}", daemon=True).start()
    budget = send_budget()
    deadline = time.monotonic() + budget
    stopping_since: float | None = None
    while not done.wait(0.05):
        now = time.monotonic()
        if stop is not None and stop.is_set():
            stopping_since = stopping_since or now
            if now - stopping_since >= SHUTDOWN_GRACE_SECONDS:
                return SendError("interrupted by shutdown; sent again later", permanent=False)
        if now > deadline:
            return SendError(f"no outcome within {budget:.0f} s", permanent=False)
    return outcome[0]


def backoff_seconds(attempts: int) -> float:
    """Full jitter: uniform over 0 .. min(cap, base * 2^(attempts - 1))."""
    base = settings.ALERT_RETRY_BASE_SECONDS
    ceiling = min(settings.ALERT_RETRY_MAX_SECONDS, base * 2 ** max(attempts - 1, 0))
    return random.uniform(0, ceiling)  # noqa: S311 - jitter, not a secret


def record(
    delivery: AlertDelivery, token: uuid.UUID, error: SendError | None, *, report: bool = True
) -> str:
    """Write the outcome if the lease is still ours: delivered, retried, failed, or lost."""
    attempts = delivery.attempts + 1
    if error is None:
        outcome = "delivered"
        changes: dict[str, Any] = {
            "status": DeliveryStatus.DELIVERED,
            "delivered_at": Now(),
            "next_attempt_at": None,
        }
    elif error.permanent or attempts >= settings.ALERT_MAX_ATTEMPTS:
        outcome = "failed"
        changes = {"status": DeliveryStatus.FAILED, "next_attempt_at": None}
    else:
        outcome = "retried"
        changes = {"next_attempt_at": Now() + seconds(backoff_seconds(attempts))}
    if error is not None:
        changes["last_error"] = str(error)
    mine = AlertDelivery.objects.filter(pk=delivery.pk)
    with transaction.atomic():
        if not DELIVERY_LEASE.release(mine, token, attempts=F("attempts") + 1, **changes):
            return "lost"
        if outcome == "failed" and report:
            report_failure(
                FailureCategory.DELIVERY,
                f"{delivery.channel} delivery {delivery.pk} of rule {delivery.rule.name!r} "
                f"failed after {attempts} attempt(s): {error}",
                # One record per rule and channel (a broken endpoint fails them all),
                # counting its failed deliveries; the last one's ids in `detail`.
                fingerprint=f"rule:{delivery.rule_id}:{delivery.channel}",
                detail={
                    "delivery_id": delivery.pk,
                    "event_id": delivery.event_id,
                    "tracker_id": delivery.event.tracker_id,
                    "rule_id": delivery.rule_id,
                    "channel": delivery.channel,
                    "attempts": attempts,
                },
            )
    if error is not None:
        log.warning(
            "delivery %s (%s) %s: %s",
            delivery.pk,
            delivery.channel,
            outcome,
            error,
            extra={"delivery": delivery.pk, "attempts": attempts},
        )
    return outcome


# --- passes and the long-running sender ---------------------------------------------------
@dataclass
class SendSummary:
    delivered: int = 0
    retried: int = 0
    failed: int = 0
    released: int = 0
    lost: int = 0
    batches: int = 0

    def count(self, outcome: str, n: int = 1) -> None:
        setattr(self, outcome, getattr(self, outcome) + n)

    def add(self, other: SendSummary) -> None:
        for name in ("delivered", "retried", "failed", "released", "lost", "batches"):
            self.count(name, getattr(other, name))

    @property
    def attempts(self) -> int:
        return self.delivered + self.retried + self.failed

    def line(self) -> str:
        return (
            f"delivered={self.delivered} retried={self.retried} failed={self.failed} "
            f"released={self.released} lost={self.lost} batches={self.batches}"
        )


def send_claim(
    claim_: DeliveryClaim,
    *,
    stop: threading.Event | None = None,
    deadline: float | None = None,
) -> SendSummary:
    """Send a claim's deliveries one by one; on stop or deadline give the rest back."""
    summary = SendSummary(batches=1)
    deliveries = claimed(claim_)
    summary.lost += len(claim_.ids) - len(deliveries)
    for i, delivery in enumerate(deliveries):
        if (stop is not None and stop.is_set()) or (
            deadline is not None and time.monotonic() > deadline
        ):
            summary.released += release([d.pk for d in deliveries[i:]], claim_.token)
            break
        if not renew(delivery.pk, claim_.token):
            summary.lost += 1
            continue
        if reason := cancelled(delivery):
            summary.count(
                record(delivery, claim_.token, SendError(reason, permanent=True), report=False)
            )
            continue
        summary.count(record(delivery, claim_.token, send_bounded(delivery, stop)))
    return summary


def run_pass(
    worker: str, *, stop: threading.Event | None = None, deadline: float | None = None
) -> SendSummary:
    """Send every delivery due now, each at most once in this pass (a retry that comes due
    during the pass waits for the next one), until none is left, or stop/deadline."""
    summary = SendSummary()
    tried: set[int] = set()
    while not (stop is not None and stop.is_set()) and (
        deadline is None or time.monotonic() < deadline
    ):
        claim_ = claim(worker, exclude=tried)
        if claim_ is None:
            break
        tried.update(claim_.ids)
        summary.add(send_claim(claim_, stop=stop, deadline=deadline))
    return summary


class Sender:
    """One long-running alert sender; the signal handlers only set `stop`."""

    service_name = "alert_sender"

    def __init__(self, name: str | None = None) -> None:
        self.name = name or worker_name("sender")
        self.stop = threading.Event()
        self.totals = SendSummary()
        self.last_pass_at: str | None = None

    def figures(self) -> dict[str, Any]:
        return {
            "sender": self.name,
            **stats(),
            "sent": self.totals.delivered,
            "retried": self.totals.retried,
            "gave_up": self.totals.failed,
            "last_pass_at": self.last_pass_at,
        }

    def run_forever(self) -> None:
        def one_pass() -> bool:
            summary = run_pass(self.name, stop=self.stop)
            self.totals.add(summary)
            self.last_pass_at = timezone.now().isoformat()
            return summary.batches > 0

        run_loop(
            name=self.name,
            service_name=self.service_name,
            stop=self.stop,
            one_pass=one_pass,
            idle_seconds=settings.PROCESS_IDLE_SLEEP,
            figures=self.figures,
            key=self,
        )
