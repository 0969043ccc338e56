"""The findmy_simulator command serves real reports over HTTP to the real findmy library."""

from __future__ import annotations

import datetime as dt
import json
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.core.management import call_command
from findmy import FindMyAccessory, KeyPair

from locations.models import LocationReport
from trackers.models import Tracker, TrackerKind
from trackers.worker import run_pass

from ..factories import TrackerFactory
from .test_reliability import ROOT, worker_env  # noqa: F401 - a fixture

pytestmark = pytest.mark.django_db(transaction=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"nothing listens on {port}")


def test_simulator_command_serves_keys_from_a_file(tmp_path: Path, worker_env):  # noqa: F811
    keys = [KeyPair.new() for _ in range(3)]
    airtag = FindMyAccessory(
        master_key=secrets.token_bytes(28),
        skn=secrets.token_bytes(32),
        sks=secrets.token_bytes(32),
        paired_at=dt.datetime.now(dt.UTC) - dt.timedelta(days=2),
    )
    key_file = tmp_path / "keys.json"
    key_file.write_text(json.dumps([k.to_json() for k in keys] + [airtag.to_json()]))
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "findmy_simulator",
            "--port",
            str(port),
            "--keys",
            str(key_file),
        ],
        cwd=ROOT,
        env=worker_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for_port(port)
        state = tmp_path / "account.json"
        call_command("findmy_simulator", "--port", str(port), "--write-account", str(state))
        call_command(
            "add_apple_account",
            "sim",
            "--from-json",
            str(state),
            "--fetch-endpoint",
            f"http://127.0.0.1:{port}",
        )
        call_command("import_trackers", str(key_file))
        TrackerFactory()  # a key the simulator does not know: no reports, no error

        summary = run_pass("test")
    finally:
        proc.terminate()
        proc.wait(10)

    assert summary.failures == 0
    assert summary.new == LocationReport.objects.count() > 0
    assert set(LocationReport.objects.values_list("tracker__hashed_adv_key", flat=True)) == {
        k.hashed_adv_key_b64 for k in keys
    } | {Tracker.objects.get(kind=TrackerKind.ACCESSORY).hashed_adv_key}
