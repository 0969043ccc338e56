"""The README's screenshots, taken on the demo's fleet: the operator dashboard and the map.

`scripts/screenshots` runs these with SCREENSHOT_DIR=docs/screenshots; in the test suite they
write to a temporary folder and check that the pages rendered what the pictures are for.
"""

from __future__ import annotations

import collections
import time
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from geofences import worker as geofence_worker
from locations.models import LocationReport
from monitoring.heartbeat import Heartbeat

from .conftest import (
    Demo,
    console_errors,
    log_in,
    png_size,
    save_screenshot,
    wait_for,
    wait_for_map_idle,
)

pytestmark = pytest.mark.django_db(transaction=True)

WIDTH = 1400


def fit_window(driver: WebDriver, least: int = 900) -> None:
    """A window as tall as the page, so that the picture shows all of it."""
    for _ in range(2):  # the window's own bars take some of its height: measure again
        page = driver.execute_script("return document.documentElement.scrollHeight")
        view = driver.execute_script("return window.innerHeight")
        size = driver.get_window_size()
        driver.set_window_size(WIDTH, max(least, size["height"] + page - view))


def test_dashboard_screenshot(
    browser: WebDriver, live_server: Any, demo: Demo, tmp_path: Path
) -> None:
    # The demo's processes, as their heartbeats record them.
    beats = [Heartbeat(s) for s in ("fetch_trackers", "qcluster", "send_alerts")]
    beats.append(Heartbeat("geofence_service", figures=geofence_worker.figures))
    stopped = Heartbeat("geocoding_service")
    time.sleep(1)  # CPU figures are measured over the time since each heartbeat began
    for beat in [*beats, stopped]:
        beat.beat()
    stopped.stop()
    operator = get_user_model().objects.get(username="demo-admin")
    log_in(browser, live_server.url, operator)
    browser.get(f"{live_server.url}/admin/dashboard/")
    assert browser.find_element(By.CSS_SELECTOR, '[data-figure="workers-alive"]').text == "2"
    fit_window(browser)

    path = save_screenshot(browser, "dashboard", tmp_path)

    width, height = png_size(path)
    assert width == WIDTH
    assert height >= 900
    assert console_errors(browser) == []


def test_map_screenshot(
    browser: WebDriver, live_server: Any, demo: Demo, settings: Any, tmp_path: Path
) -> None:
    settings.MAP_TILE_URL = ""  # no internet here: the page as it is without tiles
    tracker = next(t for t in demo.trackers if t.name == "demo-001")  # two fences around it
    days = collections.Counter(
        t.date()
        for t in LocationReport.objects.filter(tracker=tracker).values_list("timestamp", flat=True)
    )
    day, reports = days.most_common(1)[0]
    log_in(browser, live_server.url, demo.owner)
    browser.get(f"{live_server.url}/map/")
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "path.tracker-marker"), "markers")
    browser.execute_script(
        "const input = document.getElementById('track-date');"
        "input.value = arguments[0]; input.dispatchEvent(new Event('change'));",
        day.isoformat(),
    )
    browser.find_element(By.CSS_SELECTOR, f'li[data-tracker="{tracker.pk}"] button').click()
    wait_for(
        browser,
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "path.track-point")) == reports,
        "the track",
    )
    wait_for_map_idle(browser)
    # One step back from the track: the city around it, its fences and its neighbours.
    browser.execute_script("trackerMap.zoomOut(1, {animate: false})")
    wait_for_map_idle(browser)

    path = save_screenshot(browser, "map", tmp_path)

    width, height = png_size(path)
    assert width == WIDTH
    assert height >= 700
    assert console_errors(browser) == []
