"""Apple accounts, production runs and trackers: the fleet, and the work queue that is its table."""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.contrib.gis.db import models
from django.db.models import F, Q
from django.db.models.functions import Coalesce, Now
from django.utils import timezone

from .fields import EncryptedJSONField
from .leases import ACCOUNT_LEASE, TRACKER_LEASE, seconds


class NegativeInfinity(models.Func):
    """PostgreSQL's '-infinity' timestamp, inlined (no parameter), so that an index on an
    expression using it matches the same expression in a query."""

    template = "'-infinity'::timestamptz"
    output_field = models.DateTimeField()

    def __init__(self) -> None:
        super().__init__()


def processed_key() -> Coalesce:
    """last_processed_at with never = -infinity: one range the claim index can serve.

    `last_processed_at IS NULL OR last_processed_at <= cutoff` cannot be an index range, so
    a claim with nothing due would read every row; this ordering key can.
    """
    return Coalesce(F("last_processed_at"), NegativeInfinity())


class AccountStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    BACKING_OFF = "backing_off", "Backing off"  # circuit open until `backoff_until`
    NEEDS_LOGIN = "needs_login", "Needs login"  # auth failed: an operator must log in again
    DISABLED = "disabled", "Disabled"


# Accounts that fetch, now or once their circuit closes.
USABLE_STATUSES = (AccountStatus.ACTIVE, AccountStatus.BACKING_OFF)


class AppleAccountQuerySet(models.QuerySet):
    def usable(self) -> AppleAccountQuerySet:
        return self.filter(status__in=USABLE_STATUSES)

    def ready(self) -> AppleAccountQuerySet:
        """Accounts that may send a request now, by the database clock.

        Active accounts, and backing-off accounts whose circuit has cooled down (half-open:
        the next request decides); nobody else's request in flight (or its lease expired);
        the minimum interval since the previous request has passed.
        """
        interval = settings.ACCOUNT_MIN_REQUEST_INTERVAL
        return self.filter(
            Q(status=AccountStatus.ACTIVE)
            | Q(status=AccountStatus.BACKING_OFF, backoff_until__lte=Now()),
            ACCOUNT_LEASE.unleased(),
            Q(last_request_at__isnull=True) | Q(last_request_at__lte=Now() - seconds(interval)),
        )


class AppleAccount(models.Model):
    """An Apple account whose saved findmy state is used to fetch encrypted reports."""

    name = models.CharField(max_length=100, unique=True)
    # findmy's AsyncAppleAccount.to_json(): tokens and the Apple password. Encrypted at rest.
    state = EncryptedJSONField(editable=False)
    # Not secret: a masked Apple ID (j***@example.com) the admin shows instead of decrypting.
    apple_id_hint = models.CharField(max_length=200, blank=True)
    # The anisette server every request of this account uses (the one source: the copy inside
    # `state` is overridden with it). Set only by add_apple_account; see endpoints.py.
    anisette_url = models.URLField(max_length=500)
    fetch_endpoint = models.URLField(
        max_length=500,
        blank=True,
        help_text="Overrides Apple's fetch endpoint, e.g. to point the account at the local "
        "Find My network simulator. Empty: Apple's own. Set only by add_apple_account.",
    )
    status = models.CharField(
        max_length=20, choices=AccountStatus.choices, default=AccountStatus.ACTIVE
    )
    # One request in flight per account across all workers: a lease like the trackers'.
    request_holder = models.CharField(max_length=200, blank=True)
    request_token = models.UUIDField(null=True, blank=True)
    request_lease_until = models.DateTimeField(null=True, blank=True)
    last_request_at = models.DateTimeField(null=True, blank=True)
    # Circuit breaker shared by every worker through this row.
    consecutive_failures = models.PositiveIntegerField(default=0)
    backoff_until = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    requests_total = models.PositiveBigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = AppleAccountQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def next_request_at(self) -> dt.datetime | None:
        """When this account may send its next request (by the app clock, for display)."""
        if self.status in (AccountStatus.NEEDS_LOGIN, AccountStatus.DISABLED):
            return None
        candidates = [timezone.now()]
        if self.last_request_at:
            interval = dt.timedelta(seconds=settings.ACCOUNT_MIN_REQUEST_INTERVAL)
            candidates.append(self.last_request_at + interval)
        if self.request_lease_until:
            candidates.append(self.request_lease_until)
        if self.status == AccountStatus.BACKING_OFF and self.backoff_until:
            candidates.append(self.backoff_until)
        return max(candidates)

    @property
    def breaker_state(self) -> str:
        if self.status != AccountStatus.BACKING_OFF:
            return "closed" if self.status == AccountStatus.ACTIVE else "locked"
        if self.backoff_until and self.backoff_until > timezone.now():
            return "open"
        return "half-open"


class ProductionRun(models.Model):
    """A batch of trackers made together: its trackers are eligible only inside the run."""

    name = models.CharField(max_length=100, unique=True)
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-starts_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(ends_at__isnull=True) | Q(ends_at__gt=F("starts_at")),
                name="%(app_label)s_%(class)s_ends_after_start",
            )
        ]

    def __str__(self) -> str:
        return self.name


class TrackerKind(models.TextChoices):
    STATIC = "static", "Static key pair"
    ACCESSORY = "accessory", "Rolling-key accessory"


class TrackerQuerySet(models.QuerySet):
    def eligible(self) -> TrackerQuerySet:
        """Active, not quarantined, and inside their production run (if they have one)."""
        return self.filter(
            Q(production_run__isnull=True)
            | Q(
                production_run__starts_at__lte=Now(),
                production_run__ends_at__isnull=True,
            )
            | Q(production_run__starts_at__lte=Now(), production_run__ends_at__gt=Now()),
            is_active=True,
            quarantined_at__isnull=True,
        )

    def due(self) -> TrackerQuerySet:
        """Never processed, or rested for FETCH_INTERVAL seconds (database clock)."""
        return self.alias(processed=processed_key()).filter(
            processed__lte=Now() - seconds(settings.FETCH_INTERVAL)
        )

    def not_processed_since(self, moment: dt.datetime) -> TrackerQuerySet:
        """Not processed since `moment` (a pass leaves what it already did)."""
        return self.alias(processed=processed_key()).filter(processed__lt=moment)

    def unleased(self) -> TrackerQuerySet:
        return self.filter(TRACKER_LEASE.unleased())

    def make_due(self) -> int:
        """Make these trackers due now without shrinking anybody's window.

        last_processed_at only moves back (to FETCH_INTERVAL ago, or stays NULL): an
        accessory then asks for at least every index since its last fetch, never fewer.
        """
        cutoff = Now() - seconds(settings.FETCH_INTERVAL)
        return self.filter(last_processed_at__gt=cutoff).update(last_processed_at=cutoff)

    def quarantined(self) -> TrackerQuerySet:
        return self.filter(quarantined_at__isnull=False)

    def not_quarantined(self) -> TrackerQuerySet:
        return self.filter(quarantined_at__isnull=True)

    def leased(self) -> TrackerQuerySet:
        return self.filter(TRACKER_LEASE.leased())

    def oldest_first(self) -> TrackerQuerySet:
        """Most starved first: never processed, then least recently processed."""
        return self.order_by(processed_key().asc(), "id")


class Tracker(models.Model):
    """A Find My tracker: its keys, where it was last seen, and its place in the fetch queue."""

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=20, choices=TrackerKind.choices, default=TrackerKind.STATIC)
    # findmy's own JSON (KeyPair.to_json() or FindMyAccessory.to_json()). Encrypted at rest.
    key_material = EncryptedJSONField(editable=False)
    # sha256 of the advertisement key, base64: the id Apple is asked for (static trackers);
    # for accessories the same hash of the master key, as a stable identity.
    hashed_adv_key = models.CharField(max_length=64)
    production_run = models.ForeignKey(
        ProductionRun, null=True, blank=True, on_delete=models.PROTECT, related_name="trackers"
    )
    is_active = models.BooleanField(default=True)
    # The queue: a claim is a lease (holder, token, expiry) on these columns.
    last_processed_at = models.DateTimeField(null=True, blank=True)
    claimed_by = models.CharField(max_length=200, blank=True)
    claim_token = models.UUIDField(null=True, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    consecutive_failures = models.PositiveIntegerField(default=0)
    quarantined_at = models.DateTimeField(null=True, blank=True)
    # An accessory catching up on more 15-minute indices than one request holds: the moment
    # its catch-up began (its window's top; it becomes last_processed_at once the window is
    # complete) and the newest index still to ask for. NULL: no catch-up under way.
    window_top = models.DateTimeField(null=True, blank=True)
    window_next_index = models.PositiveIntegerField(null=True, blank=True)
    # Last seen: moved only by a newer report.
    last_seen_at = models.DateTimeField(null=True, blank=True)
    # No spatial index: every ingest moves this column, and spatial queries run on reports.
    last_position = models.PointField(srid=4326, null=True, blank=True, spatial_index=False)
    last_accuracy = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TrackerQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        permissions = [
            ("fetch_now", "Can fetch trackers now (fetch control endpoints)"),
            ("reset_queue", "Can reset the fetch queue"),
        ]
        constraints = [
            # Import matches keys by it; the worker maps Apple's answers back by it. (A
            # constraint, not unique=True, which would add a LIKE index nobody uses.)
            models.UniqueConstraint(
                fields=["hashed_adv_key"], name="%(app_label)s_%(class)s_unique_hashed_adv_key"
            )
        ]
        indexes = [
            # claim_work(): due, unquarantined active trackers, least recently processed first
            # (a range on processed_key() both when work is due and when none is).
            models.Index(
                processed_key(),
                "id",
                name="tracker_claim_order_idx",
                condition=Q(is_active=True, quarantined_at__isnull=True),
            ),
            # /status/queue and lease expiry: trackers currently leased.
            models.Index(
                fields=["lease_until"],
                name="tracker_leased_idx",
                condition=Q(lease_until__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_leased(self) -> bool:
        return bool(self.lease_until and self.lease_until >= timezone.now())


def mask_apple_id(username: str) -> str:
    """A hint an operator may see: `j***@example.com`, `+49***89` for a phone number."""
    username = (username or "").strip()
    if not username:
        return ""
    local, at, domain = username.partition("@")
    if at:
        return f"{local[:1]}***@{domain}"
    return f"{username[:3]}***{username[-2:]}" if len(username) > 6 else "***"


class FleetVersion(models.Model):
    """How often the set of an owner's trackers has changed: a tracker given to or taken from
    the owner, or deleted. Counted by triggers on trackers_tracker (migration 0007), so every
    write path counts, a queryset `update()` or raw SQL included. The API's search cache keys an
    owner's fleet-wide searches by it (one primary-key read per request).

    No foreign key to the user: the triggers write here while a user's deletion sets their
    trackers' owner to NULL, and a row left behind by a deleted user is harmless."""

    owner_id = models.BigIntegerField(primary_key=True)
    version = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"fleet of user {self.owner_id}: version {self.version}"


def fleet_version(owner_id: int, using: str = "default") -> int:
    """The owner's fleet version (0 until their trackers first change hands)."""
    from django.db import connections

    with connections[using].cursor() as cursor:
        cursor.execute("SELECT version FROM trackers_fleetversion WHERE owner_id = %s", [owner_id])
        row = cursor.fetchone()
    return row[0] if row else 0
