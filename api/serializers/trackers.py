"""Trackers as owners see them: never any key material (not even the hashed key)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from api.serializers.base import OwnedRelatedField, StrictModelSerializer, StrictSerializer
from geofences.models import Geofence
from trackers.keyfiles import check_name
from trackers.models import ProductionRun, Tracker

MAX_UPLOAD_BYTES = 10 * 1024 * 1024


class PositionSerializer(serializers.Serializer):
    latitude = serializers.FloatField()
    longitude = serializers.FloatField()


class TrackerSerializer(StrictModelSerializer):
    """A tracker; `geofences` are the fences that name it (only the owner's fences)."""

    production_run = serializers.SlugRelatedField(
        slug_field="name", read_only=True, allow_null=True
    )
    last_position = serializers.SerializerMethodField()
    geofences = OwnedRelatedField(many=True, queryset=Geofence.objects.all(), required=False)

    class Meta:
        model = Tracker
        fields = [
            "id",
            "name",
            "kind",
            "is_active",
            "owner",
            "production_run",
            "last_seen_at",
            "last_position",
            "last_accuracy",
            "quarantined_at",
            "created_at",
            "geofences",
        ]
        read_only_fields = [
            "kind",
            "owner",
            "last_seen_at",
            "last_accuracy",
            "quarantined_at",
            "created_at",
        ]

    @extend_schema_field(PositionSerializer(allow_null=True))
    def get_last_position(self, tracker: Tracker) -> dict[str, float] | None:
        point = tracker.last_position
        return None if point is None else {"latitude": point.y, "longitude": point.x}

    def validate_name(self, value: str) -> str:
        try:
            return check_name(value.strip())
        except ValueError as exc:
            raise serializers.ValidationError(str(exc)) from None

    def validate_geofences(self, fences: list[Geofence]) -> list[Geofence]:
        # A fence applies to its owner's trackers only (staff may edit anyone's tracker).
        owner_id = self.instance.owner_id if self.instance else None
        foreign = [f.pk for f in fences if f.owner_id != owner_id]
        if foreign:
            raise serializers.ValidationError(
                f"geofences {foreign} do not belong to the tracker's owner"
            )
        return fences


class TrackerImportSerializer(StrictSerializer):
    """An upload of a key file, as `import_trackers` reads them."""

    file = serializers.FileField(help_text="findmy JSON (objects, a list, JSON lines) or CSV")
    format = serializers.ChoiceField(
        choices=["auto", "json", "csv"],
        default="auto",
        help_text="auto: by the file name and content",
    )
    production_run = serializers.SlugRelatedField(
        slug_field="name", queryset=ProductionRun.objects.all(), required=False
    )

    def validate_file(self, upload: Any) -> Any:
        if upload.size > MAX_UPLOAD_BYTES:
            raise serializers.ValidationError(f"at most {MAX_UPLOAD_BYTES // 2**20} MiB")
        return upload


class ImportedSerializer(serializers.Serializer):
    """The answer of an import: the trackers created, and the entries already known."""

    created = serializers.ListField(child=serializers.DictField())
    skipped = serializers.ListField(child=serializers.DictField())
