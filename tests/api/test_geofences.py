"""/api/v1/geofences: CRUD with GeoJSON geometry, circles as centre and radius, the model's
shape validation as 400s naming the field, and the GeoJSON FeatureCollection list."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from geofences.models import FenceKind, Geofence
from tests.factories import TrackerFactory

pytestmark = pytest.mark.django_db

SQUARE = {
    "type": "Polygon",
    "coordinates": [[[13.0, 52.0], [13.1, 52.0], [13.1, 52.1], [13.0, 52.1], [13.0, 52.0]]],
}
CIRCLE = {"name": "home", "center": {"latitude": 52.5, "longitude": 13.4}, "radius_m": 300}


def create(client: APIClient, body: dict[str, Any]) -> Any:
    return client.post("/api/v1/geofences", body, format="json")


def test_create_a_circle_by_centre_and_radius(alice: Any, alice_client: APIClient) -> None:
    response = create(alice_client, CIRCLE)
    assert response.status_code == 201, response.content
    data = response.json()["data"]
    assert data["kind"] == "circle"
    assert data["center"] == {"latitude": 52.5, "longitude": 13.4}
    assert data["geometry"] == {"type": "Point", "coordinates": [13.4, 52.5]}
    fence = Geofence.objects.get(pk=data["id"])
    assert (fence.owner, fence.radius_m, fence.center.x) == (alice, 300, 13.4)
    assert fence.shape is not None  # what membership queries use


def test_create_a_circle_by_geojson_point(alice_client: APIClient) -> None:
    body = {"name": "p", "geometry": {"type": "Point", "coordinates": [2.35, 48.85]}}
    response = create(alice_client, {**body, "radius_m": 50})
    assert response.json()["data"]["center"] == {"latitude": 48.85, "longitude": 2.35}


def test_create_a_polygon(alice_client: APIClient) -> None:
    response = create(alice_client, {"name": "yard", "geometry": SQUARE, "trackers": []})
    data = response.json()["data"]
    assert (data["kind"], data["geometry"], data["center"]) == ("polygon", SQUARE, None)
    assert Geofence.objects.get().area.num_coords == 5


def test_patch_changes_shape_and_trackers(alice: Any, alice_client: APIClient) -> None:
    fence_id = create(alice_client, CIRCLE).json()["data"]["id"]
    tracker = TrackerFactory(owner=alice)
    url = f"/api/v1/geofences/{fence_id}"
    data = alice_client.patch(url, {"radius_m": 900, "trackers": [tracker.pk]}, format="json")
    assert (data.json()["data"]["radius_m"], data.json()["data"]["trackers"]) == (900, [tracker.pk])
    data = alice_client.patch(url, {"geometry": SQUARE}, format="json").json()["data"]
    fence = Geofence.objects.get()
    assert (data["kind"], fence.kind, fence.center, fence.radius_m) == (
        "polygon",
        FenceKind.POLYGON,
        None,
        None,
    )


def test_delete(alice_client: APIClient) -> None:
    fence_id = create(alice_client, CIRCLE).json()["data"]["id"]
    assert alice_client.delete(f"/api/v1/geofences/{fence_id}").status_code == 204
    assert not Geofence.objects.exists()


OPEN_RING = {"type": "Polygon", "coordinates": [[[13, 52], [13.1, 52], [13.1, 52.1], [13, 52.1]]]}
BOWTIE = {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}
HUGE = {
    "type": "Polygon",
    "coordinates": [[[-170, -60], [170, -60], [170, 60], [-170, 60], [-170, -60]]],
}


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"name": "x", "geometry": OPEN_RING}, "geometry", "closed"),
        ({"name": "x", "geometry": BOWTIE}, "geometry", "not simple"),
        ({"name": "x", "geometry": HUGE}, "geometry", "larger than"),
        ({"name": "x", "geometry": {"type": "LineString", "coordinates": []}}, "geometry", "type"),
        ({"name": "x", "geometry": "POLYGON((0 0,1 0,1 1,0 0))"}, "geometry", "GeoJSON"),
        ({"name": "x", "geometry": {"type": "Point", "coordinates": [200, 0]}}, "geometry", "off"),
        (
            {"name": "x", "geometry": {"type": "Polygon", "coordinates": [[["a", 1]]]}},
            "geometry",
            "numbers",
        ),
        ({**CIRCLE, "radius_m": 0}, "radius_m", "radius"),
        ({**CIRCLE, "radius_m": 10_000_000}, "radius_m", "radius"),
        ({**CIRCLE, "radius_m": None}, "radius_m", "radius"),
        ({"name": "x", "radius_m": 10}, "center", "needs a centre"),
        ({"name": "x"}, "geometry", "Polygon"),
        ({**CIRCLE, "center": {"latitude": 91, "longitude": 0}}, "center.latitude", ""),
        ({**CIRCLE, "center": {"lat": 1, "longitude": 0}}, "center.lat", "unknown"),
        ({**CIRCLE, "geometry": SQUARE}, "center", "not both"),
        ({"name": "x", "geometry": SQUARE, "radius_m": 5}, "radius_m", "no radius"),
        ({**CIRCLE, "time_zone": "Mars/Olympus"}, "time_zone", "unknown time zone"),
        ({**CIRCLE, "schedule": {"funday": []}}, "schedule", "weekday"),
        ({**CIRCLE, "name": ""}, "name", ""),
        ({**CIRCLE, "kind": "polygon"}, "kind", "read-only"),
        ({**CIRCLE, "colour": "red"}, "colour", "unknown"),
    ],
)
def test_bad_fences_are_400_naming_the_field(
    alice_client: APIClient, body: dict[str, Any], field: str, words: str
) -> None:
    response = create(alice_client, body)
    assert response.status_code == 400, response.content
    fields = response.json()["error"]["fields"]
    assert field in fields, fields
    assert words in " ".join(fields[field])
    assert not Geofence.objects.exists()


def test_another_users_tracker_cannot_be_assigned(bob: Any, alice_client: APIClient) -> None:
    bobs = TrackerFactory(owner=bob)
    response = create(alice_client, {**CIRCLE, "trackers": [bobs.pk]})
    assert response.status_code == 400
    assert list(response.json()["error"]["fields"]) == ["trackers"]
    assert not Geofence.objects.exists()


def test_bad_patch_leaves_the_fence_alone(alice_client: APIClient) -> None:
    fence_id = create(alice_client, CIRCLE).json()["data"]["id"]
    response = alice_client.patch(
        f"/api/v1/geofences/{fence_id}", {"geometry": BOWTIE}, format="json"
    )
    assert response.status_code == 400
    fence = Geofence.objects.get()
    assert (fence.kind, fence.radius_m) == (FenceKind.CIRCLE, 300)


def test_geojson_list_is_a_feature_collection_with_circles_as_polygons(
    alice_client: APIClient,
) -> None:
    create(alice_client, CIRCLE)
    create(alice_client, {"name": "yard", "geometry": SQUARE})
    response = alice_client.get("/api/v1/geofences?format=geojson")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/geo+json")
    body = response.json()
    assert body["type"] == "FeatureCollection"
    circle, square = body["features"]
    assert circle["properties"]["kind"] == "circle"
    assert circle["geometry"]["type"] == "Polygon"
    ring = circle["geometry"]["coordinates"][0]
    assert ring[0] == ring[-1]
    assert len(ring) == 65
    # Every corner about 300 m from the centre (52.5 N: 1 degree of latitude ~ 111.2 km).
    assert all(abs(abs(lat - 52.5) * 111_200) <= 301 for _, lat in ring)
    assert max(lat for _, lat in ring) == pytest.approx(52.5 + 300 / 111_200, abs=1e-4)
    assert square["geometry"] == SQUARE
    assert square["properties"] == {"id": square["id"], "name": "yard", "kind": "polygon"}


def test_geojson_errors_are_still_enveloped_json(anon_client: APIClient) -> None:
    response = anon_client.get("/api/v1/geofences?format=geojson")
    assert response.status_code == 401
    assert response["Content-Type"].startswith("application/json")
    assert response.json()["error"]["code"] == "not_authenticated"


@pytest.mark.parametrize(
    ("center", "field"),
    [({}, "center.latitude"), ({"latitude": 1}, "center.longitude"), ("north", "center")],
)
def test_patch_with_an_incomplete_centre_is_400(
    alice_client: APIClient, center: Any, field: str
) -> None:
    fence_id = create(alice_client, CIRCLE).json()["data"]["id"]
    url = f"/api/v1/geofences/{fence_id}"
    response = alice_client.patch(url, {"center": center}, format="json")
    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]
