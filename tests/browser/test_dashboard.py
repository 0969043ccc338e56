"""The operator dashboard in a real browser: figures from real rows, refreshing by itself."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.contrib.gis.geos import Point
from django.test import Client
from django.utils import timezone
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from locations.models import LocationReport, QueuedReport
from monitoring.models import FailureRecord
from trackers.models import AccountStatus

from ..factories import AppleAccountFactory, TrackerFactory, UserFactory
from .conftest import console_errors, heartbeat, log_in, png_size, save_screenshot, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def figure(driver: WebDriver, name: str) -> str:
    return driver.find_element(By.CSS_SELECTOR, f'[data-figure="{name}"]').text


def failure(category: str, fingerprint: str, error: str = "HTTP 503 from the fetch endpoint"):
    return FailureRecord.objects.create(
        category=category, fingerprint=fingerprint, last_error=error, attempts=3
    )


def queued_report(tracker: Any, minutes_ago: float) -> LocationReport:
    stored = timezone.now() - dt.timedelta(minutes=minutes_ago)
    report = LocationReport.objects.create(
        tracker=tracker,
        timestamp=stored - dt.timedelta(minutes=5),
        point=Point(13.405, 52.52, srid=4326),
        horizontal_accuracy=20,
        confidence=2,
        status=0,
        payload=uuid.uuid4().bytes,
        fetched_at=stored,
    )
    QueuedReport.objects.create(report=report, tracker=tracker, stored_at=stored)
    return report


@pytest.fixture
def staff() -> Any:
    return UserFactory(username="operator", is_staff=True, is_superuser=True)


@pytest.fixture
def fleet_rows() -> dict[str, Any]:
    """A live worker, a dead one, two accounts (one with its circuit open), open failures,
    and reports waiting for processing."""
    heartbeat("fetch_trackers")
    heartbeat("qcluster", seconds_ago=600)
    ok = AppleAccountFactory(name="main")
    AppleAccountFactory(
        name="spare",
        status=AccountStatus.BACKING_OFF,
        backoff_until=timezone.now() + dt.timedelta(minutes=10),
        consecutive_failures=3,
        last_error="429 Too Many Requests",
    )
    failure("upstream", f"account:{ok.pk}")
    failure("timeout", "tracker:1", "read timed out")
    tracker = TrackerFactory()
    reports = [queued_report(tracker, minutes) for minutes in (3, 2)]
    return {"tracker": tracker, "reports": reports}


def test_the_dashboard_shows_figures_from_real_rows(
    browser: WebDriver, live_server: Any, staff: Any, fleet_rows: dict[str, Any], tmp_path: Path
) -> None:
    log_in(browser, live_server.url, staff)
    browser.get(f"{live_server.url}/admin/dashboard/")

    assert browser.find_element(By.TAG_NAME, "h1").text == "Operator dashboard"
    assert figure(browser, "workers-alive") == "1"
    assert figure(browser, "workers-dead") == "1"
    assert figure(browser, "accounts-total") == "2"
    assert figure(browser, "accounts-usable") == "2"
    assert figure(browser, "breaker-open") == "1"
    assert figure(browser, "failures-open") == "2"
    assert figure(browser, "failures-upstream") == "1"
    assert figure(browser, "processing-pending") == "2"
    assert figure(browser, "queue-eligible") == "1"
    accounts = browser.find_elements(By.CSS_SELECTOR, "[data-list=accounts] tbody tr")
    assert [row.get_attribute("data-account") for row in accounts] == ["main", "spare"]
    assert "429 Too Many Requests" in accounts[1].text
    instances = browser.find_elements(By.CSS_SELECTOR, "[data-list=instances] tbody tr")
    assert [row.find_element(By.CSS_SELECTOR, ".badge").text for row in instances] == [
        "ALIVE",
        "DEAD",
    ]
    assert console_errors(browser) == []
    assert png_size(save_screenshot(browser, "dashboard-test", tmp_path))[0] > 0


def test_the_dashboard_refreshes_by_itself(
    browser: WebDriver,
    live_server: Any,
    staff: Any,
    fleet_rows: dict[str, Any],
    settings: Any,
) -> None:
    settings.DASHBOARD_REFRESH_SECONDS = 2
    log_in(browser, live_server.url, staff)
    browser.get(f"{live_server.url}/admin/dashboard/")
    assert figure(browser, "failures-open") == "2"
    assert figure(browser, "processing-pending") == "2"

    # Rows change behind the page: a third failure, the backlog processed, a worker starts.
    failure("network", "account:99", "connection refused")
    QueuedReport.objects.all().delete()
    heartbeat("fetch_trackers")

    wait_for(browser, lambda d: figure(d, "failures-open") == "3", "3 open failures")
    assert figure(browser, "failures-network") == "1"
    assert figure(browser, "processing-pending") == "0"
    assert figure(browser, "workers-alive") == "2"
    assert "Updated" in browser.find_element(By.ID, "dashboard-state").text
    assert console_errors(browser) == []


def test_the_admin_index_links_to_the_dashboard(
    browser: WebDriver, live_server: Any, staff: Any
) -> None:
    log_in(browser, live_server.url, staff)
    browser.get(f"{live_server.url}/admin/")
    browser.find_element(By.LINK_TEXT, "Operator dashboard").click()

    wait_for(browser, lambda d: d.current_url.endswith("/admin/dashboard/"), "the dashboard")
    assert figure(browser, "overall") in {"Healthy", "Degraded", "Unhealthy"}
    assert console_errors(browser) == []


@pytest.mark.django_db  # no browser: the test client, in a transaction rolled back
@pytest.mark.parametrize("path", ["/admin/dashboard/", "/admin/dashboard/figures"])
def test_the_dashboard_is_for_staff_only(client: Client, path: str) -> None:
    owner = UserFactory(username="owner")  # logged in, not staff
    assert client.get(path).status_code == 302
    client.force_login(owner)

    response = client.get(path)

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


@pytest.mark.django_db
def test_the_figures_fragment_is_the_dashboards_figures(client: Client, staff: Any) -> None:
    failure("upstream", "account:1")
    client.force_login(staff)

    response = client.get("/admin/dashboard/figures")

    assert response.status_code == 200
    body = response.content.decode()
    assert '<div class="dash-figures"' in body
    assert "<html" not in body  # a fragment, swapped into the page
    assert 'data-figure="failures-open">1<' in body
