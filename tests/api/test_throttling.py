"""The API's request limits: one atomic Redis script per request (GCRA), per token, per
session user and per client IP; DRF's own counting without Redis; open while Redis is down."""

from __future__ import annotations

import threading
import uuid
from types import SimpleNamespace
from typing import Any

import pytest
from django.conf import settings as django_settings
from rest_framework.throttling import SimpleRateThrottle

from api.throttling import AnonIPThrottle, TokenRateThrottle

from .test_search_cache import closed_port, redis_cache

pytestmark = pytest.mark.django_db


def token_request(digest: str | None = None) -> Any:
    """What the throttles read of a request: the user, the token, the client address."""
    user = SimpleNamespace(is_authenticated=True, pk=1)
    auth = SimpleNamespace(digest=digest or uuid.uuid4().hex)
    return SimpleNamespace(user=user, auth=auth, META={"REMOTE_ADDR": "10.0.0.1"})


def admitted_concurrently(throttle_class: type[SimpleRateThrottle], request: Any, n: int) -> int:
    """How many of n simultaneous requests of one client the throttle lets through."""
    barrier = threading.Barrier(n)
    results: list[bool] = []
    lock = threading.Lock()

    def one() -> None:
        throttle = throttle_class()
        barrier.wait()
        allowed = throttle.allow_request(request, None)
        with lock:
            results.append(allowed)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(results)


@pytest.fixture
def redis(settings: Any) -> None:
    assert django_settings.REDIS_URL, "these tests need Redis (REDIS_URL)"
    settings.CACHES = redis_cache(django_settings.REDIS_URL)


def test_concurrent_requests_of_one_token_are_admitted_exactly_up_to_the_rate(
    redis: None, settings: Any
) -> None:
    settings.API_THROTTLE_USER_RATE = "5/min"
    request = token_request()

    assert admitted_concurrently(TokenRateThrottle, request, 20) == 5

    refused = TokenRateThrottle()
    assert refused.allow_request(request, None) is False
    assert 0 < refused.wait() <= 12  # the next one is admitted a fifth of a minute later
    # Another token of the same user has its own allowance.
    assert TokenRateThrottle().allow_request(token_request(), None) is True


def test_a_burst_then_one_request_per_interval(redis: None, settings: Any) -> None:
    settings.API_THROTTLE_USER_RATE = "2/s"
    request = token_request()
    assert [TokenRateThrottle().allow_request(request, None) for _ in range(3)] == [
        True,
        True,
        False,
    ]
    threading.Event().wait(0.6)  # one interval (0.5 s) later: one more, not two
    assert [TokenRateThrottle().allow_request(request, None) for _ in range(2)] == [True, False]


def test_anonymous_clients_are_counted_per_ip(redis: None, settings: Any) -> None:
    settings.API_THROTTLE_ANON_RATE = "1/min"
    anonymous = SimpleNamespace(is_authenticated=False)

    def from_ip(ip: str) -> Any:
        return SimpleNamespace(user=anonymous, auth=None, META={"REMOTE_ADDR": ip}, headers={})

    ip = f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.1"
    assert AnonIPThrottle().allow_request(from_ip(ip), None) is True
    assert AnonIPThrottle().allow_request(from_ip(ip), None) is False
    assert AnonIPThrottle().allow_request(from_ip(ip.replace(".1", ".2", 1)), None) is True


def test_without_redis_drfs_own_counting_still_limits(settings: Any) -> None:
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    settings.API_THROTTLE_USER_RATE = "2/min"
    request = token_request()
    assert [TokenRateThrottle().allow_request(request, None) for _ in range(3)] == [
        True,
        True,
        False,
    ]


def test_while_redis_is_down_requests_pass(settings: Any) -> None:
    settings.CACHES = redis_cache(f"redis://127.0.0.1:{closed_port()}/0")
    settings.API_THROTTLE_USER_RATE = "1/min"
    request = token_request()
    assert [TokenRateThrottle().allow_request(request, None) for _ in range(3)] == [True] * 3
