"""Geocoding settings: a malformed value stops the process with a message naming it, and a
missing GEOCODER_USER_AGENT stops only a geocoder (never `check` or the web)."""

from __future__ import annotations

import pytest

from ..test_settings import GOOD, run_check


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("GEOCODER", "no-such-service", "GEOCODER must be offline or a geopy service name"),
        ("GEOCODER_OPTIONS", "[1, 2]", "GEOCODER_OPTIONS must be a JSON object"),
        ("GEOCODER_OPTIONS", "{domain:", "GEOCODER_OPTIONS must be a JSON object"),
        ("GEOCODE_RATE_PER_SECOND", "0", "GEOCODE_RATE_PER_SECOND must be > 0"),
        ("GEOCODE_RATE_PER_SECOND", "fast", "GEOCODE_RATE_PER_SECOND has an invalid value"),
        ("GEOCODE_CELL_METERS", "0", "GEOCODE_CELL_METERS must be >= 1"),
        ("GEOCODE_BACKFILL_WINDOW", "7pm-7am", "GEOCODE_BACKFILL_WINDOW must look like"),
        ("GEOCODE_BACKFILL_WINDOW", "19:00-19:00", "GEOCODE_BACKFILL_WINDOW must look like"),
        ("GEOCODE_BACKFILL_WINDOW", "25:00-07:00", "GEOCODE_BACKFILL_WINDOW must look like"),
        ("GEOCODE_BACKFILL_PAUSE", "-1", "GEOCODE_BACKFILL_PAUSE must be >= 0"),
        ("GEOCODE_TIMEOUT", "nan", "GEOCODE_TIMEOUT has an invalid value"),
        ("GEOCODE_TIMEOUT", "0", "GEOCODE_TIMEOUT must be > 0"),
        ("GEOCODE_MAX_ATTEMPTS", "0", "GEOCODE_MAX_ATTEMPTS must be >= 1"),
    ],
)
def test_malformed_geocoding_settings_are_named(name, value, message):
    result = run_check(**GOOD, **{name: value})
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert message in result.stderr


@pytest.mark.parametrize(
    "env",
    [
        {"GEOCODER": "nominatim", "GEOCODER_USER_AGENT": ""},
        {"GEOCODER": "offline", "GEOCODE_BACKFILL_WINDOW": "00:00-24:00"},
        {"GEOCODER": "photon", "GEOCODER_OPTIONS": '{"domain": "127.0.0.1:2322"}'},
    ],
)
def test_good_geocoding_settings_start(env):
    assert run_check(**GOOD, **env).returncode == 0
