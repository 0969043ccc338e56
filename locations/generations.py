"""Generation counters in Redis: what invalidates the API's search cache.

Ingest bumps (INCR), once its transaction has committed (`bump_on_commit`), the counter of
every tracker that got a new report, the counter of each of their owners, and one counter
for the whole fleet. The search cache (api/search_cache.py) puts into its key the counters of
what a search covers, read with one MGET:

* named trackers (a tracker's route, `tracker=`): their counters, so a report for another
  tracker leaves the entry valid;
* an owner's whole fleet: the owner's counter (one key, where the counters of 10,000 trackers
  cost tens of milliseconds per request to fetch and read);
* staff's whole fleet (every tracker): the fleet's counter.

Redis is an accelerator here, never a dependency: without a Redis cache (no REDIS_URL) there
are no counters and no search cache; with Redis down, a bump is lost (logged) and a read
answers None (the search runs uncached). A lost bump leaves the affected cached searches stale
for at most API_SEARCH_CACHE_SECONDS, the lifetime of every entry. After a failure this
process leaves Redis alone for RETRY_SECONDS, so an outage costs one connection attempt per
process every few seconds, not one per report batch or request.

Keys live in the default cache's database (db 0) under its KEY_PREFIX and the database name
(`trackerfleet:<db>:gen:tracker:<id>`), so test and benchmark databases sharing a Redis
server never see each other's counters.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Sequence

from django.conf import settings
from django.core.cache import caches
from django.db import DatabaseError, transaction
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

RETRY_SECONDS = 5.0
# What a client call raises when Redis is down, slow or refusing (timeouts, refused
# connections, OOM, read-only replicas).
REDIS_ERRORS = (RedisError, OSError)
# Per cache LOCATION: monotonic time until which this process does not try Redis again.
_down_until: dict[str, float] = {}


def _location() -> str:
    return str(settings.CACHES.get("default", {}).get("LOCATION", ""))


def redis_client():  # -> redis.Redis | None
    """The raw client of the default cache when it is django-redis and not known to be down."""
    from django_redis.cache import RedisCache

    cache = caches["default"]
    if not isinstance(cache, RedisCache):
        return None
    if _down_until.get(_location(), 0.0) > time.monotonic():
        return None
    return cache.client.get_client(write=True)


def redis_failed(exc: BaseException, doing: str) -> None:
    """Note an error; Redis is left alone for RETRY_SECONDS by this process."""
    location = _location()
    if _down_until.get(location, 0.0) <= time.monotonic():
        log.warning("redis unavailable (%s): %s; retrying in %.0f s", doing, exc, RETRY_SECONDS)
    _down_until[location] = time.monotonic() + RETRY_SECONDS


def namespace() -> str:
    """The prefix of every key of the search cache and the counters."""
    prefix = caches["default"].key_prefix
    database = settings.DATABASES["default"]["NAME"]
    return ":".join(p for p in (prefix, "trackerfleet", str(database)) if p)


def tracker_keys(tracker_ids: Sequence[int]) -> list[str]:
    ns = namespace()
    return [f"{ns}:gen:tracker:{t}" for t in tracker_ids]


def owner_key(owner_id: int) -> str:
    return f"{namespace()}:gen:owner:{owner_id}"


def fleet_key() -> str:
    return f"{namespace()}:gen:fleet"


def _owners(tracker_ids: Collection[int]) -> set[int]:
    from trackers.models import Tracker

    try:
        owners = Tracker.objects.filter(pk__in=tracker_ids, owner__isnull=False)
        return set(owners.values_list("owner_id", flat=True).distinct())
    except DatabaseError:
        log.warning(
            "owners of %d trackers unknown: their fleets' searches stay cached", len(tracker_ids)
        )
        return set()


# Raises the WAL position stored under each key to ARGV[1] (never lowers it: bumps of two
# ingests may arrive in either order).
_RAISE_POSITION = """
for _, key in ipairs(KEYS) do
    local current = tonumber(redis.call('GET', key) or '0')
    if current < tonumber(ARGV[1]) then redis.call('SET', key, ARGV[1]) end
end
return 0
"""


def position_key(counter_key: str) -> str:
    """Where the primary's WAL position after the counter's latest bump is kept."""
    return counter_key + ":wal"


def _wal_position() -> int | None:
    """The primary's current WAL position (bytes), at or after the commit just made."""
    from django.db import connection

    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint")
            return cursor.fetchone()[0]
    except DatabaseError:
        return None


def bump(tracker_ids: Collection[int]) -> bool:
    """Increment the counters of these trackers, their owners and the fleet now, and note the
    primary's WAL position beside each (a replica that has replayed it has the new rows);
    False when Redis could not be told."""
    if not tracker_ids:
        return True
    client = redis_client()
    if client is None:
        return False
    keys = [*tracker_keys(list(tracker_ids)), *map(owner_key, _owners(tracker_ids)), fleet_key()]
    position = _wal_position()
    try:
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.incr(key)
        if position is not None:
            pipe.eval(_RAISE_POSITION, len(keys), *map(position_key, keys), position)
        pipe.execute()
    except REDIS_ERRORS as exc:  # the bump is lost: see above
        redis_failed(exc, "generation bump")
        return False
    return True


def bump_on_commit(tracker_ids: Collection[int]) -> None:
    """Bump the counters once the current transaction commits (at once outside one).

    After the commit, never before: a search that reads the new counter must find the new
    rows. A rolled-back transaction bumps nothing.
    """
    if tracker_ids:
        ids = tuple(tracker_ids)
        transaction.on_commit(lambda: bump(ids))


def current(keys: Sequence[str]) -> list[int] | None:
    """The counters under `keys` (0 for never bumped), in order; None when Redis cannot
    answer."""
    client = redis_client()
    if client is None:
        return None
    if not keys:
        return []
    try:
        values = client.mget(keys)
    except REDIS_ERRORS as exc:
        redis_failed(exc, "generation read")
        return None
    return [int(v) if v is not None else 0 for v in values]


def needed_position(keys: Sequence[str]) -> int | None:
    """The newest WAL position noted by the bumps of these counters (0: none), or None when
    Redis cannot answer. A replica that has replayed less may miss rows they announced."""
    values = current([position_key(k) for k in keys])
    return None if values is None else max(values, default=0)
