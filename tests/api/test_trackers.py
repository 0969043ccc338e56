"""/api/v1/trackers: list, retrieve, PATCH, import by upload (as import_trackers)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.gis.geos import Point
from django.core.files.uploadedfile import SimpleUploadedFile
from findmy import KeyPair
from rest_framework.test import APIClient

from geofences.models import FenceKind, Geofence
from tests.factories import ProductionRunFactory, TrackerFactory
from trackers.models import Tracker

pytestmark = pytest.mark.django_db

SECRET_FIELDS = {"key_material", "hashed_adv_key", "private_key", "key"}


def fence(owner: Any, name: str = "home") -> Geofence:
    return Geofence.objects.create(
        owner=owner, name=name, kind=FenceKind.CIRCLE, center=Point(13.4, 52.5), radius_m=300
    )


def upload(client: APIClient, text: str, name: str = "keys.json", **fields: Any) -> Any:
    file = SimpleUploadedFile(name, text.encode(), content_type="application/octet-stream")
    return client.post("/api/v1/trackers", {"file": file, **fields}, format="multipart")


def test_list_and_detail_show_no_key_material(alice: Any, alice_client: APIClient) -> None:
    tracker = TrackerFactory(owner=alice, name="bike", last_position=Point(13.4, 52.5))
    listed = alice_client.get("/api/v1/trackers").json()["data"]["results"]
    detail = alice_client.get(f"/api/v1/trackers/{tracker.pk}").json()["data"]
    assert listed == [detail]
    assert detail["name"] == "bike"
    assert detail["last_position"] == {"latitude": 52.5, "longitude": 13.4}
    assert not SECRET_FIELDS & set(detail)
    assert tracker.hashed_adv_key not in json.dumps(detail)


def test_patch_renames_and_deactivates(alice: Any, alice_client: APIClient) -> None:
    tracker = TrackerFactory(owner=alice, name="old")
    response = alice_client.patch(
        f"/api/v1/trackers/{tracker.pk}", {"name": " new ", "is_active": False}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["data"]["name"] == "new"
    tracker.refresh_from_db()
    assert (tracker.name, tracker.is_active) == ("new", False)


def test_patch_assigns_my_fences(alice: Any, alice_client: APIClient) -> None:
    tracker, home, work = TrackerFactory(owner=alice), fence(alice), fence(alice, "work")
    url = f"/api/v1/trackers/{tracker.pk}"
    response = alice_client.patch(url, {"geofences": [home.pk, work.pk]}, format="json")
    assert sorted(response.json()["data"]["geofences"]) == sorted([home.pk, work.pk])
    alice_client.patch(url, {"geofences": [work.pk]}, format="json")
    assert list(tracker.geofences.values_list("pk", flat=True)) == [work.pk]


def test_patch_refuses_another_users_fence(alice: Any, bob: Any, alice_client: APIClient):
    tracker, bobs = TrackerFactory(owner=alice), fence(bob)
    response = alice_client.patch(
        f"/api/v1/trackers/{tracker.pk}", {"geofences": [bobs.pk]}, format="json"
    )
    assert response.status_code == 400
    assert list(response.json()["error"]["fields"]) == ["geofences"]
    assert str(bobs.pk) in response.json()["error"]["fields"]["geofences"][0]
    assert not tracker.geofences.exists()


def test_staff_cannot_give_a_tracker_another_owners_fence(
    alice: Any, bob: Any, staff_client: APIClient
) -> None:
    tracker, bobs = TrackerFactory(owner=alice), fence(bob)
    response = staff_client.patch(
        f"/api/v1/trackers/{tracker.pk}", {"geofences": [bobs.pk]}, format="json"
    )
    assert response.status_code == 400
    assert "owner" in response.json()["error"]["fields"]["geofences"][0]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x" * 201}, "name"),
        ({"name": "bad\x00name"}, "name"),
        ({"is_active": "maybe"}, "is_active"),
        ({"kind": "accessory"}, "kind"),
        ({"key_material": {}}, "key_material"),
        ({"geofences": ["x"]}, "geofences"),
    ],
)
def test_bad_patch_is_400_naming_the_field(
    alice: Any, alice_client: APIClient, body: dict[str, Any], field: str
) -> None:
    tracker = TrackerFactory(owner=alice, name="same")
    response = alice_client.patch(f"/api/v1/trackers/{tracker.pk}", body, format="json")
    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]
    tracker.refresh_from_db()
    assert tracker.name == "same"


def test_import_creates_my_trackers_and_skips_known_keys(
    alice: Any, alice_client: APIClient
) -> None:
    known, fresh = KeyPair.new(), KeyPair.new()
    TrackerFactory(key=known, owner=alice, name="known")
    rows = f"name,private_key\nold,{known.private_key_b64}\nnew,{fresh.private_key_b64}\n"
    response = upload(alice_client, rows, "keys.csv")
    assert response.status_code == 201, response.content
    data = response.json()["data"]
    created = Tracker.objects.get(hashed_adv_key=fresh.hashed_adv_key_b64)
    assert data["created"] == [{"id": created.pk, "name": "new", "where": "line 3"}]
    assert [s["name"] for s in data["skipped"]] == ["old"]
    assert created.owner == alice
    assert KeyPair.from_json(created.key_material).private_key_bytes == fresh.private_key_bytes


def test_import_reads_findmy_json_and_a_production_run(alice: Any, alice_client: APIClient):
    ProductionRunFactory(name="batch-7")
    keys = [KeyPair.new() for _ in range(2)]
    text = json.dumps([{**dict(k.to_json()), "name": f"t{i}"} for i, k in enumerate(keys)])
    response = upload(alice_client, text, production_run="batch-7")
    assert response.status_code == 201
    assert sorted(Tracker.objects.filter(owner=alice).values_list("name", flat=True)) == [
        "t0",
        "t1",
    ]
    assert set(Tracker.objects.values_list("production_run__name", flat=True)) == {"batch-7"}


def test_import_is_all_or_nothing(alice: Any, alice_client: APIClient) -> None:
    good = KeyPair.new()
    rows = f"name,private_key\ngood,{good.private_key_b64}\nbad,not-base64!\n"
    response = upload(alice_client, rows, "keys.csv")
    assert response.status_code == 400
    messages = response.json()["error"]["fields"]["file"]
    assert len(messages) == 1
    assert messages[0].startswith("line 3")
    assert not Tracker.objects.exists()


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({}, "file"),
        ({"format": "xml"}, "format"),
        ({"production_run": "no-such-run"}, "production_run"),
        ({"owner": "bob"}, "owner"),
    ],
)
def test_bad_import_requests_are_400_naming_the_field(
    alice_client: APIClient, fields: dict[str, Any], field: str
) -> None:
    if field != "file":
        fields["file"] = SimpleUploadedFile("k.json", b"{}")
    response = alice_client.post("/api/v1/trackers", fields, format="multipart")
    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]


def test_binary_upload_is_400(alice_client: APIClient) -> None:
    file = SimpleUploadedFile("k.json", b"\xff\xfe\x00binary")
    response = alice_client.post("/api/v1/trackers", {"file": file}, format="multipart")
    assert response.status_code == 400
    assert "UTF-8" in response.json()["error"]["fields"]["file"][0]


def test_empty_file_is_400(alice_client: APIClient) -> None:
    response = upload(alice_client, "   ")
    assert response.status_code == 400
    assert "file" in response.json()["error"]["fields"]


def test_format_csv_forces_the_csv_reader(alice_client: APIClient) -> None:
    key = KeyPair.new()
    response = upload(
        alice_client, f"name,private_key\nx,{key.private_key_b64}\n", "a.txt", format="csv"
    )
    assert response.status_code == 201
    assert Tracker.objects.get().name == "x"
