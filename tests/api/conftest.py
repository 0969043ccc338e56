"""Fixtures of the API tests: users `alice` and `bob` (owners) and `staff`, each with a
token, and `rest_framework.test.APIClient`s that send it (`Authorization: Bearer ...`)."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from tests.factories import UserFactory, client_for


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
