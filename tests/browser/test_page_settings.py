"""The pages' settings: checked at start like every other variable, handed to the map."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.test import Client

from ..factories import UserFactory
from ..test_settings import GOOD, run_check


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("MAP_TILE_URL", "ftp://tiles.example.com/{z}/{x}/{y}.png", "MAP_TILE_URL must be"),
        ("MAP_TILE_URL", "tiles/{z}/{x}/{y}.png", "MAP_TILE_URL must be"),
        ("MAP_REFRESH_SECONDS", "1", "MAP_REFRESH_SECONDS must be >= 2"),
        ("DASHBOARD_REFRESH_SECONDS", "often", "DASHBOARD_REFRESH_SECONDS has an invalid value"),
    ],
)
def test_bad_page_settings_are_named(name: str, value: str, message: str) -> None:
    result = run_check(**GOOD, **{name: value})
    assert result.returncode != 0
    assert message in result.stderr


def test_an_empty_tile_url_is_allowed() -> None:
    assert run_check(**GOOD, MAP_TILE_URL="").returncode == 0


@pytest.mark.django_db
def test_the_map_page_hands_its_script_the_tile_settings(client: Client, settings: Any) -> None:
    settings.MAP_TILE_URL = "https://tiles.example.com/{z}/{x}/{y}.png"
    settings.MAP_TILE_ATTRIBUTION = "&copy; Example"
    settings.MAP_REFRESH_SECONDS = 45
    client.force_login(UserFactory())

    response = client.get("/map/")

    assert response.status_code == 200
    assert response.context["map_config"]["tileUrl"] == settings.MAP_TILE_URL
    body = response.content.decode()
    config = json.loads(re.search(r'<script id="map-config"[^>]*>(.*?)</script>', body)[1])
    assert config["tileAttribution"] == "&copy; Example"
    assert config["refreshSeconds"] == 45
    assert config["api"]["latest"] == "/api/v1/latest"
    assert "csrftoken" in response.cookies  # for the script's unsafe requests


@pytest.mark.django_db
def test_anonymous_visitors_are_sent_to_the_login_page(client: Client) -> None:
    response = client.get("/map/")
    assert (response.status_code, response["Location"]) == (302, "/accounts/login/?next=/map/")
    assert client.get("/").headers["Location"] == "/map/"
