"""Exports: GeoJSON, GPX 1.1 and CSV, streamed from a server-side cursor, and parsed back."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import tracemalloc
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from django.contrib.gis.geos import Point
from django.db import connection
from django.http import StreamingHttpResponse

from api.formats import EXTENSIONS_NS
from locations.models import Address

from ..factories import TrackerFactory
from .test_locations import DAY, T0, add_report, bulk_reports, fields_of, url

pytestmark = pytest.mark.django_db

GPX = "{http://www.topografix.com/GPX/1/1}"
TF = f"{{{EXTENSIONS_NS}}}"


@pytest.fixture(autouse=True)
def _no_search_cache(settings: Any) -> None:
    settings.API_SEARCH_CACHE_SECONDS = 0


def body_of(response: Any) -> bytes:
    assert response.status_code == 200, response.content
    assert isinstance(response, StreamingHttpResponse)
    return b"".join(response.streaming_content)


@pytest.fixture
def track(alice: Any) -> dict[str, Any]:
    """Two trackers of alice with reports in DAY, one report with a tricky address."""
    van = TrackerFactory(owner=alice, name="<Tom & Jerry>\x01")
    bike = TrackerFactory(owner=alice, name="bike")
    tricky = Address.objects.create(
        cell="25:9:9", provider="offline", label='Rue "A", 1\nParis', point=Point(2.35, 48.85)
    )
    reports = [
        add_report(van, T0 + dt.timedelta(minutes=1), lat=48.85, lon=2.35, address=tricky),
        add_report(bike, T0 + dt.timedelta(minutes=2), lat=-33.9, lon=151.2),
        add_report(van, T0 + dt.timedelta(minutes=3), lat=0.00001, lon=-0.00001),
    ]
    return {"van": van, "bike": bike, "reports": reports}


def test_geojson_is_a_feature_collection_in_lon_lat_order(alice_client, track):
    response = alice_client.get(url("locations", format="geojson", **DAY))

    body = json.loads(body_of(response))
    assert response["Content-Type"] == "application/geo+json"
    assert response["Content-Disposition"] == (
        'attachment; filename="locations-20261101T000000Z-20261102T000000Z.geojson"'
    )
    assert body["type"] == "FeatureCollection"
    assert [f["id"] for f in body["features"]] == [r.id for r in track["reports"]]
    first = body["features"][0]
    assert first["type"] == "Feature"
    assert first["geometry"] == {"type": "Point", "coordinates": [2.35, 48.85]}
    assert first["properties"] == {
        "id": track["reports"][0].id,
        "tracker": track["van"].id,
        "timestamp": "2026-11-01T00:01:00Z",
        "latitude": 48.85,
        "longitude": 2.35,
        "accuracy": 10,
        "confidence": 2,
        "status": 0,
        "address": 'Rue "A", 1\nParis',
    }
    assert body["features"][2]["geometry"]["coordinates"] == [-0.00001, 0.00001]


def test_gpx_has_one_track_per_tracker_with_time_and_accuracy(alice_client, track):
    response = alice_client.get(url("locations", format="gpx", **DAY))

    root = ET.fromstring(body_of(response))  # noqa: S314  (our own output)
    assert response["Content-Type"] == "application/gpx+xml"
    assert response["Content-Disposition"].endswith('.gpx"')
    assert root.tag == f"{GPX}gpx"
    assert root.get("version") == "1.1"
    tracks = root.findall(f"{GPX}trk")
    assert [t.findtext(f"{GPX}name") for t in tracks] == ["<Tom & Jerry>\ufffd", "bike"]
    van_points = tracks[0].findall(f"{GPX}trkseg/{GPX}trkpt")
    assert len(tracks[0].findall(f"{GPX}trkseg")) == 1
    assert [(p.get("lat"), p.get("lon")) for p in van_points] == [
        ("48.8500000", "2.3500000"),
        ("0.0000100", "-0.0000100"),  # never 1e-05: GPX coordinates are xsd:decimal
    ]
    first = van_points[0]
    assert first.findtext(f"{GPX}time") == "2026-11-01T00:01:00Z"
    assert first.findtext(f"{GPX}extensions/{TF}accuracy") == "10"
    assert first.findtext(f"{GPX}extensions/{TF}address") == 'Rue "A", 1\nParis'
    assert first.findtext(f"{GPX}extensions/{TF}report") == str(track["reports"][0].id)
    assert tracks[1].findtext(f"{GPX}extensions/{TF}tracker") == str(track["bike"].id)


def test_csv_has_a_header_and_rfc_4180_quoting(alice_client, track):
    response = alice_client.get(url(f"trackers/{track['van'].id}/locations", format="csv", **DAY))

    raw = body_of(response).decode()
    assert response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"] == (
        f'attachment; filename="tracker-{track["van"].id}-locations-20261101T000000Z-'
        '20261102T000000Z.csv"'
    )
    assert raw.startswith("id,tracker,timestamp,latitude,longitude,accuracy,confidence,status")
    assert raw.endswith("\r\n")
    assert '"Rue ""A"", 1\nParis"' in raw  # quoted, quotes doubled, the line break kept
    rows = list(csv.DictReader(io.StringIO(raw, newline="")))
    assert [int(r["id"]) for r in rows] == [track["reports"][0].id, track["reports"][2].id]
    assert rows[0]["address"] == 'Rue "A", 1\nParis'
    assert (float(rows[0]["latitude"]), float(rows[0]["longitude"])) == (48.85, 2.35)
    assert rows[1]["address"] == ""
    assert rows[1]["timestamp"] == "2026-11-01T00:03:00Z"


@pytest.mark.parametrize("fmt", ["geojson", "gpx", "csv"])
def test_an_empty_range_is_a_valid_empty_document(alice, alice_client, fmt):
    TrackerFactory(owner=alice)

    raw = body_of(alice_client.get(url("locations", format=fmt, **DAY)))

    if fmt == "geojson":
        assert json.loads(raw) == {"type": "FeatureCollection", "features": []}
    elif fmt == "gpx":
        assert ET.fromstring(raw).findall(f"{GPX}trk") == []  # noqa: S314
    else:
        assert (
            raw == b"id,tracker,timestamp,latitude,longitude,accuracy,confidence,status,address\r\n"
        )


@pytest.mark.parametrize("fmt", ["geojson", "gpx", "csv"])
def test_errors_of_exports_are_enveloped_json(alice, alice_client, fmt):
    tracker = TrackerFactory(owner=alice)
    bad = {**DAY, "starts_at": "2026-11-01T00:00:00"}  # naive

    response = alice_client.get(url(f"trackers/{tracker.id}/locations", format=fmt, **bad))

    assert response["Content-Type"].startswith("application/json")
    assert "starts_at" in fields_of(response)


def test_another_users_export_is_not_found(alice, bob_client):
    tracker = TrackerFactory(owner=alice)

    response = bob_client.get(url(f"trackers/{tracker.id}/locations", format="csv", **DAY))

    assert response.status_code == 404


def test_a_100k_row_export_streams_with_flat_memory(alice, alice_client):
    tracker = TrackerFactory(owner=alice)
    bulk_reports([tracker.id], 100_000, T0, seconds=0.5)  # 14 hours, all inside DAY
    response = alice_client.get(url(f"trackers/{tracker.id}/locations", format="geojson", **DAY))
    assert isinstance(response, StreamingHttpResponse)
    size = features = 0
    open_cursors: list[int] = []

    tracemalloc.start()
    try:
        for chunk in response.streaming_content:
            size += len(chunk)
            features += chunk.count(b'"type":"Feature"')
            if not open_cursors:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT count(*) FROM pg_cursors WHERE NOT is_holdable")
                    open_cursors.append(cursor.fetchone()[0])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        response.close()

    assert features == 100_000
    assert size > 20_000_000
    assert open_cursors == [1]  # rows came from a server-side cursor, read as they were sent
    assert peak < size / 10, f"peak {peak:,} bytes for a body of {size:,}"
