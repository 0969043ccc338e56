"""Configuration: a missing or malformed variable stops the process with a message naming it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parents[1]
GOOD = {
    "SECRET_KEY": "x" * 50,
    "FIELD_ENCRYPTION_KEY": Fernet.generate_key().decode(),
    "DATABASE_URL": "postgis://u:p@127.0.0.1:5432/db",
}


def run_check(
    code: str = "import django; django.setup()",
    drop: Callable[[str], bool] = lambda name: name == "REDIS_URL",
    **env: str,
) -> subprocess.CompletedProcess:
    """`code` in a fresh Python with the settings module, no .env, this environment minus
    GOOD's variables and those `drop` names, plus `env`."""
    base = {k: v for k, v in os.environ.items() if k not in GOOD and not drop(k)}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={
            **base,
            "DJANGO_SETTINGS_MODULE": "tracker_project.settings",
            "DJANGO_ENV_FILE": "none",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_good_configuration_starts():
    assert run_check(**GOOD).returncode == 0


@pytest.mark.parametrize("missing", ["SECRET_KEY", "FIELD_ENCRYPTION_KEY", "DATABASE_URL"])
def test_missing_variable_is_named(missing):
    result = run_check(**{k: v for k, v in GOOD.items() if k != missing})
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert missing in result.stderr


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("FETCH_INTERVAL", "soon", "FETCH_INTERVAL has an invalid value"),
        ("MAX_KEYS_PER_BATCH", "65", "MAX_KEYS_PER_BATCH must be at most 64"),
        ("PROCESSING_TIMEOUT", "1", "PROCESSING_TIMEOUT must be >= 10"),
        ("DEBUG", "maybe", "DEBUG must be true or false"),
        ("FIELD_ENCRYPTION_KEY", "short", "FIELD_ENCRYPTION_KEY must be"),
        ("DATABASE_URL", "postgres://u:p@h/db", "DATABASE_URL must use the postgis://"),
        ("REDIS_URL", "http://127.0.0.1", "REDIS_URL must start with redis://"),
        ("LOG_FORMAT", "xml", "LOG_FORMAT must be json or text"),
        ("SECRET_KEY", " ", "SECRET_KEY is empty"),
    ],
)
def test_malformed_variable_is_named(name, value, message):
    result = run_check(**{**GOOD, name: value})
    assert result.returncode != 0
    assert message in result.stderr
