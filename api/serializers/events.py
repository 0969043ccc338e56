"""Geofence events (enter, exit) and tracker events (first seen, silent, ...)."""

from __future__ import annotations

from rest_framework import serializers

from geofences.models import GeofenceEvent


class EventSerializer(serializers.ModelSerializer):
    tracker_name = serializers.CharField(source="tracker.name", read_only=True)
    geofence_name = serializers.CharField(
        source="geofence.name", read_only=True, default=None, allow_null=True
    )

    class Meta:
        model = GeofenceEvent
        fields = [
            "id",
            "kind",
            "tracker",
            "tracker_name",
            "geofence",
            "geofence_name",
            "report",
            "occurred_at",
            "created_at",
        ]
        read_only_fields = fields
