"""Location reports: every report Apple returned, decrypted, as a PostGIS point."""

from __future__ import annotations

from django.contrib.gis.db import models


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
        ]

    def __str__(self) -> str:
        return f"{self.tracker_id} @ {self.timestamp:%Y-%m-%d %H:%M:%S}"

    @property
    def latitude(self) -> float:
        return self.point.y

    @property
    def longitude(self) -> float:
        return self.point.x
