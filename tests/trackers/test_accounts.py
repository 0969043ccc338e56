"""add_apple_account: saved findmy states, endpoint overrides, and clear errors."""

from __future__ import annotations

import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from findmy_sim.simulator import account_state
from trackers.models import AccountStatus, AppleAccount
from trackers.worker import run_pass

pytestmark = pytest.mark.django_db


def state_file(tmp_path, state) -> str:
    path = tmp_path / "account.json"
    path.write_text(json.dumps(state))
    return str(path)


def test_it_imports_a_saved_state_pointed_at_a_simulator(tmp_path, simulator, make_fleet, capsys):
    path = state_file(tmp_path, account_state(simulator.anisette_url))
    call_command(
        "add_apple_account", "sim", "--from-json", path, "--fetch-endpoint", simulator.fetch_url
    )
    make_fleet(3)

    summary = run_pass("test")

    account = AppleAccount.objects.get(name="sim")
    assert account.fetch_endpoint == simulator.fetch_url
    assert account.anisette_url == simulator.anisette_url
    assert summary.new > 0
    assert "added Apple account 'sim'" in capsys.readouterr().out


def test_base_url_endpoint_is_enough(tmp_path, simulator, make_fleet):
    path = state_file(tmp_path, account_state(simulator.anisette_url))
    call_command(
        "add_apple_account", "sim", "--from-json", path, "--fetch-endpoint", simulator.base_url
    )
    make_fleet(1)
    assert run_pass("test").new > 0


def test_state_is_encrypted_at_rest(tmp_path, simulator):
    state = account_state(simulator.anisette_url)
    call_command("add_apple_account", "sim", "--from-json", state_file(tmp_path, state))
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT state FROM trackers_appleaccount")
        (raw,) = cursor.fetchone()
    assert state["account"]["password"] not in raw
    assert state["login"]["data"]["mobileme_data"]["tokens"]["searchPartyToken"] not in raw


def test_anisette_url_flag_overrides_the_state(tmp_path):
    path = state_file(tmp_path, account_state("http://old.invalid/anisette"))
    call_command(
        "add_apple_account", "a", "--from-json", path, "--anisette-url", "http://127.0.0.1:6969/"
    )
    account = AppleAccount.objects.get()
    assert account.anisette_url == "http://127.0.0.1:6969/"
    assert account.state["anisette"] == {"type": "aniRemote", "url": "http://127.0.0.1:6969/"}


def test_existing_name_needs_update_which_reactivates(tmp_path):
    path = state_file(tmp_path, account_state("http://127.0.0.1:1/anisette"))
    call_command("add_apple_account", "a", "--from-json", path)
    AppleAccount.objects.update(status=AccountStatus.NEEDS_LOGIN)
    with pytest.raises(CommandError, match="use --update"):
        call_command("add_apple_account", "a", "--from-json", path)
    call_command("add_apple_account", "a", "--from-json", path, "--update")
    assert AppleAccount.objects.get().status == AccountStatus.ACTIVE


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"type": "keypair"}', "not a findmy account state"),
        ("[]", "not a findmy account state"),
    ],
)
def test_bad_state_file_is_an_error(tmp_path, content, message):
    path = tmp_path / "a.json"
    path.write_text(content)
    with pytest.raises(CommandError, match=message):
        call_command("add_apple_account", "a", "--from-json", str(path))
    assert not AppleAccount.objects.exists()


def test_logged_out_state_is_refused(tmp_path):
    state = account_state("http://127.0.0.1:1/anisette")
    state["login"] = {"state": 0, "data": {}}
    with pytest.raises(CommandError, match="not logged in"):
        call_command("add_apple_account", "a", "--from-json", state_file(tmp_path, state))


def test_bad_endpoint_url_is_an_error(tmp_path):
    path = state_file(tmp_path, account_state("http://127.0.0.1:1/anisette"))
    with pytest.raises(CommandError, match="--fetch-endpoint is not a valid URL"):
        call_command("add_apple_account", "a", "--from-json", path, "--fetch-endpoint", "nope")


def test_interactive_login_failure_is_a_clear_error(monkeypatch, simulator):
    # The anisette answer lacks machine data and Apple's login server is out of reach here:
    # either way the command must end in a readable error, not a traceback.
    monkeypatch.setattr("builtins.input", lambda prompt="": "someone@example.com")
    monkeypatch.setattr("getpass.getpass", lambda prompt="": "secret")
    with pytest.raises(CommandError, match="login failed"):
        call_command("add_apple_account", "a", "--anisette-url", simulator.base_url + "/_sim/stats")
    assert not AppleAccount.objects.exists()


def test_simulator_writes_an_account_state_add_apple_account_accepts(tmp_path):
    path = str(tmp_path / "sim.json")
    call_command("findmy_simulator", "--port", "8799", "--write-account", path)
    call_command("add_apple_account", "sim", "--from-json", path)
    assert AppleAccount.objects.get().anisette_url == "http://127.0.0.1:8799/anisette"


def test_state_without_anisette_needs_the_flag(tmp_path):
    state = account_state("http://127.0.0.1:1/anisette")
    del state["anisette"]
    path = state_file(tmp_path, state)
    with pytest.raises(CommandError, match="pass --anisette-url"):
        call_command("add_apple_account", "a", "--from-json", path)
    call_command(
        "add_apple_account",
        "a",
        "--from-json",
        path,
        "--anisette-url",
        "http://127.0.0.1:6969/anisette",
    )
    assert AppleAccount.objects.get().anisette_url == "http://127.0.0.1:6969/anisette"
