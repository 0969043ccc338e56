"""add_apple_account and import_trackers: endpoints, hints and hostile input end in clear errors."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from findmy import KeyPair

from findmy_sim.simulator import account_state
from trackers.models import AppleAccount, Tracker

pytestmark = pytest.mark.django_db

LOOPBACK = "http://127.0.0.1:6969/anisette"


def state_file(tmp_path: Path, anisette_url: str = LOOPBACK, username: str = "a@example.com"):
    path = tmp_path / "account.json"
    path.write_text(json.dumps(account_state(anisette_url, username)))
    return str(path)


def add_account(*args: str) -> None:
    call_command("add_apple_account", "a", *args)


def write(tmp_path: Path, name: str, data: str | bytes) -> str:
    path = tmp_path / name
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data)
    return str(path)


def keypair_line(name: str) -> str:
    data = dict(KeyPair.new().to_json())
    data["name"] = name
    return json.dumps(data, ensure_ascii=False)


# --- add_apple_account: endpoints -------------------------------------------------------


@pytest.mark.parametrize("flag", ["--fetch-endpoint", "--anisette-url"])
def test_plain_http_to_a_remote_host_is_refused(tmp_path, flag):
    with pytest.raises(CommandError, match=f"{flag} 'http://fetch.example.com/' is plain http"):
        add_account("--from-json", state_file(tmp_path), flag, "http://fetch.example.com/")
    assert not AppleAccount.objects.exists()


def test_plain_http_anisette_url_in_the_state_is_refused(tmp_path):
    path = state_file(tmp_path, "http://anisette.example.com/")
    with pytest.raises(CommandError, match=r"anisette URL in .* is plain http"):
        add_account("--from-json", path)
    assert not AppleAccount.objects.exists()


def test_https_endpoints_are_accepted(tmp_path):
    path = state_file(tmp_path, "https://anisette.example.com/")
    add_account("--from-json", path, "--fetch-endpoint", "https://f.example.com")
    account = AppleAccount.objects.get()
    assert account.anisette_url == "https://anisette.example.com/"
    assert account.fetch_endpoint == "https://f.example.com"


def test_an_allowed_host_may_use_plain_http(tmp_path, settings):
    settings.FINDMY_ALLOWED_ENDPOINT_HOSTS = ["anisette"]
    add_account("--from-json", state_file(tmp_path), "--anisette-url", "http://anisette:6969")
    assert AppleAccount.objects.get().anisette_url == "http://anisette:6969"


def test_a_url_longer_than_the_column_is_refused(tmp_path):
    url = "https://f.example.com/" + "x" * 500
    with pytest.raises(CommandError, match="--fetch-endpoint is longer than 500"):
        add_account("--from-json", state_file(tmp_path), "--fetch-endpoint", url)
    assert not AppleAccount.objects.exists()


# --- add_apple_account: the Apple ID hint -----------------------------------------------


def test_the_apple_id_is_stored_masked(tmp_path):
    add_account("--from-json", state_file(tmp_path, username="jane@x.org"))
    assert AppleAccount.objects.get().apple_id_hint == "j***@x.org"


def test_update_replaces_the_hint(tmp_path):
    add_account("--from-json", state_file(tmp_path, username="a@x.org"))
    path = state_file(tmp_path, username="bob@y.org")
    add_account("--from-json", path, "--update")
    assert AppleAccount.objects.get().apple_id_hint == "b***@y.org"


# --- add_apple_account: bad input ---------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (bytes(range(256)), "not UTF-8 text"),
        (json.dumps(account_state(LOOPBACK))[:-40].encode(), "not valid JSON"),
    ],
    ids=["binary", "truncated"],
)
def test_unreadable_state_file_is_an_error(tmp_path, content, message):
    path = write(tmp_path, "account.json", content)
    with pytest.raises(CommandError, match=message):
        add_account("--from-json", path)
    assert not AppleAccount.objects.exists()


def test_a_directory_as_state_file_is_an_error(tmp_path):
    with pytest.raises(CommandError, match="cannot read"):
        add_account("--from-json", str(tmp_path))


@pytest.mark.parametrize("name", ["a\x00b", "x" * 101, "tab\there", "  "])
def test_a_bad_name_is_an_error(tmp_path, name):
    with pytest.raises(CommandError, match="NAME must be 1 to 100 printable characters"):
        call_command("add_apple_account", name, "--from-json", state_file(tmp_path))
    assert not AppleAccount.objects.exists()


def test_end_of_input_at_the_apple_id_prompt_is_an_error(monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    with pytest.raises(CommandError, match="no answer to 'Apple ID' \\(end of input\\)"):
        add_account("--anisette-url", LOOPBACK)
    assert not AppleAccount.objects.exists()


@pytest.mark.parametrize(
    ("raised", "message"),
    [(EOFError, "no answer to 'Password'"), (KeyboardInterrupt, "interrupted at 'Password'")],
)
def test_no_password_is_an_error(monkeypatch, raised, message):
    def getpass(prompt: str = "") -> str:
        raise raised

    monkeypatch.setattr("getpass.getpass", getpass)
    with pytest.raises(CommandError, match=message):
        add_account("--anisette-url", LOOPBACK, "--username", "a@x.org")
    assert not AppleAccount.objects.exists()


# --- import_trackers ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("x" * 201, "name is 201 characters, at most 200"),
        ("a\x00b", "name contains the control character U+0000"),
        ("a\nb", "name contains the control character U+000A"),
    ],
    ids=["long", "nul", "newline"],
)
def test_a_bad_tracker_name_is_an_invalid_entry(tmp_path, capsys, name, reason):
    path = write(tmp_path, "k.jsonl", keypair_line("ok") + "\n" + keypair_line(name) + "\n")
    with pytest.raises(CommandError, match="1 invalid entry; nothing imported"):
        call_command("import_trackers", path)
    assert f"line 2: {reason}" in capsys.readouterr().err
    assert not Tracker.objects.exists()


def test_a_name_as_long_as_the_column_is_imported(tmp_path):
    call_command("import_trackers", write(tmp_path, "k.jsonl", keypair_line("x" * 200)))
    assert Tracker.objects.get().name == "x" * 200


def test_skip_invalid_imports_around_a_bad_name(tmp_path):
    key = KeyPair.new()
    text = (
        f"name,private_key\nbad\x00name,{KeyPair.new().private_key_b64}\nok,{key.private_key_b64}\n"
    )
    call_command("import_trackers", write(tmp_path, "k.csv", text), "--skip-invalid")
    assert list(Tracker.objects.values_list("name", flat=True)) == ["ok"]


def test_a_binary_key_file_is_an_error(tmp_path):
    with pytest.raises(CommandError, match="not UTF-8 text"):
        call_command("import_trackers", write(tmp_path, "k.json", b"\x89PNG\r\n\x1a\n\xff\x00"))
    assert not Tracker.objects.exists()


def test_binary_standard_input_is_an_error(monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"name,private_key\n\xff\xfe")))
    with pytest.raises(CommandError, match="standard input is not UTF-8 text"):
        call_command("import_trackers", "-")
    assert not Tracker.objects.exists()


def test_standard_input_is_read_as_utf8(monkeypatch):
    line = keypair_line("café").encode()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(line), encoding="latin-1"))
    call_command("import_trackers", "-")
    assert Tracker.objects.get().name == "café"


@pytest.mark.parametrize(
    ("command", "limit"),
    [
        ("fetch_trackers", 200),
        ("process_locations", 200),
        ("send_alerts", 200),
        ("geocode_locations", 180),
    ],
)
@pytest.mark.parametrize("bad", ["a\x00b", "  ", "too long"])
def test_a_bad_service_name_is_an_error(command, limit, bad):
    name = "x" * (limit + 1) if bad == "too long" else bad
    with pytest.raises(CommandError, match=f"--name must be 1 to {limit} characters, without NUL"):
        call_command(command, "--once", "--name", name)
