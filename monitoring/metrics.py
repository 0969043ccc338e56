"""Prometheus metrics, read from PostgreSQL at scrape time.

Workers run in many processes on many machines; in-process counters would only count the
process that happens to serve the scrape (and prometheus_client's multiprocess mode only
covers one machine). So the counters live in PostgreSQL: every fetch request is logged
(monitoring.attempts.log_attempt) as a FetchAttempt row and added to a FetchTotal row by
outcome and duration bucket; a scrape reads those few rows. Pruning old FetchAttempt rows
leaves the counters alone.

Served without authentication at /metrics for Prometheus scrapers: keep it on the internal
network. Account names are the only labels that name anything; no key or token is read.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from geofences import deliveries
from geofences.models import DeliveryStatus
from geofences.worker import backlog
from locations import geocoding, latest
from trackers.findmy_client import FailureCategory
from trackers.models import AppleAccount

from .health import (
    BREAKER_STATES,
    breaker_state,
    database_now,
    liveness_counts,
    open_failures,
    queue_status,
    quiet_trackers,
    recent_instances,
)
from .models import DURATION_BUCKETS, FetchTotal

log = logging.getLogger(__name__)

PREFIX = "trackerfleet"
# Outcomes always exported (zero included), so rate() works before the first failure.
KNOWN_OUTCOMES = ("ok", *(c for c, _ in FailureCategory.choices))


def fetch_metrics() -> Iterator[Metric]:
    rows = list(
        FetchTotal.objects.values_list(
            "outcome", "bucket", "requests", "new_reports", "duplicate_reports", "duration_seconds"
        )
    )
    by_outcome = dict.fromkeys(KNOWN_OUTCOMES, 0)
    in_bucket = [0] * (len(DURATION_BUCKETS) + 1)
    new = duplicates = 0
    seconds = 0.0
    for outcome, bucket, n, new_reports, duplicate_reports, duration in rows:
        by_outcome[outcome] = by_outcome.get(outcome, 0) + n
        in_bucket[min(bucket, len(DURATION_BUCKETS))] += n
        new += new_reports
        duplicates += duplicate_reports
        seconds += duration

    requests = CounterMetricFamily(
        f"{PREFIX}_fetch_requests",
        "Fetch requests (batches) sent to Apple, by outcome.",
        labels=["outcome"],
    )
    for outcome, n in sorted(by_outcome.items()):
        requests.add_metric([outcome], n)
    yield requests
    yield CounterMetricFamily(f"{PREFIX}_reports_ingested", "Location reports stored.", value=new)
    yield CounterMetricFamily(
        f"{PREFIX}_reports_duplicate",
        "Location reports fetched again and already stored.",
        value=duplicates,
    )
    cumulative = list(itertools.accumulate(in_bucket))
    yield HistogramMetricFamily(
        f"{PREFIX}_batch_duration_seconds",
        "Duration of one fetch request: claim to finish.",
        buckets=[
            *((str(float(le)), cumulative[i]) for i, le in enumerate(DURATION_BUCKETS)),
            ("+Inf", cumulative[-1]),
        ],
        sum_value=seconds,
    )


def queue_metrics() -> Iterator[Metric]:
    q = queue_status()
    yield GaugeMetricFamily(
        f"{PREFIX}_due_trackers", "Eligible trackers due for a fetch.", value=q.due
    )
    oldest = GaugeMetricFamily(
        f"{PREFIX}_oldest_processed_age_seconds",
        "Age of the oldest last_processed_at among eligible trackers (absent: none processed).",
    )
    if q.oldest_processed_age_seconds is not None:
        oldest.add_metric([], q.oldest_processed_age_seconds)
    yield oldest
    trackers = GaugeMetricFamily(f"{PREFIX}_trackers", "Trackers by state.", labels=["state"])
    trackers.add_metric(["eligible"], q.eligible)
    trackers.add_metric(["leased"], q.leased)
    trackers.add_metric(["quarantined"], q.quarantined)
    yield trackers
    yield GaugeMetricFamily(
        f"{PREFIX}_cycle_capacity_trackers",
        "Trackers the usable accounts can fetch per FETCH_CYCLE_HOURS.",
        value=q.cycle_capacity,
    )


def account_metrics() -> Iterator[Metric]:
    family = GaugeMetricFamily(
        f"{PREFIX}_account_breaker_state",
        "Circuit breaker state of each Apple account (1 for the current state).",
        labels=["account", "state"],
    )
    rows = AppleAccount.objects.annotate(breaker=breaker_state()).values_list("name", "breaker")
    for name, current in rows:
        for state in BREAKER_STATES:
            family.add_metric([name, state], 1 if state == current else 0)
    yield family


def failure_metrics() -> Iterator[Metric]:
    family = GaugeMetricFamily(
        f"{PREFIX}_failures_open", "Open failure records by category.", labels=["category"]
    )
    for category, n in open_failures().items():
        family.add_metric([category], n)
    yield family


def worker_metrics() -> Iterator[Metric]:
    family = GaugeMetricFamily(
        f"{PREFIX}_workers",
        "Service instances heard from in the last 24 h, by liveness.",
        labels=["liveness"],
    )
    for liveness, n in liveness_counts(recent_instances(database_now())).items():
        family.add_metric([liveness], n)
    yield family


def processing_metrics() -> Iterator[Metric]:
    queue = backlog()
    yield GaugeMetricFamily(
        f"{PREFIX}_processing_backlog",
        "Location reports stored and not processed yet (geofences, events).",
        value=queue.reports,
    )
    oldest = GaugeMetricFamily(
        f"{PREFIX}_processing_oldest_age_seconds",
        "Seconds since the oldest unprocessed report was stored (absent: none waiting).",
    )
    if queue.oldest_age_seconds is not None:
        oldest.add_metric([], queue.oldest_age_seconds)
    yield oldest


def geocoding_metrics() -> Iterator[Metric]:
    try:
        stats = geocoding.cache_stats()
    except Exception:  # the geocoder's figures must not take the other metrics down
        log.warning("geocoder statistics unavailable", exc_info=True)
        return
    yield GaugeMetricFamily(
        f"{PREFIX}_ungeocoded_reports",
        "Location reports with neither an address nor a reason for none yet.",
        value=stats["ungeocoded"],
    )
    yield GaugeMetricFamily(
        f"{PREFIX}_geocode_cache_hit_ratio",
        "Share of addressed reports answered without the provider (cache or reuse), 0..1.",
        value=stats["hit_rate"],
    )
    yield CounterMetricFamily(
        f"{PREFIX}_geocode_requests",
        "Reverse-geocoding requests sent to the provider.",
        value=stats["provider_requests"],
    )
    yield CounterMetricFamily(
        f"{PREFIX}_geocode_failures",
        "Reverse-geocoding provider requests that failed.",
        value=stats["provider_failures"],
    )
    yield GaugeMetricFamily(
        f"{PREFIX}_geocode_cache_size", "Cached addresses.", value=stats["cache_size"]
    )


def delivery_metrics() -> Iterator[Metric]:
    stats = deliveries.stats()
    family = GaugeMetricFamily(
        f"{PREFIX}_deliveries", "Alert deliveries by status.", labels=["status"]
    )
    for status in DeliveryStatus.values:
        family.add_metric([status], stats.get(status, 0))
    yield family


def event_metrics() -> Iterator[Metric]:
    yield GaugeMetricFamily(
        f"{PREFIX}_trackers_without_events",
        "Eligible trackers of owners with an active fence that raised no geofence event in "
        "GEOFENCE_EVENT_QUIET_DAYS days.",
        value=quiet_trackers(),
    )


def latest_view_metrics() -> Iterator[Metric]:
    # Read only: a scrape never refreshes or repairs the view (/health and the schedule do).
    state = latest.inspect()
    valid = not state.invalid_reason()
    yield GaugeMetricFamily(
        f"{PREFIX}_latest_view_valid",
        "1 when the latest-location view exists and is as expected, else 0.",
        value=1 if valid else 0,
    )
    age = GaugeMetricFamily(
        f"{PREFIX}_latest_view_age_seconds",
        "Seconds since the latest-location view was refreshed (absent: invalid or empty).",
    )
    if valid and state.age_seconds is not None:
        age.add_metric([], state.age_seconds)
    yield age


def api_metrics() -> Iterator[Metric]:
    from api.search_cache import counters  # kept in Redis by every web process

    figures = counters()
    if figures is None:  # no Redis cache, or Redis down: no search cache to count
        return
    for outcome, text in (("hits", "answered from"), ("misses", "run, then put in")):
        yield CounterMetricFamily(
            f"{PREFIX}_api_search_cache_{outcome}",
            f"JSON location searches {text} the search cache.",
            value=figures[outcome],
        )


class FleetCollector(Collector):
    """Every metric, computed from the database when Prometheus scrapes."""

    def collect(self) -> Iterator[Metric]:
        yield from fetch_metrics()
        yield from queue_metrics()
        yield from account_metrics()
        yield from failure_metrics()
        yield from worker_metrics()
        yield from processing_metrics()
        yield from geocoding_metrics()
        yield from delivery_metrics()
        yield from event_metrics()
        yield from latest_view_metrics()
        yield from api_metrics()


# A private registry: the default one carries this process's own metrics (GC, CPU), which
# would describe whichever web worker answered rather than the fleet.
registry = CollectorRegistry()
registry.register(FleetCollector())


def render() -> tuple[bytes, str]:
    """The metrics in Prometheus text format, and their content type."""
    return generate_latest(registry), CONTENT_TYPE_LATEST
