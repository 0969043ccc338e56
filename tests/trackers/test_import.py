"""import_trackers: findmy JSON (object, list, JSON lines, accessory) and CSV; all or nothing."""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from findmy import FindMyAccessory, KeyPair

from trackers.models import Tracker, TrackerKind

from ..factories import ProductionRunFactory, UserFactory

pytestmark = pytest.mark.django_db


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def keypair_json(key: KeyPair, name: str) -> dict:
    data = dict(key.to_json())
    data["name"] = name
    return data


def test_it_imports_a_findmy_keypair_object(tmp_path, capsys):
    key = KeyPair.new()
    call_command("import_trackers", write(tmp_path, "k.json", json.dumps(key.to_json())))
    tracker = Tracker.objects.get()
    assert tracker.hashed_adv_key == key.hashed_adv_key_b64
    assert tracker.kind == TrackerKind.STATIC
    assert KeyPair.from_json(tracker.key_material).private_key_bytes == key.private_key_bytes
    assert "imported 1 trackers, 0 already known" in capsys.readouterr().out


def test_it_imports_a_list_and_json_lines(tmp_path):
    keys = [KeyPair.new() for _ in range(4)]
    listed = json.dumps([keypair_json(k, f"a{i}") for i, k in enumerate(keys[:2])])
    lines = "\n".join(json.dumps(keypair_json(k, f"b{i}")) for i, k in enumerate(keys[2:]))
    call_command("import_trackers", write(tmp_path, "list.json", listed))
    call_command("import_trackers", write(tmp_path, "lines.jsonl", lines))
    assert sorted(Tracker.objects.values_list("name", flat=True)) == ["a0", "a1", "b0", "b1"]


def test_it_imports_csv_with_run_and_owner(tmp_path):
    run, owner = ProductionRunFactory(name="batch-7"), UserFactory(username="ops")
    keys = [KeyPair.new() for _ in range(3)]
    rows = "\n".join(f"tag-{i},{k.private_key_b64}" for i, k in enumerate(keys))
    path = write(tmp_path, "keys.csv", "name,private_key\n" + rows + "\n")

    call_command("import_trackers", path, "--production-run", "batch-7", "--owner", "ops")

    assert Tracker.objects.filter(production_run=run, owner=owner).count() == 3
    assert set(Tracker.objects.values_list("hashed_adv_key", flat=True)) == {
        k.hashed_adv_key_b64 for k in keys
    }


def test_it_imports_a_findmy_accessory(tmp_path):
    accessory = FindMyAccessory(
        master_key=bytes(range(1, 29)),
        skn=bytes(32),
        sks=bytes(range(32)),
        paired_at=dt.datetime(2025, 1, 1, tzinfo=dt.UTC),
        name="AirTag",
    )
    call_command("import_trackers", write(tmp_path, "a.json", json.dumps(accessory.to_json())))
    tracker = Tracker.objects.get()
    assert tracker.kind == TrackerKind.ACCESSORY
    assert tracker.name == "AirTag"
    assert tracker.key_material["master_key"] == bytes(range(1, 29)).hex()


def test_reimport_is_harmless(tmp_path, capsys):
    keys = [KeyPair.new() for _ in range(3)]
    path = write(tmp_path, "k.json", json.dumps([k.to_json() for k in keys]))
    call_command("import_trackers", path)
    call_command("import_trackers", path)
    assert Tracker.objects.count() == 3
    assert "imported 0 trackers, 3 already known" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (
            '{"type": "keypair", "private_key": "not base64!", "key_type": 0, "name": "x"}',
            "not valid base64",
        ),
        (
            '{"type": "keypair", "private_key": "' + base64.b64encode(bytes(27)).decode() + '"}',
            "27 bytes, expected 28",
        ),
        ('{"type": "airtag", "private_key": "AAAA"}', "unknown type 'airtag'"),
        ("{not json", "invalid JSON"),
        ("[1, 2]", "expected a JSON object"),
    ],
)
def test_invalid_entry_stops_the_import(tmp_path, capsys, line, reason):
    good = json.dumps(KeyPair.new().to_json())
    path = write(tmp_path, "k.jsonl", good + "\n" + line + "\n")
    with pytest.raises(CommandError, match="1 invalid entry; nothing imported"):
        call_command("import_trackers", path)
    err = capsys.readouterr().err
    assert "line 2:" in err
    assert reason in err
    assert not Tracker.objects.exists()


def test_duplicate_within_the_file_is_reported_by_index(tmp_path, capsys):
    key = KeyPair.new()
    path = write(
        tmp_path, "k.json", json.dumps([key.to_json(), KeyPair.new().to_json(), key.to_json()])
    )
    with pytest.raises(CommandError):
        call_command("import_trackers", path)
    assert "index 2: duplicate of the key at index 0" in capsys.readouterr().err
    assert not Tracker.objects.exists()


def test_csv_problems_name_the_line(tmp_path, capsys):
    path = write(
        tmp_path, "k.csv", f"name,private_key\nok,{KeyPair.new().private_key_b64}\nbad,@@\n"
    )
    with pytest.raises(CommandError):
        call_command("import_trackers", path)
    assert "line 3: private key is not valid base64" in capsys.readouterr().err


def test_skip_invalid_imports_the_valid_ones(tmp_path):
    good = KeyPair.new()
    path = write(tmp_path, "k.csv", f"name,private_key\nok,{good.private_key_b64}\nbad,AAAA\n")
    call_command("import_trackers", path, "--skip-invalid")
    assert list(Tracker.objects.values_list("hashed_adv_key", flat=True)) == [
        good.hashed_adv_key_b64
    ]


def test_bad_csv_header_is_an_error(tmp_path):
    path = write(tmp_path, "k.csv", "label,key\nx,AAAA\n")
    with pytest.raises(CommandError):
        call_command("import_trackers", path)
    assert not Tracker.objects.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--production-run", "nope"], "no production run named 'nope'"),
        (["--owner", "ghost"], "no user named 'ghost'"),
    ],
)
def test_unknown_run_or_owner_is_an_error(tmp_path, args, message):
    path = write(tmp_path, "k.json", json.dumps(KeyPair.new().to_json()))
    with pytest.raises(CommandError, match=message):
        call_command("import_trackers", path, *args)


def test_missing_file_is_an_error():
    with pytest.raises(CommandError, match="cannot read"):
        call_command("import_trackers", "/nonexistent/keys.json")


def test_empty_file_is_an_error(tmp_path):
    with pytest.raises(CommandError):
        call_command("import_trackers", write(tmp_path, "k.json", "  \n"))
