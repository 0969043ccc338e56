"""Response shapes of the health and status endpoints (rendering and the OpenAPI schema)."""

from __future__ import annotations

from rest_framework import serializers

from monitoring.models import Liveness


class LiveSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["ok"])


class UnavailableSerializer(serializers.Serializer):
    detail = serializers.CharField(help_text="What is wrong: down, or not migrated.")
    failing = serializers.ListField(child=serializers.CharField(), help_text='["database"]')


class HealthSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["ok", "unhealthy"])
    failing = serializers.ListField(child=serializers.CharField())
    degraded = serializers.ListField(child=serializers.CharField())
    checks = serializers.DictField(
        child=serializers.DictField(),
        help_text="Per check (database, redis, workers, accounts, queue, failures, processing, "
        "geocoding, deliveries, geofence_events, latest_view): status (ok, degraded, failing, "
        "skipped), detail, and the check's figures.",
    )


class QueueStatusSerializer(serializers.Serializer):
    checked_at = serializers.DateTimeField(help_text="The database clock.")
    eligible = serializers.IntegerField()
    due = serializers.IntegerField()
    leased = serializers.IntegerField()
    quarantined = serializers.IntegerField()
    never_processed = serializers.IntegerField()
    oldest_processed_at = serializers.DateTimeField(allow_null=True)
    oldest_processed_age_seconds = serializers.FloatField(allow_null=True)
    accounts_usable = serializers.IntegerField()
    max_keys_per_batch = serializers.IntegerField()
    fetch_cycle_hours = serializers.IntegerField()
    cycle_capacity = serializers.IntegerField(help_text="Trackers per FETCH_CYCLE_HOURS.")
    capacity_ok = serializers.BooleanField()


class InstanceSerializer(serializers.Serializer):
    service_name = serializers.CharField()
    instance_id = serializers.CharField()
    hostname = serializers.CharField()
    pid = serializers.IntegerField()
    started_at = serializers.DateTimeField()
    last_heartbeat = serializers.DateTimeField()
    stopped_at = serializers.DateTimeField(allow_null=True)
    heartbeat_count = serializers.IntegerField()
    liveness = serializers.ChoiceField(choices=Liveness.choices)
    figures = serializers.DictField(help_text="The heartbeat's figures (memory, CPU, queue).")


class LivenessCountsSerializer(serializers.Serializer):
    alive = serializers.IntegerField()
    stale = serializers.IntegerField()
    dead = serializers.IntegerField()
    stopped = serializers.IntegerField(help_text="Stopped cleanly (their stopped_at is set).")


class WorkerStatusSerializer(serializers.Serializer):
    checked_at = serializers.DateTimeField(help_text="The database clock.")
    window_seconds = serializers.IntegerField(help_text="Instances heard from this recently.")
    counts = LivenessCountsSerializer()
    instances = InstanceSerializer(many=True)
