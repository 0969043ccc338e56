"""Location reports: every report Apple returned, decrypted, as a PostGIS point."""

from __future__ import annotations

from django.contrib.gis.db import models
from django.contrib.postgres.fields import ArrayField


class Address(models.Model):
    """A reverse-geocoded address, cached per cell of rounded coordinates (geocoding.py).

    Reports point at the cell they fall in; a cell is looked up once, whatever the number of
    reports in it, so the provider's policy (Nominatim: 1 request/s, results cached) holds.
    """

    cell = models.CharField(max_length=64, unique=True)
    provider = models.CharField(max_length=50)
    label = models.TextField(help_text="The address as one line.")
    components = models.JSONField(default=dict, blank=True)
    point = models.PointField(srid=4326, help_text="The centre of the cell.")
    hits = models.PositiveBigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "addresses"

    def __str__(self) -> str:
        return self.label


class TrackerProcessing(models.Model):
    """A tracker's place in the processing queue and what processing remembers about it.

    The processing queue is QueuedReport; this row is the per-tracker lease that keeps two
    processors off one tracker's reports, and the newest report processed (older ones
    arriving late never change state).
    """

    tracker = models.OneToOneField(
        "trackers.Tracker", on_delete=models.CASCADE, primary_key=True, related_name="processing"
    )
    claimed_by = models.CharField(max_length=200, blank=True)
    claim_token = models.UUIDField(null=True, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    newest_timestamp = models.DateTimeField(null=True, blank=True)
    newest_report = models.ForeignKey(
        "LocationReport", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    first_seen_at = models.DateTimeField(null=True, blank=True)
    silent_since = models.DateTimeField(null=True, blank=True)
    battery_low = models.BooleanField(default=False)

    def __str__(self) -> str:
        return f"processing of {self.tracker_id}"


class LocationReport(models.Model):
    """One decrypted Find My report. The encrypted payload identifies it: re-fetches add nothing."""

    tracker = models.ForeignKey(
        "trackers.Tracker", on_delete=models.PROTECT, related_name="reports"
    )
    timestamp = models.DateTimeField(help_text="When the finder device saw the tracker (UTC).")
    point = models.PointField(srid=4326)
    horizontal_accuracy = models.PositiveSmallIntegerField(help_text="Metres.")
    confidence = models.PositiveSmallIntegerField()
    status = models.PositiveSmallIntegerField(help_text="Status byte (battery on AirTags).")
    payload = models.BinaryField(help_text="The encrypted payload as Apple returned it.")
    fetched_at = models.DateTimeField()
    # Reverse geocoding: the cell's address, or a note saying why there is none (yet).
    address = models.ForeignKey(
        Address, null=True, blank=True, on_delete=models.SET_NULL, related_name="reports"
    )
    geocode_note = models.CharField(max_length=200, blank=True, db_default="")

    class Meta:
        ordering = ["-timestamp"]
        constraints = [
            # ingest(): ON CONFLICT (tracker_id, payload) DO NOTHING.
            models.UniqueConstraint(
                fields=["tracker", "payload"], name="%(app_label)s_%(class)s_unique_payload"
            )
        ]
        indexes = [
            # A tracker's history, newest first, and time-range searches per tracker.
            models.Index(fields=["tracker", "-timestamp"], name="report_tracker_time_idx"),
            # The admin's newest-first list and fleet-wide time-range searches.
            models.Index(fields=["-timestamp"], name="report_time_idx"),
            # geocoding backfill: reports with neither an address nor a reason, newest first.
            models.Index(
                fields=["-timestamp"],
                name="report_ungeocoded_idx",
                condition=models.Q(address__isnull=True, geocode_note=""),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.tracker_id} @ {self.timestamp:%Y-%m-%d %H:%M:%S}"

    @property
    def latitude(self) -> float:
        return self.point.y

    @property
    def longitude(self) -> float:
        return self.point.x


class QueuedReport(models.Model):
    """A report waiting for processing (geofences, tracker events): the processing queue.

    Ingest adds a row in the statement that stores the report; the processor deletes it in
    the transaction that commits what it concluded. A queue of its own, not a flag on the
    report: marking done would rewrite the report row and all its index entries (GiST
    included), where a delete here touches two small indexes and the report stays
    insert-only.
    """

    report = models.OneToOneField(
        LocationReport, on_delete=models.CASCADE, primary_key=True, related_name="+"
    )
    # Indexed (the foreign key's index): processing.claim() sweeps the pending trackers.
    tracker = models.ForeignKey("trackers.Tracker", on_delete=models.CASCADE, related_name="+")
    stored_at = models.DateTimeField(help_text="When ingest stored the report (its fetch).")

    def __str__(self) -> str:
        return f"report {self.report_id} of {self.tracker_id}"


class LatestLocation(models.Model):
    """A row of the latest-location materialized view (latest.py): each tracker's newest
    report, its address and the active fences it is inside. Read-only; refreshed every minute."""

    tracker = models.OneToOneField(
        "trackers.Tracker",
        primary_key=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="latest_location",
    )
    report = models.ForeignKey(
        LocationReport, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    timestamp = models.DateTimeField()
    point = models.PointField(srid=4326)
    horizontal_accuracy = models.PositiveSmallIntegerField(help_text="Metres.")
    address = models.TextField(null=True, blank=True)  # NULL: not geocoded (yet)
    fence_ids = ArrayField(models.BigIntegerField(), help_text="Active fences it is inside.")
    refreshed_at = models.DateTimeField()

    class Meta:
        managed = False
        db_table = "locations_latestlocation"
        ordering = ["-timestamp"]
        verbose_name = "latest location"

    def __str__(self) -> str:
        return f"{self.tracker_id} @ {self.timestamp:%Y-%m-%d %H:%M:%S}"


# --- reverse geocoding (geocoding.py): totals, the provider's shared state, cell lookups ------


class GeocodeOutcome(models.TextChoices):
    CACHE_HIT = "cache_hit", "Its cell's cached address"
    NEARBY = "nearby", "A cached address within GEOCODE_REUSE_METERS"
    REUSE = "reuse", "The tracker's previous address (moved less than GEOCODE_REUSE_METERS)"
    PROPAGATED = "propagated", "Answered by a lookup made for another report of its place"
    LOOKUP = "lookup", "Answered by a lookup made for it"
    PROVIDER_REQUEST = "provider_request", "Provider request (or offline lookup)"
    PROVIDER_FAILURE = "provider_failure", "Failed provider request"
    FALLBACK = "fallback", "Offline city-level answer while the provider could not answer"
    GAVE_UP = "gave_up", "Given up after GEOCODE_MAX_ATTEMPTS failed lookups"


class GeocodeTotal(models.Model):
    """Running totals of geocoding outcomes (reports, or requests), one row per outcome.

    `cache_stats()`, /metrics and heartbeats read these few rows; each batch adds to them with
    one upsert, so counting costs nothing at any table size and survives restarts.
    """

    outcome = models.CharField(max_length=20, choices=GeocodeOutcome.choices, unique=True)
    count = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.outcome}: {self.count}"


class BreakerState(models.TextChoices):
    CLOSED = "closed", "Closed"
    OPEN = "open", "Open"
    HALF_OPEN = "half_open", "Half-open (one probe in flight)"


class GeocoderState(models.Model):
    """What every geocoder process of the deployment shares about one provider (by name).

    `last_request_at` is the shared rate limiter (ratelimit.py): a process may send only after
    winning a compare-and-set on it, by the database clock. The breaker columns are the
    provider's circuit breaker (circuit.py). `swept_up_to` is the report id up to which new
    reports were checked against the cache.
    """

    provider = models.CharField(max_length=50, unique=True)
    last_request_at = models.DateTimeField(null=True, blank=True)
    breaker = models.CharField(
        max_length=10, choices=BreakerState.choices, default=BreakerState.CLOSED
    )
    consecutive_failures = models.PositiveIntegerField(default=0)
    open_until = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    last_failure_at = models.DateTimeField(null=True, blank=True)
    swept_up_to = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.provider} ({self.breaker})"


class CellLookup(models.Model):
    """A cell whose address is being looked up, or whose lookups failed.

    The lease keeps two geocoder processes from asking the provider about one place; the
    attempts, the retry time and `gave_up_at` are what the backfill needs to retry it or to
    give up. The row is deleted when a lookup succeeds (the Address row takes over).
    """

    cell = models.CharField(max_length=64, unique=True)
    claimed_by = models.CharField(max_length=200, blank=True)
    claim_token = models.UUIDField(null=True, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    retry_after = models.DateTimeField(null=True, blank=True)
    gave_up_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"lookup of {self.cell} ({self.attempts} attempts)"
