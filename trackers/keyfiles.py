"""Reading tracker keys from files: findmy's own JSON (objects, lists, JSON lines) and CSV.

Every entry is validated before anything is written (keys, and names the `Tracker.name`
column can hold); a problem is reported with its line (or list index) and reason.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from findmy import FindMyAccessory, KeyPair

from . import rolling
from .models import Tracker


@dataclass(frozen=True)
class KeyEntry:
    """One tracker's keys, validated: ready to become a Tracker row."""

    where: str  # "line 3", "index 7": for messages
    name: str
    kind: str  # TrackerKind value
    hashed_adv_key: str
    key_material: dict[str, Any]

    def to_tracker(self, **fields: Any) -> Tracker:
        """An unsaved Tracker with these keys; `fields` sets the rest (run, owner)."""
        return Tracker(
            name=self.name,
            kind=self.kind,
            key_material=self.key_material,
            hashed_adv_key=self.hashed_adv_key,
            **fields,
        )


@dataclass(frozen=True)
class KeyProblem:
    where: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


@dataclass
class ImportResult:
    """What `store_entries` did: the entries it created trackers for, and those whose key
    was already known (left as they are)."""

    created: list[KeyEntry] = field(default_factory=list)
    known: list[KeyEntry] = field(default_factory=list)


def store_entries(entries: list[KeyEntry], **fields: Any) -> ImportResult:
    """Create a tracker (with `fields`: owner, production run) for every entry whose key is
    not known yet, in one transaction; known keys are left alone, so re-importing is harmless.
    Used by `import_trackers` and the API's upload."""
    result = ImportResult()
    with transaction.atomic():
        known = set(
            Tracker.objects.filter(
                hashed_adv_key__in=[e.hashed_adv_key for e in entries]
            ).values_list("hashed_adv_key", flat=True)
        )
        for entry in entries:
            (result.known if entry.hashed_adv_key in known else result.created).append(entry)
        Tracker.objects.bulk_create(
            [e.to_tracker(**fields) for e in result.created], batch_size=1000, ignore_conflicts=True
        )
    return result


def check_name(name: str) -> str:
    """`name` if a Tracker can be named so; a ValueError saying why not."""
    limit = Tracker._meta.get_field("name").max_length
    if len(name) > limit:
        raise ValueError(f"name is {len(name)} characters, at most {limit}")
    for char in name:
        # PostgreSQL text cannot hold NUL; other control characters would end up in logs,
        # CSV exports and the admin; a lone surrogate (from a JSON escape) cannot be encoded.
        category = unicodedata.category(char)
        if category == "Cc":
            raise ValueError(f"name contains the control character U+{ord(char):04X}")
        if category == "Cs":
            raise ValueError(f"name contains U+{ord(char):04X}, a lone surrogate (not text)")
    return name


def entry_from_keypair(key: KeyPair, name: str, where: str = "") -> KeyEntry:
    name = check_name(name)
    material = dict(key.to_json())
    material["name"] = name
    return KeyEntry(where, name, "static", key.hashed_adv_key_b64, material)


def entry_from_accessory(accessory: FindMyAccessory, name: str, where: str = "") -> KeyEntry:
    name = check_name(name)
    material = dict(accessory.to_json())
    material["name"] = name
    master = bytes.fromhex(material["master_key"])
    if len(master) != 28:
        raise ValueError(f"master key is {len(master)} bytes, expected 28")
    return KeyEntry(where, name, "accessory", rolling.identity(master), material)


def _from_mapping(obj: Any, where: str, default_name: str) -> KeyEntry:
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    kind = obj.get("type")
    if kind == "keypair":
        raw = obj.get("private_key")
        if not isinstance(raw, str):
            raise ValueError("'private_key' is missing or not a string")
        key = KeyPair(_private_key_bytes(raw))
        return entry_from_keypair(key, str(obj.get("name") or default_name), where)
    if kind == "accessory":
        try:
            accessory = FindMyAccessory.from_json(obj)
        except (KeyError, ValueError, TypeError, AssertionError) as exc:
            raise ValueError(f"not a valid findmy accessory: {exc!r}") from None
        return entry_from_accessory(accessory, str(accessory.name or default_name), where)
    raise ValueError(f"unknown type {kind!r} (expected 'keypair' or 'accessory')")


def _private_key_bytes(raw: str) -> bytes:
    try:
        key = base64.b64decode(raw.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("private key is not valid base64") from None
    if len(key) != 28:
        raise ValueError(f"private key is {len(key)} bytes, expected 28 (P-224)")
    if int.from_bytes(key, "big") == 0:
        raise ValueError("private key is zero")
    return key


def _entry(parse: Any, where: str, entries: list[KeyEntry], problems: list[KeyProblem]) -> None:
    try:
        entries.append(parse())
    except ValueError as exc:
        problems.append(KeyProblem(where, str(exc)))


def parse_key_file(text: str, filename: str = "") -> tuple[list[KeyEntry], list[KeyProblem]]:
    """Parse a key file; return the valid entries and the problems (duplicates included)."""
    entries: list[KeyEntry] = []
    problems: list[KeyProblem] = []
    stripped = text.lstrip("\ufeff").strip()
    if not stripped:
        return [], [KeyProblem("file", "the file is empty")]
    if filename.lower().endswith(".csv") or stripped.lower().startswith("name,"):
        _parse_csv(stripped, entries, problems)
    elif stripped[0] == "[":
        try:
            items = _loads(stripped)
        except json.JSONDecodeError as exc:
            return [], [KeyProblem(f"line {exc.lineno}", f"invalid JSON: {exc.msg}")]
        for i, obj in enumerate(items):
            _entry(
                lambda o=obj, i=i: _from_mapping(o, f"index {i}", f"tracker-{i}"),
                f"index {i}",
                entries,
                problems,
            )
    else:
        _parse_json_objects(stripped, entries, problems)
    _flag_duplicates(entries, problems)
    return entries, problems


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except RecursionError:  # "[[[[..." deeper than the interpreter's stack
        raise json.JSONDecodeError("nested too deeply", text, 0) from None


def _parse_json_objects(text: str, entries: list[KeyEntry], problems: list[KeyProblem]) -> None:
    try:  # a single (possibly pretty-printed) object
        obj = _loads(text)
    except json.JSONDecodeError:
        obj = None
    if isinstance(obj, dict):
        _entry(lambda: _from_mapping(obj, "line 1", "tracker-1"), "line 1", entries, problems)
        return
    for lineno, line in enumerate(text.splitlines(), start=1):  # JSON lines
        if not line.strip():
            continue
        where = f"line {lineno}"
        try:
            item = _loads(line)
        except json.JSONDecodeError as exc:
            problems.append(KeyProblem(where, f"invalid JSON: {exc.msg}"))
            continue
        _entry(
            lambda o=item, w=where, n=lineno: _from_mapping(o, w, f"tracker-{n}"),
            where,
            entries,
            problems,
        )


def _parse_csv(text: str, entries: list[KeyEntry], problems: list[KeyProblem]) -> None:
    reader = csv.DictReader(io.StringIO(text))
    try:
        header = [h.strip().lower() for h in reader.fieldnames or []]
        if header[:2] != ["name", "private_key"]:
            problems.append(KeyProblem("line 1", "CSV header must be 'name,private_key'"))
            return
        for row in reader:
            _csv_row(row, reader.line_num, entries, problems)
    except csv.Error as exc:  # a field over the csv module's size limit, say
        problems.append(KeyProblem(f"line {reader.line_num}", f"invalid CSV: {exc}"))


def _csv_row(
    row: dict[str, str | None], line: int, entries: list[KeyEntry], problems: list[KeyProblem]
) -> None:
    where = f"line {line}"
    values = {k.strip().lower(): (v or "").strip() for k, v in row.items() if k}
    name = values.get("name") or f"tracker-{line}"

    def parse() -> KeyEntry:
        key = KeyPair(_private_key_bytes(values.get("private_key", "")))
        return entry_from_keypair(key, name, where)

    _entry(parse, where, entries, problems)


def _flag_duplicates(entries: list[KeyEntry], problems: list[KeyProblem]) -> None:
    first: dict[str, str] = {}
    for entry in list(entries):
        if entry.hashed_adv_key in first:
            problems.append(
                KeyProblem(entry.where, f"duplicate of the key at {first[entry.hashed_adv_key]}")
            )
            entries.remove(entry)
        else:
            first[entry.hashed_adv_key] = entry.where
