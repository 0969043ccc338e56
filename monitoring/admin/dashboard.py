"""The operator dashboard: one admin page with the fleet's health at a glance, refreshing itself.

It shows what /health, /status/queue, /status/worker and /metrics compute (the same functions
of monitoring.health, not a second implementation): workers and their liveness, the queue and
the cycle capacity, accounts and their breakers, open failures, the processing and geocoding
backlogs, alert deliveries, and the latest-location view. The page's script fetches the
figures fragment every DASHBOARD_REFRESH_SECONDS and swaps it in.

The two views are served by the project's admin site (monitoring.admin_site.FleetAdminSite,
staff only), which links the dashboard from its index page.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.text import Truncator

from geofences.models import AlertDelivery, DeliveryStatus
from monitoring import health
from monitoring.models import FailureRecord
from trackers.models import AppleAccount

# Rows of each list the page shows; the admin's changelists have the rest.
LIST_ROWS = 10
# Heartbeat figures that are on the row already, or too long for a table cell.
HIDDEN_FIGURES = frozenset({"uptime_seconds", "last_pass_at", "breaker"})


# --- the pages (FleetAdminSite's URLs, behind its staff login) ---------------------------
def dashboard(site: admin.AdminSite, request: HttpRequest) -> HttpResponse:
    context = {
        **site.each_context(request),
        "title": "Operator dashboard",
        "refresh_seconds": settings.DASHBOARD_REFRESH_SECONDS,
        "figures_url": reverse(f"{site.name}:dashboard-figures"),
        **collect(),
    }
    return TemplateResponse(request, "admin/dashboard.html", context)


def dashboard_figures(site: admin.AdminSite, request: HttpRequest) -> HttpResponse:
    """The figures alone (the page's script swaps them in): same template, same data."""
    context = {**site.each_context(request), **collect()}
    return TemplateResponse(request, "admin/dashboard_figures.html", context)


# --- the figures ------------------------------------------------------------------------
def collect() -> dict[str, Any]:
    """Everything the page shows. The checks are /health's own (run_checks), so a figure here
    is the figure /health and /metrics report; the lists below them add the rows behind it."""
    report = health.run_checks()
    checks = {name: check.as_dict() for name, check in report.checks.items()}
    context: dict[str, Any] = {"report": report.as_dict(), "checks": checks}
    if report.checks["database"].status == health.CheckStatus.FAILING:
        return context  # the lists need the database too; the checks say why
    now = health.database_now()
    context.update(
        checked_at=now,
        instances=instance_rows(now),
        accounts=account_rows(now),
        failures=failure_rows(now),
        failure_categories=failure_categories(checks["failures"]),
        failed_deliveries=failed_delivery_rows(now),
        durations=durations(checks),
    )
    return context


def ago(now: dt.datetime, moment: dt.datetime | None) -> str:
    """`moment` as "5 min ago" ("in 5 min" for the future), by the database clock."""
    if moment is None:
        return "never"
    seconds = (now - moment).total_seconds()
    text = duration(abs(seconds))
    return f"{text} ago" if seconds >= 0 else f"in {text}"


def duration(seconds: float | None) -> str:
    """A span in the largest two units that matter: "42 s", "5 min 3 s", "2 h 10 min"."""
    if seconds is None:
        return "—"
    total = int(seconds)
    if total < 60:
        return f"{total} s"
    units = (("d", 86400), ("h", 3600), ("min", 60), ("s", 1))
    parts = []
    for name, size in units:
        if total >= size or parts:
            parts.append(f"{total // size} {name}")
            total %= size
        if len(parts) == 2:
            break
    return " ".join(p for p in parts if not p.startswith("0 ")) or "0 s"


def durations(checks: dict[str, dict[str, Any]]) -> dict[str, str]:
    """The checks' ages in seconds, readable."""
    return {
        "oldest_processed": duration(checks["queue"].get("oldest_processed_age_seconds")),
        "oldest_pending_report": duration(checks["processing"].get("oldest_pending_age_seconds")),
        "oldest_pending_delivery": duration(checks["deliveries"].get("oldest_pending_age_seconds")),
        "latest_view_age": duration(checks["latest_view"].get("age_seconds")),
    }


def instance_rows(now: dt.datetime) -> list[dict[str, Any]]:
    """Every service instance /status/worker lists, alive ones first."""
    order = {"alive": 0, "stale": 1, "dead": 2, "stopped": 3}
    rows = []
    for status in health.recent_instances(now):
        row = status.as_dict()
        row["heartbeat_ago"] = ago(now, row["last_heartbeat"])
        row["uptime"] = duration((now - row["started_at"]).total_seconds())
        row["figure_text"] = ", ".join(
            f"{key} {value}"
            for key, value in sorted(row["figures"].items())
            if key not in HIDDEN_FIGURES
            and value is not None
            and not isinstance(value, dict | list)
        )
        rows.append(row)
    return sorted(rows, key=lambda r: (order.get(r["liveness"], 9), r["service_name"]))


def account_rows(now: dt.datetime) -> list[dict[str, Any]]:
    """Each Apple account with its breaker state as /metrics computes it. values(): the
    encrypted account state is never read."""
    rows = (
        AppleAccount.objects.annotate(breaker=health.breaker_state())
        .order_by("name")
        .values(
            "pk",
            "name",
            "status",
            "breaker",
            "consecutive_failures",
            "backoff_until",
            "last_request_at",
            "requests_total",
            "last_error",
        )
    )
    labels = dict(AppleAccount._meta.get_field("status").choices)
    return [
        {
            **row,
            "status_label": labels.get(row["status"], row["status"]),
            "last_request_ago": ago(now, row["last_request_at"]),
            "backoff_text": ago(now, row["backoff_until"]) if row["backoff_until"] else "",
            "last_error_short": Truncator(row["last_error"]).chars(80),
        }
        for row in rows
    ]


def failure_categories(check: dict[str, Any]) -> list[tuple[str, int]]:
    """The categories with open failures, most first (the check counts every category)."""
    counts = check.get("by_category", {})
    return sorted(((c, n) for c, n in counts.items() if n), key=lambda item: -item[1])


def failure_rows(now: dt.datetime) -> list[dict[str, Any]]:
    """The open failure records seen last (failure_open_idx)."""
    rows = FailureRecord.objects.filter(resolved_at__isnull=True).values(
        "pk", "category", "fingerprint", "attempts", "last_seen", "last_error"
    )[:LIST_ROWS]
    return [
        {
            **row,
            "last_seen_ago": ago(now, row["last_seen"]),
            "last_error_short": Truncator(row["last_error"]).chars(100),
        }
        for row in rows
    ]


def failed_delivery_rows(now: dt.datetime) -> list[dict[str, Any]]:
    """Alert deliveries that failed for good, newest first: an operator retries them."""
    rows = (
        AlertDelivery.objects.filter(status=DeliveryStatus.FAILED)
        .order_by("-created_at")
        .values(
            "pk",
            "channel",
            "attempts",
            "created_at",
            "last_error",
            "rule__name",
            "event__kind",
            "event__tracker__name",
        )[:LIST_ROWS]
    )
    return [
        {
            **row,
            "created_ago": ago(now, row["created_at"]),
            "last_error_short": Truncator(row["last_error"]).chars(100),
        }
        for row in rows
    ]
