"""Fixtures of the API tests: users `alice` and `bob` (owners) and `staff`, each with a
token, and `rest_framework.test.APIClient`s that send it (`Authorization: Bearer ...`)."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from api.auth import create_token
from tests.factories import UserFactory


@pytest.fixture(autouse=True)
def _api_rates(settings: Any) -> None:
    # Test processes share Redis (and users of different test databases share ids): limits
    # only where a test sets them.
    settings.API_THROTTLE_USER_RATE = "100000/min"
    settings.API_THROTTLE_ANON_RATE = "100000/min"


@pytest.fixture
def alice(db: None) -> Any:
    return UserFactory(username="alice")


@pytest.fixture
def bob(db: None) -> Any:
    return UserFactory(username="bob")


@pytest.fixture
def staff(db: None) -> Any:
    return UserFactory(username="staff", is_staff=True)


def client_for(user: Any) -> APIClient:
    """An APIClient authenticated with a new token of `user` (`client.token` holds it)."""
    _, token = create_token(user, f"{user.username}'s test token", None)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    client.token = token  # type: ignore[attr-defined]
    return client


@pytest.fixture
def alice_client(alice: Any) -> APIClient:
    return client_for(alice)


@pytest.fixture
def bob_client(bob: Any) -> APIClient:
    return client_for(bob)


@pytest.fixture
def staff_client(staff: Any) -> APIClient:
    return client_for(staff)


@pytest.fixture
def anon_client() -> APIClient:
    return APIClient()
