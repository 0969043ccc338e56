"""API tokens: hashed, named, shown once, revocable at once, last use recorded at most once a
minute; made through the API, the command and the admin."""

from __future__ import annotations

import datetime as dt
import io
from typing import Any

import pytest
import time_machine
from django.core.cache import cache
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from knox.crypto import hash_token
from knox.models import AuthToken
from knox.settings import CONSTANTS
from rest_framework.test import APIClient

from api.auth import forget_recent_uses, record_use
from api.models import TokenDetails

pytestmark = pytest.mark.django_db


def bearer(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def new_token(client: APIClient, **body: Any) -> dict[str, Any]:
    response = client.post("/api/v1/tokens", {"name": "script", **body}, format="json")
    assert response.status_code == 201, response.content
    return response.json()["data"]


def test_created_token_is_shown_once_and_stored_hashed(alice: Any, alice_client: APIClient):
    created = new_token(alice_client, expiry_hours=2)
    token = created["token"]
    stored = AuthToken.objects.get(details__id=created["id"])
    assert stored.digest == hash_token(token) != token
    assert created["name"] == "script"
    assert dt.timedelta(hours=1.9) < stored.expiry - timezone.now() <= dt.timedelta(hours=2)
    listed = alice_client.get("/api/v1/tokens").json()["data"]["results"]
    assert {t["name"] for t in listed} == {"script", "alice's test token"}
    assert all("token" not in t for t in listed)
    assert token not in alice_client.get(f"/api/v1/tokens/{created['id']}").content.decode()


def test_new_token_authenticates_as_its_user(alice: Any, alice_client: APIClient) -> None:
    token = new_token(alice_client)["token"]
    assert bearer(token).get("/api/v1/tokens").status_code == 200


def test_zero_hours_never_expires(alice_client: APIClient) -> None:
    assert new_token(alice_client, expiry_hours=0)["expiry"] is None


def test_revoked_token_is_refused_at_once(alice_client: APIClient) -> None:
    created = new_token(alice_client)
    client = bearer(created["token"])
    assert client.get("/api/v1/trackers").status_code == 200
    assert alice_client.delete(f"/api/v1/tokens/{created['id']}").status_code == 204
    assert client.get("/api/v1/trackers").status_code == 401
    assert not AuthToken.objects.filter(details__id=created["id"]).exists()


def test_a_token_can_revoke_itself(alice_client: APIClient) -> None:
    created = new_token(alice_client)
    client = bearer(created["token"])
    assert client.delete(f"/api/v1/tokens/{created['id']}").status_code == 204
    assert client.get("/api/v1/tokens").status_code == 401


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"name": "ok", "expiry_hours": -1}, "expiry_hours"),
        ({"name": "ok", "expiry_hours": "soon"}, "expiry_hours"),
        ({"name": "ok", "user": 1}, "user"),
        ({}, "name"),
    ],
)
def test_bad_token_requests_are_400_naming_the_field(
    alice_client: APIClient, body: dict[str, Any], field: str
) -> None:
    before = AuthToken.objects.count()
    response = alice_client.post("/api/v1/tokens", body, format="json")
    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]
    assert AuthToken.objects.count() == before


def test_last_use_is_recorded(alice_client: APIClient) -> None:
    created = new_token(alice_client)
    details = TokenDetails.objects.get(pk=created["id"])
    assert details.last_used_at is None
    bearer(created["token"]).get("/api/v1/trackers")
    details.refresh_from_db()
    assert timezone.now() - details.last_used_at < dt.timedelta(seconds=30)
    listed = bearer(created["token"]).get(f"/api/v1/tokens/{created['id']}").json()["data"]
    assert listed["last_used_at"] is not None


def test_last_use_is_written_at_most_once_a_minute(alice_client: APIClient) -> None:
    created = new_token(alice_client)
    token = AuthToken.objects.get(details__id=created["id"])
    start = timezone.now()
    gate = f"api:token-used:{token.digest[:32]}"
    assert record_use(token, start) is True
    assert cache.get(gate) is not None
    cache.delete(gate)
    assert record_use(token, start + dt.timedelta(seconds=10)) is False  # this process knows
    assert cache.get(gate) is None  # ... and asked nobody
    cache.set(gate, 1)
    forget_recent_uses()  # as if another process had stamped it
    assert record_use(token, start + dt.timedelta(seconds=20)) is False  # the cache gate
    cache.delete(gate)  # as if the gate had expired
    forget_recent_uses()
    assert record_use(token, start + dt.timedelta(seconds=40)) is False  # the conditional UPDATE
    cache.delete(gate)
    forget_recent_uses()
    assert record_use(token, start + dt.timedelta(seconds=90)) is True
    assert TokenDetails.objects.get(token=token).last_used_at == start + dt.timedelta(seconds=90)


def test_many_requests_write_last_use_once(alice_client: APIClient) -> None:
    created = new_token(alice_client)
    client = bearer(created["token"])
    client.get("/api/v1/trackers")
    first = TokenDetails.objects.get(pk=created["id"]).last_used_at
    with time_machine.travel(timezone.now() + dt.timedelta(seconds=30)):
        for _ in range(3):
            client.get("/api/v1/trackers")
    assert TokenDetails.objects.get(pk=created["id"]).last_used_at == first


def test_expired_token_is_refused(alice: Any) -> None:
    with time_machine.travel(timezone.now() - dt.timedelta(hours=3)):
        created = new_token(bearer_for(alice), expiry_hours=1)
    assert bearer(created["token"]).get("/api/v1/trackers").status_code == 401
    assert not TokenDetails.objects.filter(pk=created["id"]).exists()  # deleted on use


def test_expired_tokens_are_not_listed(alice: Any) -> None:
    with time_machine.travel(timezone.now() - dt.timedelta(hours=3)):
        expired = new_token(bearer_for(alice), expiry_hours=1)
    live = new_token(bearer_for(alice), expiry_hours=1)
    client = bearer_for(alice)
    listed = [t["id"] for t in client.get("/api/v1/tokens").json()["data"]["results"]]
    assert listed == [live["id"]]
    assert client.get(f"/api/v1/tokens/{expired['id']}").status_code == 404


def test_a_request_reads_only_its_own_token(alice: Any, django_assert_max_num_queries) -> None:
    """Authentication costs the token's lookup, never a read of the user's other tokens."""
    for _ in range(3):
        new_token(bearer_for(alice), expiry_hours=1)
    client = bearer(new_token(bearer_for(alice))["token"])
    client.get("/api/v1/me")  # the last-use stamp of the first request
    with django_assert_max_num_queries(1):
        assert client.get("/api/v1/me").status_code == 200


def test_an_inactive_users_token_is_refused(alice: Any) -> None:
    client = bearer(new_token(bearer_for(alice))["token"])
    assert client.get("/api/v1/me").status_code == 200
    alice.is_active = False
    alice.save()
    assert client.get("/api/v1/me").status_code == 401


def test_a_token_with_a_known_prefix_and_a_wrong_rest_is_refused(alice: Any) -> None:
    token = new_token(bearer_for(alice))["token"]
    forged = token[: CONSTANTS.TOKEN_KEY_LENGTH] + ("0" if token[-1] != "0" else "1") * (
        len(token) - CONSTANTS.TOKEN_KEY_LENGTH
    )
    assert bearer(forged).get("/api/v1/me").status_code == 401
    assert bearer(token).get("/api/v1/me").status_code == 200


def bearer_for(user: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_session_user_creates_a_token_with_csrf(alice: Any) -> None:
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(alice)
    client.get("/admin/login/")  # sets the CSRF cookie
    csrf = client.cookies["csrftoken"].value
    response = client.post(
        "/api/v1/tokens", {"name": "from the browser"}, format="json", HTTP_X_CSRFTOKEN=csrf
    )
    assert response.status_code == 201
    assert bearer(response.json()["data"]["token"]).get("/api/v1/tokens").status_code == 200


# --- the command --------------------------------------------------------------------------
def run_command(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("create_api_token", *args, stdout=out, stderr=err)
    return out.getvalue().strip(), err.getvalue()


def test_command_prints_a_named_token_once(alice: Any) -> None:
    token, message = run_command("alice", "--name", "backup job", "--expiry-hours", "5")
    assert token not in message
    details = TokenDetails.objects.select_related("token").get(name="backup job")
    assert details.token.digest == hash_token(token)
    assert "backup job" in message
    assert bearer(token).get("/api/v1/trackers").status_code == 200


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("nobody", "--name", "x"), "no user named"),
        (("alice", "--name", ""), "needs a name"),
        (("alice", "--name", "   "), "needs a name"),
        (("alice", "--name", "x" * 101), "at most 100"),
        (("alice", "--expiry-hours", "-1"), "--expiry-hours"),
    ],
)
def test_command_refuses_bad_input(alice: Any, args: tuple[str, ...], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        run_command(*args)
    assert not AuthToken.objects.filter(user=alice).exists()


# --- the admin ----------------------------------------------------------------------------
def test_admin_shows_the_new_token_once(staff: Any, alice: Any) -> None:
    staff.is_superuser = True
    staff.save()
    client = Client()
    client.force_login(staff)
    add = reverse("admin:knox_authtoken_add")
    response = client.post(add, {"user": alice.pk, "name": "grafana", "expiry_hours": 24})
    assert response.status_code == 200
    details = TokenDetails.objects.select_related("token").get(name="grafana")
    token = response.context["token"]
    assert details.token.digest == hash_token(token)
    assert details.token.user == alice
    assert token in response.content.decode()
    assert "no-store" in response["Cache-Control"]  # the admin's never_cache
    listing = client.get(reverse("admin:knox_authtoken_changelist")).content.decode()
    assert "grafana" in listing
    assert token not in listing
    change = reverse("admin:knox_authtoken_change", args=[details.token.pk])
    assert token not in client.get(change).content.decode()
    assert bearer(token).get("/api/v1/trackers").status_code == 200


def test_admin_revokes_by_deleting(staff: Any, alice: Any) -> None:
    staff.is_superuser = True
    staff.save()
    _, token = run_command("alice", "--name", "old")
    digest = hash_token(token)
    client = Client()
    client.force_login(staff)
    delete = reverse("admin:knox_authtoken_delete", args=[digest])
    assert client.post(delete, {"post": "yes"}).status_code == 302
    assert bearer(token).get("/api/v1/trackers").status_code == 401
