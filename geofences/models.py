"""Geofences, each tracker's side of each fence, the events they raise, alert rules and
the deliveries of those alerts.

Membership is decided per report by `membership.py` (accuracy-aware evidence) and confirmed by
`state.py` (GEOFENCE_CONFIRMATIONS consecutive evidence reports); events and deliveries are
written in the same transaction that marks the reports processed, under unique keys, so each
happens exactly once whatever the number of processors.
"""

from __future__ import annotations

import datetime as dt
import secrets
import zoneinfo
from typing import Any

from django.conf import settings
from django.contrib.gis.db import models
from django.contrib.postgres.fields import ArrayField
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db.models import Q

from trackers.fields import EncryptedJSONField

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class FenceKind(models.TextChoices):
    CIRCLE = "circle", "Circle"
    POLYGON = "polygon", "Polygon"


def validate_time_zone(name: str) -> None:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValidationError(f"unknown time zone {name!r}") from None


def _minutes(text: str) -> int:
    hours, _, minutes = text.partition(":")
    value = int(hours) * 60 + int(minutes)
    if not (0 <= int(minutes) < 60 and 0 <= value <= 24 * 60):
        raise ValueError(text)
    return value


def validate_schedule(schedule: Any) -> None:
    """A weekly schedule: {"mon": [["08:00", "18:00"], ...], ...}; empty: always active."""
    if not isinstance(schedule, dict):
        raise ValidationError("the schedule must be an object of weekdays")
    for day, spans in schedule.items():
        if day not in WEEKDAYS:
            raise ValidationError(f"unknown weekday {day!r} (use {', '.join(WEEKDAYS)})")
        if not isinstance(spans, list):
            raise ValidationError(f"{day}: a list of [start, end] pairs")
        for span in spans:
            try:
                start, end = span
                if _minutes(start) >= _minutes(end):
                    raise ValueError
            except (TypeError, ValueError):
                raise ValidationError(
                    f'{day}: {span!r} is not a ["HH:MM", "HH:MM"] span with start < end'
                ) from None


class WeeklySchedule(models.Model):
    """An optional weekly active schedule in a time zone (fences, alert quiet hours)."""

    schedule = models.JSONField(
        default=dict,
        blank=True,
        validators=[validate_schedule],
        help_text='Active spans per weekday, e.g. {"mon": [["08:00", "18:00"]]}. Empty: always.',
    )
    time_zone = models.CharField(max_length=64, default="UTC", validators=[validate_time_zone])

    class Meta:
        abstract = True

    def scheduled_at(self, moment: dt.datetime) -> bool:
        """Whether `moment` falls in one of the schedule's spans (True with no schedule)."""
        if not self.schedule:
            return True
        local = moment.astimezone(zoneinfo.ZoneInfo(self.time_zone))
        minute = local.hour * 60 + local.minute
        spans = self.schedule.get(WEEKDAYS[local.weekday()], [])
        return any(_minutes(start) <= minute < _minutes(end) for start, end in spans)


class Geofence(WeeklySchedule):
    """A circle (centre and radius) or a polygon an owner's trackers enter and leave."""

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="geofences"
    )
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=10, choices=FenceKind.choices)
    center = models.PointField(srid=4326, null=True, blank=True)
    radius_m = models.FloatField(null=True, blank=True, help_text="Metres (circles).")
    area = models.PolygonField(srid=4326, null=True, blank=True)
    # The centre or the area as geography, set by save(): membership.py finds the fences near
    # a report with ST_DWithin on it (GiST index; geodesic, right across the antimeridian).
    shape = models.GeometryField(geography=True, srid=4326, editable=False, null=True)
    # Empty: every tracker of the owner.
    trackers = models.ManyToManyField("trackers.Tracker", blank=True, related_name="geofences")
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(
                    kind=FenceKind.CIRCLE,
                    center__isnull=False,
                    radius_m__gt=0,
                    area__isnull=True,
                )
                | Q(kind=FenceKind.POLYGON, area__isnull=False, center__isnull=True),
                name="%(app_label)s_%(class)s_shape_matches_kind",
            )
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        from .shapes import check_shape

        check_shape(self)

    def save(self, *args: Any, **kwargs: Any) -> None:
        self.shape = self.center if self.kind == FenceKind.CIRCLE else self.area
        if "update_fields" in kwargs and kwargs["update_fields"] is not None:
            kwargs["update_fields"] = {*kwargs["update_fields"], "shape"}
        super().save(*args, **kwargs)


class Side(models.TextChoices):
    UNKNOWN = "unknown", "Unknown"
    INSIDE = "inside", "Inside"
    OUTSIDE = "outside", "Outside"


class GeofenceState(models.Model):
    """One tracker's confirmed side of one fence, and the run of evidence for the other."""

    tracker = models.ForeignKey("trackers.Tracker", on_delete=models.CASCADE)
    geofence = models.ForeignKey(Geofence, on_delete=models.CASCADE, related_name="states")
    side = models.CharField(max_length=10, choices=Side.choices, default=Side.UNKNOWN)
    # A run of consecutive evidence for `candidate` (not the current side): how many reports,
    # the first one's time (the event's occurred_at) and report.
    candidate = models.CharField(max_length=10, choices=Side.choices, blank=True)
    candidate_count = models.PositiveIntegerField(default=0)
    candidate_since = models.DateTimeField(null=True, blank=True)
    changed_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tracker", "geofence"], name="%(app_label)s_%(class)s_unique_pair"
            )
        ]

    def __str__(self) -> str:
        return f"{self.tracker_id} {self.side} {self.geofence_id}"


class EventKind(models.TextChoices):
    ENTER = "enter", "Entered a geofence"
    EXIT = "exit", "Left a geofence"
    FIRST_SEEN = "first_seen", "First seen"
    SILENT = "silent", "Silent"
    BACK_ONLINE = "back_online", "Back online"
    BATTERY_LOW = "battery_low", "Battery low"


class GeofenceEvent(models.Model):
    """Something that happened to a tracker: a fence entered or left, or a tracker event
    (geofence empty). `dedupe_key` makes each state change one row, whoever writes it."""

    tracker = models.ForeignKey("trackers.Tracker", on_delete=models.CASCADE, related_name="events")
    geofence = models.ForeignKey(
        Geofence, null=True, blank=True, on_delete=models.CASCADE, related_name="events"
    )
    kind = models.CharField(max_length=20, choices=EventKind.choices)
    report = models.ForeignKey(
        "locations.LocationReport",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The report that confirmed it.",
    )
    occurred_at = models.DateTimeField(
        help_text="The time of the first report of the confirming run (or of the silence)."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    dedupe_key = models.CharField(max_length=200, unique=True)

    class Meta:
        ordering = ["-occurred_at"]
        indexes = [
            # The admin's and the API's newest-first lists per tracker.
            models.Index(fields=["tracker", "-occurred_at"], name="event_tracker_time_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.tracker_id} @ {self.occurred_at:%Y-%m-%d %H:%M}"


class Channel(models.TextChoices):
    WEBHOOK = "webhook", "Webhook"
    EMAIL = "email", "Email"
    REDIS = "redis", "Redis pub/sub"


class AlertRule(WeeklySchedule):
    """Which events an owner is told about, where, and when not (quiet hours).

    `schedule` here holds the quiet hours: events inside them are recorded, not sent.
    """

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="alert_rules"
    )
    name = models.CharField(max_length=200)
    event_kinds = ArrayField(
        models.CharField(max_length=20, choices=EventKind.choices),
        help_text="Event kinds this rule sends.",
    )
    geofences = models.ManyToManyField(Geofence, blank=True, related_name="alert_rules")
    trackers = models.ManyToManyField("trackers.Tracker", blank=True, related_name="alert_rules")
    channels = ArrayField(models.CharField(max_length=10, choices=Channel.choices))
    webhook_url = models.URLField(
        max_length=500,
        blank=True,
        validators=[URLValidator(schemes=["http", "https"])],
        help_text="Receives a signed JSON POST per event (webhook channel).",
    )
    # The HMAC-SHA256 key of the webhook's signature (a string), encrypted at rest; save()
    # makes one for a webhook rule, deliveries.ensure_webhook_secret() for older rows.
    webhook_secret = EncryptedJSONField(null=True, blank=True, editable=False)
    email_to = models.EmailField(blank=True)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def in_quiet_hours(self, moment: dt.datetime) -> bool:
        return bool(self.schedule) and self.scheduled_at(moment)

    def clean(self) -> None:
        channels = self.channels or []
        errors = {}
        if len(set(channels)) != len(channels):
            errors["channels"] = "each channel once"
        if Channel.WEBHOOK in channels and not self.webhook_url:
            errors["webhook_url"] = "the webhook channel needs a URL"
        if Channel.EMAIL in channels and not self.email_to:
            errors["email_to"] = "the email channel needs an address"
        if errors:
            raise ValidationError(errors)

    def save(self, *args: Any, **kwargs: Any) -> None:
        if Channel.WEBHOOK in (self.channels or []) and not self.webhook_secret:
            self.webhook_secret = secrets.token_urlsafe(32)
            if kwargs.get("update_fields") is not None:
                kwargs["update_fields"] = {*kwargs["update_fields"], "webhook_secret"}
        super().save(*args, **kwargs)


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    DELIVERED = "delivered", "Delivered"
    FAILED = "failed", "Failed"
    SUPPRESSED = "suppressed", "Suppressed (quiet hours)"


class AlertDelivery(models.Model):
    """One event sent through one channel of one rule: exactly one row per triple."""

    event = models.ForeignKey(GeofenceEvent, on_delete=models.CASCADE, related_name="deliveries")
    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="deliveries")
    channel = models.CharField(max_length=10, choices=Channel.choices)
    status = models.CharField(
        max_length=12, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # A sender holds it while sending (leases.py).
    claimed_by = models.CharField(max_length=200, blank=True)
    claim_token = models.UUIDField(null=True, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["event", "rule", "channel"], name="%(app_label)s_%(class)s_once"
            )
        ]
        indexes = [
            # deliveries.claim(): pending deliveries whose next attempt is due.
            models.Index(
                fields=["next_attempt_at"],
                name="delivery_pending_idx",
                condition=Q(status="pending"),
            )
        ]

    def __str__(self) -> str:
        return f"{self.channel} of {self.event_id} ({self.status})"
