"""DATABASE_REPLICA_URL and the replica settings: aliases, their options, refusals."""

from __future__ import annotations

import json
import subprocess

import pytest

from ..test_settings import GOOD, run_check

SHOW = """
import django, json
django.setup()
from django.conf import settings
print(json.dumps({
    "replicas": settings.DATABASE_REPLICAS,
    "databases": {a: settings.DATABASES[a] for a in settings.DATABASE_REPLICAS},
    "max_lag": settings.REPLICA_MAX_LAG_SECONDS,
    "sticky": settings.REPLICA_STICKY_SECONDS,
}))
"""


def settings_with(**env: str) -> subprocess.CompletedProcess:
    return run_check(
        SHOW,
        drop=lambda name: name.startswith("REPLICA") or name == "DATABASE_REPLICA_URL",
        **GOOD,
        **env,
    )


def test_no_replicas_by_default():
    result = settings_with()
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["replicas"] == []
    assert (shown["max_lag"], shown["sticky"]) == (10, 5)


def test_each_url_becomes_a_replica_alias():
    result = settings_with(
        DATABASE_REPLICA_URL="postgis://u:p@10.0.0.2:5432/db, "
        "postgis://u:p@10.0.0.3:5433/db?connect_timeout=5",
        REPLICA_MAX_LAG_SECONDS="30",
        REPLICA_STICKY_SECONDS="0",
    )
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["replicas"] == ["replica1", "replica2"]
    first, second = shown["databases"]["replica1"], shown["databases"]["replica2"]
    assert (first["HOST"], first["PORT"], first["OPTIONS"]) == (
        "10.0.0.2",
        5432,
        {"connect_timeout": 2},
    )
    assert (second["HOST"], second["OPTIONS"]) == ("10.0.0.3", {"connect_timeout": 5})
    assert first["TEST"]["MIRROR"] == "default"
    assert (shown["max_lag"], shown["sticky"]) == (30, 0)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("DATABASE_REPLICA_URL", "postgres://u:p@h/db", "DATABASE_REPLICA_URL: entry 1 must be"),
        ("DATABASE_REPLICA_URL", "postgis://u:p@h/db,nonsense", "entry 2 must be a postgis://"),
        ("DATABASE_REPLICA_URL", "postgis://u:p@10.0.0.2/other", "must name the database of"),
        ("DATABASE_REPLICA_URL", "postgis://u:p@127.0.0.1:5432/db", "on another server"),
        ("REPLICA_MAX_LAG_SECONDS", "-1", "REPLICA_MAX_LAG_SECONDS must be >= 0"),
        ("REPLICA_STICKY_SECONDS", "soon", "REPLICA_STICKY_SECONDS has an invalid value"),
    ],
)
def test_bad_values_are_named(name, value, message):
    result = settings_with(**{name: value})
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert message in result.stderr
