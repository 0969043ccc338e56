"""The geocoding provider's circuit breaker, shared by every geocoder through its state row.

Closed -> open after GEOCODE_BREAKER_THRESHOLD failed requests in a row, at once on a 429
(rate limited) or a 401/403 (refused: a provider that blocks us must not be asked again
soon); while open nobody sends. When the cool-down is over one process wins the half-open
probe (a conditional UPDATE, by the database clock); its success closes the circuit, its
failure opens it again for twice as long (at most MAX_COOLDOWN). A prober that dies leaves
a half-open state whose probe lease runs out, and the next process probes instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connection

from .geocoders import ProviderError
from .models import BreakerState, GeocoderState

MAX_COOLDOWN = 3600  # seconds
PROBE_LEASE = 60  # seconds a half-open probe may take before another process probes

_PROBE_SQL = """
UPDATE locations_geocoderstate
SET breaker = %(half_open)s, open_until = clock_timestamp() + make_interval(secs => %(lease)s)
WHERE provider = %(provider)s AND breaker <> %(closed)s AND open_until <= clock_timestamp()
"""

# One statement, so concurrent failures each see the count the other left (the row lock). The
# circuit trips on a failure that opens it at once, at the threshold, or in a half-open probe.
_FAIL_SQL = """
UPDATE locations_geocoderstate SET
    consecutive_failures = consecutive_failures + 1,
    last_error = %(error)s,
    last_failure_at = clock_timestamp(),
    breaker = CASE
        WHEN %(at_once)s OR consecutive_failures + 1 >= %(threshold)s OR breaker = 'half_open'
        THEN 'open' ELSE breaker END,
    open_until = CASE
        WHEN %(at_once)s OR consecutive_failures + 1 >= %(threshold)s OR breaker = 'half_open'
        THEN clock_timestamp() + make_interval(secs => greatest(%(retry_after)s, least(
            %(cooldown)s
                * power(2, least(greatest(consecutive_failures + 1 - %(threshold)s, 0), 10)),
            %(max)s)))
        ELSE open_until END
WHERE provider = %(provider)s
RETURNING breaker
"""


@dataclass(frozen=True)
class BreakerView:
    state: str
    consecutive_failures: int
    open_for_seconds: float
    last_error: str

    def as_figures(self) -> dict[str, Any]:
        return {
            "breaker": self.state,
            "breaker_failures": self.consecutive_failures,
            "breaker_open_seconds": round(self.open_for_seconds, 1),
        }


def allows(provider: str) -> bool:
    """May a request be sent now? Closed: yes; open past its cool-down: yes for the one
    process that wins the half-open probe; otherwise no."""
    params = {
        "provider": provider,
        "half_open": BreakerState.HALF_OPEN,
        "closed": BreakerState.CLOSED,
        "lease": float(PROBE_LEASE),
    }
    with connection.cursor() as cursor:
        cursor.execute(_PROBE_SQL, params)
        if cursor.rowcount == 1:
            return True
        cursor.execute(
            "SELECT breaker FROM locations_geocoderstate WHERE provider = %s", [provider]
        )
        row = cursor.fetchone()
    return row is None or row[0] == BreakerState.CLOSED


def succeeded(provider: str) -> None:
    GeocoderState.objects.filter(provider=provider).exclude(
        breaker=BreakerState.CLOSED, consecutive_failures=0
    ).update(breaker=BreakerState.CLOSED, consecutive_failures=0, open_until=None)


def failed(provider: str, error: ProviderError) -> str:
    """Count a failed request; returns the breaker's state after it."""
    with connection.cursor() as cursor:
        cursor.execute(
            _FAIL_SQL,
            {
                "provider": provider,
                "error": error.message[:2000],
                "at_once": error.opens_breaker_at_once,
                "retry_after": float(error.retry_after or 0.0),
                "cooldown": float(settings.GEOCODE_BREAKER_COOLDOWN),
                "threshold": settings.GEOCODE_BREAKER_THRESHOLD,
                "max": float(MAX_COOLDOWN),
            },
        )
        row = cursor.fetchone()
    return row[0] if row else BreakerState.CLOSED


def view(provider: str) -> BreakerView:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT breaker, consecutive_failures, "
            "GREATEST(EXTRACT(EPOCH FROM open_until - clock_timestamp()), 0), last_error "
            "FROM locations_geocoderstate WHERE provider = %s",
            [provider],
        )
        row = cursor.fetchone()
    if row is None:
        return BreakerView(BreakerState.CLOSED, 0, 0.0, "")
    state, failures, seconds, error = row
    return BreakerView(state, failures, float(seconds or 0.0), error)
