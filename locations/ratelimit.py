"""One rate limit for the whole deployment, kept in PostgreSQL.

Nominatim allows one request per second summed over every client of an application; geopy's
RateLimiter counts per process, so N processes would send N per second. Here a process may
send only after winning a compare-and-set on the provider's `last_request_at` row: the
UPDATE succeeds only when the last request (any process's, on any machine) is at least one
interval old by the database clock, and stamps the new one in the same statement. Losers
sleep until that request's interval is over and try again. The stamp is the moment of
sending, not a reserved future slot, so a process that sleeps late never squeezes the next
one closer than an interval. No Redis needed: every process already has the database.
"""

from __future__ import annotations

import random
import threading
import time

from django.db import connection

from .models import GeocoderState

# Requests are spaced this much wider than 1/rate, to absorb the few milliseconds between
# winning the stamp and the request leaving the machine (scheduling, a busy core).
SPACING_MARGIN = 1.05
MAX_SLEEP = 0.5  # seconds per wait, so a stop request is seen within a second

_TAKE_SQL = """
UPDATE locations_geocoderstate SET last_request_at = clock_timestamp()
WHERE provider = %(provider)s AND (
    last_request_at IS NULL
    OR last_request_at <= clock_timestamp() - make_interval(secs => %(interval)s)
)
"""
_WAIT_SQL = """
SELECT EXTRACT(EPOCH FROM last_request_at + make_interval(secs => %(interval)s)
                          - clock_timestamp())
FROM locations_geocoderstate WHERE provider = %(provider)s
"""


def ensure_state(provider: str) -> None:
    """The provider's shared row (rate limit and breaker), created on first use."""
    GeocoderState.objects.get_or_create(provider=provider)


class SharedRateLimiter:
    """At most `rate` requests per second to `provider`, across every process and machine."""

    def __init__(self, provider: str, rate: float) -> None:
        self.provider = provider
        self.interval = SPACING_MARGIN / rate

    def try_acquire(self) -> float:
        """0.0 when this process may send now (and the send is stamped); else seconds to wait."""
        params = {"provider": self.provider, "interval": self.interval}
        with connection.cursor() as cursor:
            cursor.execute(_TAKE_SQL, params)
            if cursor.rowcount == 1:
                return 0.0
            cursor.execute(_WAIT_SQL, params)
            row = cursor.fetchone()
        if row is None:  # no row yet: the next try creates none, so make it
            ensure_state(self.provider)
            return 0.001
        return max(float(row[0] or 0.0), 0.001)

    def acquire(self, stop: threading.Event | None = None, timeout: float | None = None) -> bool:
        """Wait for our turn; False if `stop` was set or `timeout` seconds passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = self.try_acquire()
            if wait == 0.0:
                return True
            # A little jitter so that waiters woken together do not collide every time.
            wait = min(wait + random.uniform(0, 0.01), MAX_SLEEP)  # noqa: S311 - not crypto
            if deadline is not None and time.monotonic() + wait > deadline:
                return False
            if stop is not None:
                if stop.wait(wait):
                    return False
            else:
                time.sleep(wait)
