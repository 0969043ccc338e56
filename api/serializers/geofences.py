"""Geofences with GeoJSON geometry: a Polygon, or a circle (a Point centre and `radius_m`)."""

from __future__ import annotations

import copy
import math
from typing import Any

from django.contrib.gis.geos import GEOSGeometry, LinearRing, Point, Polygon
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from api.serializers.base import OwnedRelatedField, StrictModelSerializer, full_clean
from geofences.models import FenceKind, Geofence
from trackers.models import Tracker

EARTH_RADIUS_M = 6_371_008.8
CIRCLE_SEGMENTS = 64

GEOJSON_GEOMETRY_SCHEMA = {
    "type": "object",
    "description": "GeoJSON geometry (RFC 7946): a Polygon (one closed outer ring), or a Point "
    "(a circle's centre; give radius_m too). Longitude first.",
    "required": ["type", "coordinates"],
    "properties": {
        "type": {"type": "string", "enum": ["Point", "Polygon"]},
        "coordinates": {"type": "array", "items": {}},
    },
}


def _position(value: Any) -> tuple[float, float]:
    if not isinstance(value, list) or len(value) not in (2, 3):
        raise serializers.ValidationError("a position is [longitude, latitude]")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        raise serializers.ValidationError("coordinates are numbers")
    lon, lat = float(value[0]), float(value[1])
    if not (math.isfinite(lon) and math.isfinite(lat)):
        raise serializers.ValidationError("coordinates are finite numbers")
    if not (-180 <= lon <= 180 and -90 <= lat <= 90):
        raise serializers.ValidationError("a position is off the globe ([longitude, latitude])")
    return lon, lat


def parse_geometry(value: Any) -> GEOSGeometry:
    """A GeoJSON Point or Polygon as a GEOS geometry (SRID 4326); ValidationError saying what
    is wrong otherwise (unclosed ring, too few corners, not numbers, off the globe)."""
    if not isinstance(value, dict) or set(value) - {"type", "coordinates", "bbox"}:
        raise serializers.ValidationError("a GeoJSON geometry: {type, coordinates}")
    kind, coordinates = value.get("type"), value.get("coordinates")
    if kind == "Point":
        return Point(*_position(coordinates), srid=4326)
    if kind != "Polygon":
        raise serializers.ValidationError("type is Point (a circle's centre) or Polygon")
    if not isinstance(coordinates, list) or len(coordinates) != 1:
        raise serializers.ValidationError("a Polygon has one outer ring and no holes")
    ring = coordinates[0]
    if not isinstance(ring, list):
        raise serializers.ValidationError("a ring is a list of positions")
    points = [_position(p) for p in ring]
    if len(points) < 4 or points[0] != points[-1]:
        raise serializers.ValidationError(
            "the ring must be closed (last position = first) and have at least 3 corners"
        )
    return Polygon(LinearRing(points), srid=4326)


def geometry_json(geometry: GEOSGeometry | None) -> dict[str, Any] | None:
    if geometry is None:
        return None
    if geometry.geom_type == "Point":
        return {"type": "Point", "coordinates": [geometry.x, geometry.y]}
    return {"type": "Polygon", "coordinates": [[list(c) for c in r.coords] for r in geometry]}


def circle_outline(center: Point, radius_m: float) -> dict[str, Any]:
    """A circle as a GeoJSON Polygon of CIRCLE_SEGMENTS corners on the sphere (for maps)."""
    lat1, lon1 = math.radians(center.y), math.radians(center.x)
    angle = radius_m / EARTH_RADIUS_M
    ring = []
    for i in range(CIRCLE_SEGMENTS):
        bearing = 2 * math.pi * i / CIRCLE_SEGMENTS
        lat = math.asin(
            math.sin(lat1) * math.cos(angle) + math.cos(lat1) * math.sin(angle) * math.cos(bearing)
        )
        lon = lon1 + math.atan2(
            math.sin(bearing) * math.sin(angle) * math.cos(lat1),
            math.cos(angle) - math.sin(lat1) * math.sin(lat),
        )
        lon_deg = (math.degrees(lon) + 540) % 360 - 180
        ring.append([round(lon_deg, 7), round(math.degrees(lat), 7)])
    ring.append(ring[0])
    return {"type": "Polygon", "coordinates": [ring]}


@extend_schema_field(GEOJSON_GEOMETRY_SCHEMA)
class FenceGeometryField(serializers.Field):
    """A fence's shape as GeoJSON: its polygon, or its centre (a Point) for a circle."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(source="*", **kwargs)

    def to_internal_value(self, data: Any) -> dict[str, GEOSGeometry]:
        return {"geometry": parse_geometry(data)}

    def to_representation(self, fence: Geofence) -> dict[str, Any] | None:
        return geometry_json(fence.area if fence.kind == FenceKind.POLYGON else fence.center)


CENTER_SCHEMA = {
    "type": "object",
    "nullable": True,
    "description": "a circle's centre",
    "required": ["latitude", "longitude"],
    "properties": {
        "latitude": {"type": "number", "minimum": -90, "maximum": 90},
        "longitude": {"type": "number", "minimum": -180, "maximum": 180},
    },
}


@extend_schema_field(CENTER_SCHEMA)
class CenterField(serializers.Field):
    """A circle's centre as {"latitude", "longitude"} in degrees."""

    def to_internal_value(self, data: Any) -> Point:
        if not isinstance(data, dict):
            raise serializers.ValidationError('an object {"latitude": ..., "longitude": ...}')
        errors: dict[str, list[str]] = {
            name: ["unknown field"] for name in sorted(set(data) - {"latitude", "longitude"})
        }
        values = {}
        for name, limit in (("latitude", 90), ("longitude", 180)):
            value = data.get(name)
            if value is None:
                errors[name] = ["required"]
            elif (
                not isinstance(value, (int, float))
                or isinstance(value, bool)
                or not math.isfinite(value)
                or not -limit <= value <= limit
            ):
                errors[name] = [f"a number from -{limit} to {limit} (degrees)"]
            else:
                values[name] = float(value)
        if errors:
            raise serializers.ValidationError(errors)
        return Point(values["longitude"], values["latitude"], srid=4326)

    def to_representation(self, value: Point) -> dict[str, float]:
        return {"latitude": value.y, "longitude": value.x}


class GeofenceSerializer(StrictModelSerializer):
    """A fence. Write a polygon as `geometry` (GeoJSON Polygon); a circle as `center` and
    `radius_m`, or as `geometry` (GeoJSON Point, the centre) and `radius_m`. `kind` follows.
    `trackers`: the owner's trackers it applies to; empty: all of them."""

    geometry = FenceGeometryField(required=False)
    center = CenterField(required=False, allow_null=True)
    trackers = OwnedRelatedField(
        many=True, queryset=Tracker.objects.defer("key_material"), required=False
    )

    class Meta:
        model = Geofence
        fields = [
            "id",
            "name",
            "kind",
            "geometry",
            "center",
            "radius_m",
            "is_active",
            "trackers",
            "schedule",
            "time_zone",
            "owner",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["kind", "owner", "created_at", "updated_at"]

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        fence = copy.copy(self.instance) if self.instance else Geofence()
        shape_source = "geometry" if "geometry" in attrs else "center"
        self._apply_shape(fence, attrs)
        for name in ("name", "is_active", "schedule", "time_zone"):
            if name in attrs:
                setattr(fence, name, attrs[name])
        fence.owner_id = self.instance.owner_id if self.instance else self.context["owner"].pk
        full_clean(fence, {"area": "geometry", "center": shape_source}, exclude=["shape"])
        owner_id = fence.owner_id
        foreign = [t.pk for t in attrs.get("trackers", []) if t.owner_id != owner_id]
        if foreign:
            raise serializers.ValidationError(
                {"trackers": [f"trackers {foreign} do not belong to the fence's owner"]}
            )
        attrs["_fence"] = fence
        return attrs

    def _apply_shape(self, fence: Geofence, attrs: dict[str, Any]) -> None:
        geometry = attrs.get("geometry")
        if geometry is not None and "center" in attrs:
            raise serializers.ValidationError({"center": ["give geometry or center, not both"]})
        if geometry is not None and geometry.geom_type == "Polygon":
            if attrs.get("radius_m") is not None:
                raise serializers.ValidationError({"radius_m": ["a polygon has no radius"]})
            fence.kind, fence.area, fence.center, fence.radius_m = (
                FenceKind.POLYGON,
                geometry,
                None,
                None,
            )
            return
        center = geometry if geometry is not None else attrs.get("center", fence.center)
        if geometry is not None or "center" in attrs or "radius_m" in attrs:
            if fence.kind == FenceKind.POLYGON and center is None:
                raise serializers.ValidationError(
                    {"center": ["this fence is a polygon: send a new geometry, or a centre"]}
                )
            fence.kind, fence.center, fence.area = FenceKind.CIRCLE, center, None
            fence.radius_m = attrs.get("radius_m", fence.radius_m)
        elif self.instance is None:
            raise serializers.ValidationError(
                {"geometry": ["a Polygon, or a circle's centre (geometry or center) and radius_m"]}
            )

    def create(self, validated: dict[str, Any]) -> Geofence:
        return self._save(validated)

    def update(self, instance: Geofence, validated: dict[str, Any]) -> Geofence:
        return self._save(validated)

    def _save(self, validated: dict[str, Any]) -> Geofence:
        fence: Geofence = validated["_fence"]
        fence.save()
        if "trackers" in validated:
            fence.trackers.set(validated["trackers"])
        return fence


class GeofenceFeatureSerializer(serializers.BaseSerializer):
    """A fence as a GeoJSON Feature: its outline (circles as polygons), id, name and kind."""

    def to_representation(self, fence: Geofence) -> dict[str, Any]:
        outline = (
            geometry_json(fence.area)
            if fence.kind == FenceKind.POLYGON
            else circle_outline(fence.center, fence.radius_m)
        )
        return {
            "type": "Feature",
            "id": fence.pk,
            "geometry": outline,
            "properties": {"id": fence.pk, "name": fence.name, "kind": fence.kind},
        }
