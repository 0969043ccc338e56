"""Payloads the simulator makes are real Find My payloads: findmy decrypts them."""

from __future__ import annotations

import base64
import datetime as dt

import pytest
from findmy import KeyPair

from findmy_sim.simulator import SimulatedTracker
from trackers.payloads import Fix, PayloadError, ReportEncryptor, decrypt_payload

FIX = Fix(dt.datetime(2026, 11, 20, 10, 0, tzinfo=dt.UTC), 52.5200066, 13.404954, 35, 0xA0, 3)


@pytest.mark.parametrize("long_format", [False, True])
def test_encrypted_fix_decrypts_through_findmy(long_format: bool) -> None:
    key = KeyPair.new()
    encryptor = ReportEncryptor(key.adv_key_bytes)
    payload = encryptor.encrypt(FIX, long_format=long_format)

    report = decrypt_payload(payload, key.hashed_adv_key_b64, key)

    assert len(payload) == (89 if long_format else 88)
    assert (report.latitude, report.longitude) == (52.5200066, 13.404954)
    assert (report.accuracy, report.status, report.confidence) == (35, 0xA0, 3)
    assert report.timestamp == FIX.timestamp
    assert report.timestamp.utcoffset() == dt.timedelta(0)


def test_hashed_id_matches_findmy() -> None:
    key = KeyPair.new()
    assert ReportEncryptor(key.adv_key_bytes).hashed_id == key.hashed_adv_key_b64


def test_wrong_key_is_a_decrypt_error() -> None:
    key, other = KeyPair.new(), KeyPair.new()
    payload = ReportEncryptor(key.adv_key_bytes).encrypt(FIX)
    with pytest.raises(PayloadError) as err:
        decrypt_payload(payload, key.hashed_adv_key_b64, other)
    assert err.value.category == "decrypt"


def test_tampered_tag_is_a_decrypt_error() -> None:
    key = KeyPair.new()
    payload = bytearray(ReportEncryptor(key.adv_key_bytes).encrypt(FIX))
    payload[-1] ^= 1
    with pytest.raises(PayloadError) as err:
        decrypt_payload(bytes(payload), key.hashed_adv_key_b64, key)
    assert err.value.category == "decrypt"


def test_truncated_payload_is_invalid() -> None:
    key = KeyPair.new()
    payload = ReportEncryptor(key.adv_key_bytes).encrypt(FIX)[:40]
    with pytest.raises(PayloadError) as err:
        decrypt_payload(payload, key.hashed_adv_key_b64, key)
    assert err.value.category == "invalid_payload"


def test_simulated_tracker_reports_are_deterministic_and_decrypt() -> None:
    key = KeyPair.new()
    start = dt.datetime(2026, 11, 1, tzinfo=dt.UTC).timestamp()
    end = start + 24 * 3600

    first = SimulatedTracker(key.adv_key_bytes).payloads_between(start, end)
    again = SimulatedTracker(key.adv_key_bytes).payloads_between(start, end)

    assert first == again
    assert 16 <= len(first) <= 49  # one report every 30 to 90 minutes
    reports = [decrypt_payload(base64.b64decode(p), key.hashed_adv_key_b64, key) for p in first]
    assert {len(base64.b64decode(p)) for p in first} == {88, 89}
    assert all(start <= r.timestamp.timestamp() <= end for r in reports)
    assert all(5 <= r.accuracy <= 255 for r in reports)


def test_simulated_tracker_dwells_and_moves() -> None:
    tracker = SimulatedTracker(KeyPair.new().adv_key_bytes)
    start = dt.datetime(2026, 11, 1, tzinfo=dt.UTC).timestamp()
    samples = [tracker.position(start + minute * 60) for minute in range(0, 7 * 24 * 60, 10)]
    moving = [s for s in samples if s[2]]
    still = [s for s in samples if not s[2]]
    assert moving
    assert still
    assert len(moving) < 0.2 * len(samples)  # trackers spend most of their time at places
    assert len({(round(s[0], 6), round(s[1], 6)) for s in still}) <= len(tracker.places)
