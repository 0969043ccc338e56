"""Request limits of the API, counted in Redis across web processes.

A request with a token is counted per token (two scripts of one user do not starve each
other), a browser session per user, and an anonymous request per client IP. Rates come from
API_THROTTLE_USER_RATE and API_THROTTLE_ANON_RATE, read at each request so that a changed
setting (or a test) takes effect without a restart.

With Redis, a limit is one atomic script call per request (GCRA, the generic cell rate
algorithm: one key holding the "theoretical arrival time", Redis's own clock): `n/period`
admits n requests at once and then one every period/n. DRF's own throttle reads a list of
timestamps, then writes it back: two round trips, a pickled list of up to n floats, and a
race in which concurrent requests of one client all pass (tests/api/test_throttling.py shows
it). Without Redis (a local-memory cache) DRF's throttle counts per process. While Redis is
down, requests are let through (logged), as a cache outage must not take the API down.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

from locations import generations

# KEYS[1]: the limit's key. ARGV: the emission interval and the period, in microseconds.
# Returns 0 when the request is admitted, else the microseconds until one would be.
_GCRA = """
local interval = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local next_tat = tat + interval
if next_tat - now > period then
    return next_tat - now - period
end
redis.call('SET', KEYS[1], next_tat, 'PX', math.ceil((next_tat - now) / 1000))
return 0
"""


class RedisRateThrottle(SimpleRateThrottle):
    """DRF's SimpleRateThrottle, counted by one atomic Redis script when Redis is there."""

    _wait: float | None = None

    def allow_request(self, request: Request, view: Any) -> bool:
        client = generations.redis_client()
        if client is None or self.rate is None:
            return super().allow_request(request, view)
        key = self.get_cache_key(request, view)
        if key is None:
            return True
        period_us = self.duration * 1_000_000
        interval_us = max(period_us // self.num_requests, 1)
        try:
            wait_us = int(
                client.register_script(_GCRA)(
                    keys=[f"{generations.namespace()}:{key}"], args=[interval_us, period_us]
                )
            )
        except generations.REDIS_ERRORS as exc:
            generations.redis_failed(exc, "throttle")
            return True
        if wait_us <= 0:
            return True
        self._wait = wait_us / 1_000_000
        return False

    def wait(self) -> float | None:
        if self._wait is not None:
            return self._wait
        return super().wait()


class TokenRateThrottle(RedisRateThrottle):
    """API_THROTTLE_USER_RATE per token, or per user for a session."""

    scope = "api_user"

    def get_rate(self) -> str:
        return settings.API_THROTTLE_USER_RATE

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        if not request.user or not request.user.is_authenticated:
            return None
        token_key = getattr(request.auth, "digest", None)
        ident = f"token:{token_key}" if token_key else f"user:{request.user.pk}"
        return self.cache_format % {"scope": self.scope, "ident": ident}


class AnonIPThrottle(RedisRateThrottle):
    """API_THROTTLE_ANON_RATE per client IP for requests without credentials."""

    scope = "api_anon"

    def get_rate(self) -> str:
        return settings.API_THROTTLE_ANON_RATE

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        if request.user and request.user.is_authenticated:
            return None
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}
