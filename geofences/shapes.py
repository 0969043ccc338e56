"""Validation of a geofence's shape: the right fields for its kind, closed, simple, sane size."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection

if TYPE_CHECKING:
    from .models import Geofence


def geodesic_area_km2(polygon_wkt: str) -> float:
    """The polygon's area on the spheroid (PostGIS geography), in km²."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT ST_Area(ST_GeogFromText(%s)) / 1e6", [polygon_wkt])
        return float(cursor.fetchone()[0])


def check_shape(fence: Geofence) -> None:
    """ValidationError naming the field at fault, or nothing."""
    from .models import FenceKind

    if fence.kind == FenceKind.CIRCLE:
        errors = {}
        if fence.center is None:
            errors["center"] = "a circle needs a centre"
        elif not (-90 <= fence.center.y <= 90 and -180 <= fence.center.x <= 180):
            errors["center"] = "the centre is off the globe (longitude, latitude in degrees)"
        limit = settings.GEOFENCE_MAX_RADIUS_M
        if fence.radius_m is None or not (1 <= fence.radius_m <= limit):
            errors["radius_m"] = f"a circle's radius is 1 to {limit:g} metres"
        if fence.area is not None:
            errors["area"] = "a circle has no area polygon"
        if errors:
            raise ValidationError(errors)
        return
    if fence.kind != FenceKind.POLYGON:
        raise ValidationError({"kind": "circle or polygon"})
    if fence.center is not None or fence.radius_m is not None:
        raise ValidationError({"center": "a polygon has no centre or radius"})
    area = fence.area
    if area is None:
        raise ValidationError({"area": "a polygon needs its area"})
    if len(area) != 1:
        raise ValidationError({"area": "one outer ring, no holes"})
    ring = area[0]
    if len(ring) < 4 or ring[0] != ring[-1]:
        raise ValidationError({"area": "the ring must be closed and have at least 3 corners"})
    if any(not (-90 <= y <= 90 and -180 <= x <= 180) for x, y in ring):
        raise ValidationError({"area": "a corner is off the globe (longitude, latitude)"})
    if not area.valid or not ring.simple:
        raise ValidationError({"area": f"the polygon is not simple: {area.valid_reason}"})
    km2 = geodesic_area_km2(area.wkt)
    if km2 > settings.GEOFENCE_MAX_AREA_KM2:
        raise ValidationError(
            {
                "area": f"{km2:,.0f} km² is larger than GEOFENCE_MAX_AREA_KM2 "
                f"({settings.GEOFENCE_MAX_AREA_KM2:,} km²)"
            }
        )
