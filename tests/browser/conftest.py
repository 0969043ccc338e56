"""A real browser for the page tests: Debian's Chromium, headless, driven by selenium.

Each test gets a fresh Chromium (its own --user-data-dir) that records the console
(goog:loggingPrefs browser ALL), and pytest-django's live server (a real HTTP server on
127.0.0.1, transactional database). There is no internet: map tiles come from a local tile
server or are off. A browser that is not installed or does not start fails the test, with
what to do about it; it never skips.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import struct
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.management import call_command
from django.test import Client
from django.utils import timezone
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from geofences.models import Geofence
from geofences.worker import run_pass as process_pass
from locations import latest
from locations.geocoding import immediate_pass
from locations.models import LocationReport
from locations.resolver import Resolver
from monitoring.models import ServiceInstance
from trackers.models import Tracker
from trackers.worker import run_pass

from ..factories import UserFactory

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,900",
    "--lang=en-US",
)
# Selenium finds no driver to download: it uses Debian's chromedriver, never the network.
os.environ.setdefault("SE_OFFLINE", "true")
WAIT_SECONDS = 20  # generous: two cores shared with PostgreSQL, the live server and Chromium
# Where the screenshot tests save their pictures (scripts/screenshots sets docs/screenshots).
SCREENSHOT_DIR = os.environ.get("SCREENSHOT_DIR", "")


def start_chromium(profile: Path) -> WebDriver:
    """Headless Chromium through chromedriver, or a failure saying what is missing."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            pytest.fail(
                f"{path} is not installed: the page tests need a real browser. Run "
                f"scripts/bootstrap, or apt-get install chromium chromium-driver ({package})",
                pytrace=False,
            )
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # TZ: the browser's "today" is the UTC day the tests build their data for.
    service = Service(str(CHROMEDRIVER), env={**os.environ, "TZ": "UTC"})
    try:
        return webdriver.Chrome(service=service, options=options)
    except WebDriverException as exc:
        pytest.fail(
            f"Chromium did not start ({CHROMIUM}, {CHROMEDRIVER}): {exc.msg or exc}",
            pytrace=False,
        )


def console_errors(driver: WebDriver) -> list[dict[str, Any]]:
    """The console's SEVERE entries since the last call (errors, failed requests)."""
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


@pytest.fixture
def browser(tmp_path: Path, settings: Any) -> Iterator[WebDriver]:
    # The live server speaks plain HTTP: cookies marked Secure would never come back.
    settings.SESSION_COOKIE_SECURE = False
    settings.CSRF_COOKIE_SECURE = False
    driver = start_chromium(tmp_path / "chromium-profile")
    driver.set_page_load_timeout(WAIT_SECONDS)
    try:
        yield driver
    finally:
        driver.quit()


def log_in(driver: WebDriver, base_url: str, user: AbstractBaseUser) -> None:
    """Give the browser a session of `user` (the login form has its own test)."""
    client = Client()
    client.force_login(user)
    cookie = client.cookies[django_settings.SESSION_COOKIE_NAME]
    driver.get(f"{base_url}/accounts/login/")  # a page of the live server's origin first
    driver.add_cookie({"name": cookie.key, "value": cookie.value, "path": "/"})


def wait_for(driver: WebDriver, condition: Callable[[WebDriver], Any], what: str) -> Any:
    """condition(driver) once truthy; a timeout names what did not happen."""
    return WebDriverWait(driver, WAIT_SECONDS, poll_frequency=0.2).until(
        condition, message=f"timed out after {WAIT_SECONDS} s waiting for {what}"
    )


def wait_for_map_idle(driver: WebDriver) -> None:
    """Until the map's zoom animation is over (and its pan: a quarter of a second)."""
    wait_for(driver, lambda d: not d.find_elements(By.CSS_SELECTOR, ".leaflet-zoom-anim"), "zoom")
    time.sleep(0.5)


def save_screenshot(driver: WebDriver, name: str, tmp_path: Path) -> Path:
    """A PNG of the window, in SCREENSHOT_DIR when set (the README's), else in tmp_path."""
    folder = Path(SCREENSHOT_DIR) if SCREENSHOT_DIR else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    assert driver.save_screenshot(str(path)), f"no screenshot written to {path}"
    return path


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


# --- a local tile server ----------------------------------------------------------------
def tile_png(size: int = 256) -> bytes:
    """A plain light-grey PNG tile with a darker border: looks like a grid on the map."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    edge, fill = b"\xc8\xd0\xd8", b"\xee\xf1\xf4"
    rows = []
    for y in range(size):
        row = edge * size if y == 0 else edge + fill * (size - 1)
        rows.append(b"\x00" + row)
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"".join(rows)))
        + chunk(b"IEND", b"")
    )


class TileServer:
    """Serves the same tile for every /{z}/{x}/{y}.png on 127.0.0.1; counts the requests."""

    def __init__(self) -> None:
        tile = tile_png()
        requests: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                requests.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(tile)))
                self.end_headers()
                self.wfile.write(tile)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.requests = requests
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}/{{z}}/{{x}}/{{y}}.png"

    def __enter__(self) -> TileServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def tiles(settings: Any) -> Iterator[TileServer]:
    """MAP_TILE_URL pointed at a local tile server."""
    with TileServer() as server:
        settings.MAP_TILE_URL = server.url
        settings.MAP_TILE_ATTRIBUTION = "local test tiles"
        yield server


# --- rows the dashboard shows -----------------------------------------------------------
def heartbeat(service: str = "fetch_trackers", seconds_ago: float = 0, **fields: Any):
    now = timezone.now()
    return ServiceInstance.objects.create(
        service_name=service,
        instance_id=f"{service}:web-test:{uuid.uuid4().hex[:6]}",
        hostname="web-test",
        pid=4242,
        started_at=now - dt.timedelta(hours=2),
        last_heartbeat=now - dt.timedelta(seconds=seconds_ago),
        heartbeat_count=120,
        payload={"memory_usage_mb": 88.5, "cpu_usage_percent": 1.5},
        **fields,
    )


# --- the demo's fleet -------------------------------------------------------------------
@dataclass
class Demo:
    owner: Any  # not staff: sees their own trackers only
    password: str
    trackers: list[Tracker]  # the ones with a position, by name
    fences: list[Geofence]


@pytest.fixture
def demo(simulator: Any, settings: Any) -> Iterator[Demo]:
    """The demo's fleet (demo_setup, smaller), fetched from the simulator (a day of history),
    processed (fences, events), geocoded offline, in a refreshed latest-location view; owned
    by a user who is not staff."""
    settings.GEOCODER = "offline"
    call_command(
        "demo_setup",
        *("--simulator-url", simulator.base_url, "--trackers", "6", "--accessories", "1"),
        *("--fences", "3", "--username", "demo-admin"),
        stdout=io.StringIO(),
    )
    simulator.simulator.add_material(Tracker.objects.values_list("key_material", flat=True))
    run_pass("browser-tests")
    process_pass("browser-tests")
    immediate_pass(Resolver("browser-tests"), seconds=30)
    latest.maintain(force_refresh=True)
    owner = UserFactory(username="alice")
    Tracker.objects.update(owner=owner)
    Geofence.objects.update(owner=owner)
    located = Tracker.objects.filter(reports__isnull=False).distinct().order_by("name")
    try:
        yield Demo(
            owner, "correct horse battery staple", list(located), list(Geofence.objects.all())
        )
    finally:
        # The flush after a transactional test empties the tables, not the materialized view:
        # empty it here, or the next test would find our trackers in it.
        LocationReport.objects.all().delete()
        latest.maintain(force_refresh=True)
