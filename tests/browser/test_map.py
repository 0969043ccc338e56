"""The owners' map in a real browser, on the demo's fleet: positions with accuracy circles,
fences, a day's track, the side panel, refreshing by itself; nobody else's trackers."""

from __future__ import annotations

import collections
import datetime as dt
import uuid
from typing import Any

import pytest
from django.contrib.gis.geos import Point
from django.utils import timezone
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from locations import latest
from locations.models import LocationReport

from ..factories import UserFactory
from .conftest import Demo, TileServer, console_errors, log_in, wait_for, wait_for_map_idle

pytestmark = pytest.mark.django_db(transaction=True)


def count(driver: WebDriver, selector: str) -> int:
    return len(driver.find_elements(By.CSS_SELECTOR, selector))


def panel_names(driver: WebDriver) -> list[str]:
    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#tracker-list .tracker-name")]


def open_map(driver: WebDriver, base_url: str, markers: int) -> None:
    driver.get(f"{base_url}/map/")
    wait_for(driver, lambda d: "updated" in d.find_element(By.ID, "map-status").text, "the data")
    assert count(driver, "path.tracker-marker") == markers


def panel_entry(driver: WebDriver, tracker_id: int) -> Any:
    return driver.find_element(By.CSS_SELECTOR, f'#tracker-list li[data-tracker="{tracker_id}"]')


def test_the_map_shows_the_demo_trackers_their_accuracy_and_fences(
    browser: WebDriver, live_server: Any, demo: Demo, tiles: TileServer
) -> None:
    log_in(browser, live_server.url, demo.owner)
    open_map(browser, live_server.url, markers=len(demo.trackers))

    assert count(browser, "path.accuracy-circle") == len(demo.trackers)
    assert count(browser, "path.fence-shape") == len(demo.fences) == 4  # 3 circles, a polygon
    assert panel_names(browser) == [t.name for t in demo.trackers]
    first = panel_entry(browser, demo.trackers[0].pk).text
    assert "last seen" in first
    assert "(city level)" in first or "," in first  # the offline geocoder's address
    # Tiles from the configured (local) tile server; Leaflet itself from our static files.
    wait_for(browser, lambda d: count(d, "img.leaflet-tile-loaded") > 0, "tiles")
    assert tiles.requests
    assert browser.execute_script("return L.version").startswith("1.")
    assert console_errors(browser) == []


def test_selecting_a_tracker_shows_its_track_of_a_day(
    browser: WebDriver, live_server: Any, demo: Demo, settings: Any
) -> None:
    settings.MAP_TILE_URL = ""
    tracker = demo.trackers[0]
    by_day = collections.Counter(
        t.date()
        for t in LocationReport.objects.filter(tracker=tracker).values_list("timestamp", flat=True)
    )
    day, reports = by_day.most_common(1)[0]
    log_in(browser, live_server.url, demo.owner)
    open_map(browser, live_server.url, markers=len(demo.trackers))
    wait_for_map_idle(browser)
    first_zoom = browser.execute_script("return trackerMap.getZoom()")
    date_input = browser.find_element(By.ID, "track-date")
    assert date_input.get_attribute("value") == timezone.now().date().isoformat()  # today, UTC

    panel_entry(browser, tracker.pk).find_element(By.TAG_NAME, "button").click()
    wait_for(
        browser,
        lambda d: "selected" in panel_entry(d, tracker.pk).get_attribute("class"),
        "the selection in the side panel",
    )
    browser.execute_script(
        "const input = document.getElementById('track-date');"
        "input.value = arguments[0]; input.dispatchEvent(new Event('change'));",
        day.isoformat(),
    )

    wait_for(browser, lambda d: count(d, "path.track-point") == reports, f"{reports} points")
    assert count(browser, "path.track-line") == (1 if reports > 1 else 0)
    summary = browser.find_element(By.ID, "track-summary").text
    assert f"{tracker.name} on {day.isoformat()}: {reports} report(s)" in summary
    # The map zoomed in to the track (closer than the first view of every tracker) and
    # shows all of it.
    points = LocationReport.objects.filter(tracker=tracker, timestamp__date=day)
    lats = [p.latitude for p in points]
    lons = [p.longitude for p in points]
    shows_track = (
        "return trackerMap.getZoom() > arguments[0] && trackerMap.getBounds()"
        ".contains(L.latLngBounds([arguments[1], arguments[2]], [arguments[3], arguments[4]]))"
    )
    wait_for(
        browser,
        lambda d: d.execute_script(
            shows_track, first_zoom, min(lats), min(lons), max(lats), max(lons)
        ),
        "the map zoomed to the whole track",
    )
    assert console_errors(browser) == []


def test_positions_refresh_without_losing_zoom_or_selection(
    browser: WebDriver, live_server: Any, demo: Demo, settings: Any
) -> None:
    settings.MAP_TILE_URL = ""
    settings.MAP_REFRESH_SECONDS = 2
    tracker = demo.trackers[-1]
    log_in(browser, live_server.url, demo.owner)
    open_map(browser, live_server.url, markers=len(demo.trackers))
    panel_entry(browser, tracker.pk).find_element(By.TAG_NAME, "button").click()
    wait_for(browser, lambda d: count(d, "#track-summary:not([hidden])"), "the track")
    wait_for_map_idle(browser)  # selecting zooms to the track: then look elsewhere
    browser.execute_script("trackerMap.setView([48.2, 11.6], 9, {animate: false})")

    # A new report far from where it was, and the view refreshed (the schedule's job).
    LocationReport.objects.create(
        tracker=tracker,
        timestamp=timezone.now() - dt.timedelta(seconds=10),
        point=Point(-3.7, 40.4, srid=4326),
        horizontal_accuracy=75,
        confidence=2,
        status=0,
        payload=uuid.uuid4().bytes,
        fetched_at=timezone.now(),
    )
    latest.maintain(force_refresh=True)

    wait_for(
        browser,
        lambda d: (
            "just now" in panel_entry(d, tracker.pk).text
            and "no address yet" in panel_entry(d, tracker.pk).text
        ),
        "the new position in the side panel",
    )
    assert browser.execute_script("return trackerMap.getZoom()") == 9
    center = browser.execute_script("const c = trackerMap.getCenter(); return [c.lat, c.lng]")
    assert center == pytest.approx([48.2, 11.6], abs=0.01)
    assert "selected" in panel_entry(browser, tracker.pk).get_attribute("class")
    assert count(browser, "path.tracker-marker") == len(demo.trackers)
    assert console_errors(browser) == []


def test_another_owner_sees_none_of_them(
    browser: WebDriver, live_server: Any, demo: Demo, settings: Any
) -> None:
    settings.MAP_TILE_URL = ""
    bob = UserFactory(username="bob")
    log_in(browser, live_server.url, bob)
    open_map(browser, live_server.url, markers=0)

    assert count(browser, "path.accuracy-circle") == 0
    assert count(browser, "path.fence-shape") == 0
    assert panel_names(browser) == []
    assert browser.find_element(By.ID, "empty-state").is_displayed()
    assert console_errors(browser) == []


def test_without_tiles_the_map_still_shows_everything(
    browser: WebDriver, live_server: Any, demo: Demo, settings: Any
) -> None:
    settings.MAP_TILE_URL = ""
    log_in(browser, live_server.url, demo.owner)
    open_map(browser, live_server.url, markers=len(demo.trackers))

    assert count(browser, ".leaflet-tile") == 0
    assert count(browser, "#map.no-tiles") == 1
    assert count(browser, "path.fence-shape") == len(demo.fences)
    assert panel_names(browser) == [t.name for t in demo.trackers]
    assert console_errors(browser) == []


def test_anonymous_visitors_log_in_first_and_land_on_the_map(
    browser: WebDriver, live_server: Any, demo: Demo, settings: Any
) -> None:
    settings.MAP_TILE_URL = ""
    browser.get(f"{live_server.url}/map/")
    assert browser.current_url == f"{live_server.url}/accounts/login/?next=/map/"

    browser.find_element(By.NAME, "username").send_keys(demo.owner.username)
    browser.find_element(By.NAME, "password").send_keys("not the password")
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    # The form comes back with the error: wait for the new page (the click only starts it).
    wait_for(browser, lambda d: count(d, ".errors") == 1, "the login error")
    assert "correct username and password" in browser.find_element(By.CLASS_NAME, "errors").text
    browser.find_element(By.NAME, "password").send_keys(demo.password)
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()

    wait_for(browser, lambda d: d.current_url == f"{live_server.url}/map/", "the map")
    wait_for(browser, lambda d: count(d, "path.tracker-marker") == len(demo.trackers), "markers")
    browser.find_element(By.CSS_SELECTOR, ".logout button").click()
    wait_for(browser, lambda d: "/accounts/login/" in d.current_url, "the login page")
    # A failed login answers 200 with the form again: no console error for it.
    assert console_errors(browser) == []
