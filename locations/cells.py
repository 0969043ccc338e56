"""The cell grid of the geocoding cache, and distances.

Coordinates are rounded to cells of GEOCODE_CELL_METERS: rows of that many metres of
latitude, each cut into columns that many metres wide at the row's centre latitude. An
address is looked up at a cell's centre, so it belongs to the cell, not to the first report
that fell in it. The key names the size ("25:209281:14871"), so a changed GEOCODE_CELL_METERS
never mixes cells of two sizes; the offline provider's cells carry the prefix "offline:" and
their own size, GEOCODE_OFFLINE_CELL_METERS: its answers are a town, not a street, so a
street-sized cell would only ask it the same question again a few metres further on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from django.conf import settings

METERS_PER_DEGREE = 111_320.0
EARTH_RADIUS_M = 6_371_008.8
OFFLINE_NAMESPACE = "offline:"
ACCURACY_REUSE_CAP_M = 1000  # Find My's poorest fixes are about a kilometre


@dataclass(frozen=True)
class Cell:
    """One cell of the grid: its key, its centre (where it is looked up) and its bounds."""

    key: str
    latitude: float
    longitude: float
    south: float
    west: float
    north: float
    east: float


def cell_of(
    latitude: float, longitude: float, size: int | None = None, namespace: str = ""
) -> Cell:
    """The cell of a point: rows of `size` metres of latitude, each cut into columns `size`
    metres wide at the row's centre. The key names the size, so changing
    GEOCODE_CELL_METERS never mixes cells of two sizes."""
    size = size or cell_size(namespace)
    lat_step = size / METERS_PER_DEGREE
    row = math.floor(latitude / lat_step)
    centre_lat = max(min((row + 0.5) * lat_step, 90.0), -90.0)
    lon_step = min(size / (METERS_PER_DEGREE * max(math.cos(math.radians(centre_lat)), 1e-9)), 360)
    col = math.floor(longitude / lon_step)
    return Cell(
        f"{namespace}{size}:{row}:{col}",
        centre_lat,
        (col + 0.5) * lon_step,
        row * lat_step,
        col * lon_step,
        (row + 1) * lat_step,
        (col + 1) * lon_step,
    )


def cell_size(namespace: str = "") -> int:
    """Metres across the cells of a namespace: the offline provider's, or the provider's."""
    if namespace == OFFLINE_NAMESPACE:
        return settings.GEOCODE_OFFLINE_CELL_METERS
    return settings.GEOCODE_CELL_METERS


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def degrees_around(latitude: float, meters: float) -> tuple[float, float]:
    """(longitude, latitude) degrees that cover `meters` around a point: a bounding box an
    index can use before the exact distance is checked."""
    cos_lat = max(math.cos(math.radians(min(abs(latitude), 89.9))), 0.001)
    return meters / (METERS_PER_DEGREE * cos_lat), meters / METERS_PER_DEGREE


def reuse_radius(accuracy: int) -> float:
    """How far a report may be from an address to take it without a lookup."""
    reuse = settings.GEOCODE_REUSE_METERS
    return float(max(reuse, min(accuracy, ACCURACY_REUSE_CAP_M))) if reuse else 0.0
