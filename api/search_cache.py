"""The cache of JSON location searches, in Redis (the default cache, db 0).

A page of a time-range search (`GET /api/v1/locations`, `/trackers/{id}/locations`, JSON) is
kept for API_SEARCH_CACHE_SECONDS under a key made of:

* the user's id (what one user may see is not what another may),
* the parsed query (`LocationQuery.identity()`: times in UTC, sorted tracker ids, the bbox as
  numbers, the decoded cursor), so `?a=1&b=2`, `?b=2&a=1`, `Z` and `+00:00` are one entry,
* for a fleet-wide search, the owner's fleet version (`trackers.FleetVersion`, counted by
  database triggers whenever a tracker changes hands or is deleted; one primary-key read), so
  a tracker given to someone else leaves the old owner's entries at once; staff's is "fleet".

The entry is stored with a stamp of the generation counters of what it covers
(locations/generations.py): each named tracker's; for a fleet-wide search the owner's; for
staff, the whole fleet's. One Lua call reads the counters, the entry and its stamp, and
counts the lookup as a hit or a miss: an entry whose stamp is not the counters' current one is
a miss. One round trip per cached answer; one entry per query (a renewed answer replaces it).

Ingest bumps the counters of every tracker that got a new report, of their owners and of the
fleet after its commit, so the next identical search misses and shows the new rows, while
searches over other trackers keep their entries. The entry holds the results and the next
cursor, not the `next` URL (built from each request's own host). /metrics exports
`trackerfleet_api_search_cache_hits_total` and `_misses_total`.

Read replicas: ingest also notes the primary's WAL position beside each counter; a miss is
computed on the request's replica only if that replica has replayed that far, else on the
primary (`tracker_project.replicas.ensure_replayed`), so an entry never holds rows older than
its counters promise, whatever the replica's lag.

Without Redis (no REDIS_URL: a local-memory cache cannot be invalidated across processes),
with API_SEARCH_CACHE_SECONDS=0, or while Redis is down, searches run uncached; nothing fails.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any

from django.conf import settings

from locations import generations
from tracker_project import replicas

# KEYS: the entry, the hit and miss counters, then the generation counters of what the entry
# covers. Returns {stamp, body}: the counters' stamp now, and the entry's body when it was
# stored under that stamp (else nil: a miss). Counted as a hit or a miss in the same call.
_LOOKUP = """
local parts = {}
for i = 4, #KEYS do parts[#parts + 1] = redis.call('GET', KEYS[i]) or '0' end
local stamp = redis.sha1hex(table.concat(parts, ','))
local entry = redis.call('GET', KEYS[1])
if entry and string.sub(entry, 1, 41) == stamp .. '\\n' then
    redis.call('INCR', KEYS[2])
    return {stamp, string.sub(entry, 42)}
end
redis.call('INCR', KEYS[3])
return {stamp, false}
"""


def _counter_keys() -> tuple[str, str]:
    ns = generations.namespace()
    return f"{ns}:search:hits", f"{ns}:search:misses"


def entry_key(user_id: int, identity: tuple, counter_keys: Sequence[str], material: object) -> str:
    """The key of a search's entry: the user, the parsed query, what it covers."""
    text = repr((user_id, identity, tuple(counter_keys), material))
    digest = hashlib.sha256(text.encode()).hexdigest()
    return f"{generations.namespace()}:search:{user_id}:{digest}"


def lookup(key: str, counter_keys: Sequence[str]) -> tuple[str, Any | None] | None:
    """(the counters' stamp, the entry or None on a miss); None when Redis cannot answer."""
    client = generations.redis_client()
    if client is None:
        return None
    try:
        stamp, raw = client.register_script(_LOOKUP)(keys=[key, *_counter_keys(), *counter_keys])
    except generations.REDIS_ERRORS as exc:
        generations.redis_failed(exc, "search cache read")
        return None
    stamp = stamp.decode() if isinstance(stamp, bytes) else stamp
    return stamp, None if raw is None else json.loads(raw)


def put(key: str, stamp: str, value: Any) -> None:
    client = generations.redis_client()
    if client is None:
        return
    body = json.dumps(value, separators=(",", ":"))
    try:
        client.set(key, f"{stamp}\n{body}", ex=settings.API_SEARCH_CACHE_SECONDS)
    except generations.REDIS_ERRORS as exc:
        generations.redis_failed(exc, "search cache write")


def cached(
    user_id: int,
    identity: tuple,
    scope: Callable[[], tuple[Sequence[str], object]],
    compute: Callable[[], Any],
) -> Any:
    """`compute()`'s JSON-ready answer, from the cache when an entry is valid.

    `scope()` gives (the counter keys of what the search covers, anything else the answer
    depends on); it is called only when the cache is usable, so an uncached deployment never
    pays for it. The counters are read before `compute()` runs and the entry is stored under
    them: an ingest committing in between bumps them after its commit, so an entry can hold
    newer rows than its stamp promises, never older ones.
    """
    if settings.API_SEARCH_CACHE_SECONDS <= 0 or generations.redis_client() is None:
        return compute()
    counter_keys, material = scope()
    key = entry_key(user_id, identity, counter_keys, material)
    found = lookup(key, counter_keys)
    if found is None:
        return compute()
    stamp, value = found
    if value is None:
        # Computed on a replica only if it has replayed the commits these counters announce:
        # an entry stored under them must hold those rows (else the primary answers).
        replicas.ensure_replayed(lambda: generations.needed_position(counter_keys))
        value = compute()
        put(key, stamp, value)
    return value


def counters() -> dict[str, int] | None:
    """{"hits": n, "misses": n} since Redis last lost them; None without a reachable Redis."""
    client = generations.redis_client()
    if client is None:
        return None
    try:
        hits, misses = client.mget(list(_counter_keys()))
    except generations.REDIS_ERRORS as exc:
        generations.redis_failed(exc, "search cache counters")
        return None
    return {"hits": int(hits or 0), "misses": int(misses or 0)}
