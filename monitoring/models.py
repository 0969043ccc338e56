"""What operators watch: failures (dead letters), fetch requests, and service heartbeats."""

from __future__ import annotations

import datetime as dt

from django.db import models
from django.db.models import Q
from django.utils import timezone

from trackers.findmy_client import FailureCategory

ALIVE_SECONDS = 90
STALE_SECONDS = 180


class FailureRecord(models.Model):
    """Something that keeps failing, once per (category, fingerprint), with a count.

    A fingerprint names the thing that failed: `account:<id>`, `tracker:<id>`, or for a
    payload that would not decrypt, the payload's hash (the payload itself is kept in
    `detail`, so nothing Apple returned is lost).
    """

    category = models.CharField(max_length=30, choices=FailureCategory.choices)
    fingerprint = models.CharField(max_length=100)
    account = models.ForeignKey(
        "trackers.AppleAccount", null=True, blank=True, on_delete=models.SET_NULL
    )
    tracker = models.ForeignKey(
        "trackers.Tracker", null=True, blank=True, on_delete=models.SET_NULL
    )
    attempts = models.PositiveIntegerField(default=1)
    first_seen = models.DateTimeField(default=timezone.now)
    last_seen = models.DateTimeField(default=timezone.now)
    last_error = models.TextField()
    detail = models.JSONField(default=dict, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-last_seen"]
        constraints = [
            # record_failure(): INSERT ... ON CONFLICT (category, fingerprint) DO UPDATE.
            models.UniqueConstraint(
                fields=["category", "fingerprint"], name="%(app_label)s_%(class)s_unique_key"
            )
        ]
        indexes = [
            # /health and the admin's default view: open failures, newest first.
            models.Index(
                fields=["-last_seen"], name="failure_open_idx", condition=Q(resolved_at=None)
            )
        ]

    def __str__(self) -> str:
        return f"{self.category} {self.fingerprint} x{self.attempts}"


class FetchAttempt(models.Model):
    """One fetch request of one account: the audit log behind metrics and reliability checks."""

    account = models.ForeignKey("trackers.AppleAccount", on_delete=models.CASCADE)
    worker = models.CharField(max_length=200)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()
    trackers = models.PositiveIntegerField()
    outcome = models.CharField(max_length=30)  # "ok" or a failure category
    new_reports = models.PositiveIntegerField(default=0)
    duplicate_reports = models.PositiveIntegerField(default=0)
    failed_reports = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at"]
        indexes = [models.Index(fields=["account", "started_at"], name="attempt_account_idx")]

    def __str__(self) -> str:
        return f"{self.account_id} {self.started_at:%Y-%m-%d %H:%M:%S} {self.outcome}"

    @property
    def duration(self) -> dt.timedelta:
        return self.finished_at - self.started_at


# Upper bounds (seconds) of the batch-duration histogram: a healthy request takes about a
# second; findmy retries an empty answer for 30 s; the lease (PROCESSING_TIMEOUT) is minutes.
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class FetchTotal(models.Model):
    """Running totals of every fetch attempt ever logged, by outcome and duration bucket.

    /metrics reads these few rows instead of scanning FetchAttempt, and old FetchAttempt rows
    can be pruned without the Prometheus counters going backwards. `bucket` is the index of
    the smallest DURATION_BUCKETS bound the duration fits under (len(DURATION_BUCKETS): +Inf).
    """

    outcome = models.CharField(max_length=30)
    bucket = models.PositiveSmallIntegerField()
    requests = models.BigIntegerField(default=0)
    new_reports = models.BigIntegerField(default=0)
    duplicate_reports = models.BigIntegerField(default=0)
    duration_seconds = models.FloatField(default=0.0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["outcome", "bucket"], name="fetchtotal_outcome_bucket")
        ]

    def __str__(self) -> str:
        return f"{self.outcome} bucket {self.bucket}: {self.requests}"


class Liveness(models.TextChoices):
    ALIVE = "alive", "Alive"
    STALE = "stale", "Stale"
    DEAD = "dead", "Dead"  # went silent without saying goodbye: killed, crashed, cut off
    STOPPED = "stopped", "Stopped"  # stopped cleanly (Heartbeat.stop() set stopped_at)


class ServiceInstance(models.Model):
    """The latest heartbeat of one running process (a worker, a qcluster process, ...)."""

    service_name = models.CharField(max_length=100)
    instance_id = models.CharField(max_length=200, unique=True)
    hostname = models.CharField(max_length=200)
    pid = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    last_heartbeat = models.DateTimeField()
    heartbeat_count = models.PositiveBigIntegerField(default=0)
    payload = models.JSONField(default=dict)
    stopped_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["service_name", "instance_id"]

    def __str__(self) -> str:
        return self.instance_id

    def liveness(self, now: dt.datetime | None = None) -> str:
        if self.stopped_at is not None:
            return Liveness.STOPPED
        age = ((now or timezone.now()) - self.last_heartbeat).total_seconds()
        if age < ALIVE_SECONDS:
            return Liveness.ALIVE
        if age < STALE_SECONDS:
            return Liveness.STALE
        return Liveness.DEAD
