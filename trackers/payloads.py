"""Find My report payloads: making them (for the simulator) and reading them (through findmy).

Layout of the 88-byte payload (an 89-byte variant has one more byte at [4]):
[0:4] seconds since 2001-01-01 UTC, [4] confidence, [5:62] ephemeral P-224 public key
(uncompressed), [62:72] ciphertext, [72:88] AES-GCM tag. The plaintext is lat*1e7 (int32),
lon*1e7 (int32), horizontal accuracy in metres (uint8), status byte (uint8).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from findmy import KeyPair, LocationReport

APPLE_EPOCH = dt.datetime(2001, 1, 1, tzinfo=dt.UTC)
_P224_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFF16A2E0B8F03E13DD29455C5C2A3D


@dataclass(frozen=True, slots=True)
class Fix:
    """One position as a finder device saw it: what a report's plaintext carries."""

    timestamp: dt.datetime
    latitude: float
    longitude: float
    accuracy: int
    status: int = 0
    confidence: int = 2


@dataclass(frozen=True, slots=True)
class DecryptedReport:
    """A report decrypted with its tracker's key, ready to store (timestamp in UTC)."""

    hashed_id: str
    payload: bytes
    timestamp: dt.datetime
    latitude: float
    longitude: float
    accuracy: int
    confidence: int
    status: int


class PayloadError(ValueError):
    """A payload that is malformed (wrong length) or does not decrypt with its tracker's key."""

    def __init__(self, category: str, reason: str) -> None:
        super().__init__(reason)
        self.category = category  # "invalid_payload" or "decrypt"


class ReportEncryptor:
    """Encrypts fixes for one tracker, the way a finder device does, from its public key.

    A fresh ephemeral key per report costs an EC key generation and an ECDH (about 1,400 a
    second per core); the simulator derives one ephemeral key per tracker deterministically
    and reuses the derived AES key, so a payload costs one AES-GCM call and the same fix
    always encrypts to the same bytes (Apple returns identical payloads on every fetch).
    """

    def __init__(self, adv_key: bytes, seed: bytes = b"") -> None:
        if len(adv_key) != 28:
            raise ValueError("an advertisement key is 28 bytes")
        # Either Y of the point gives the same ECDH x-coordinate, so the X coordinate suffices.
        public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP224R1(), b"\x02" + adv_key)
        scalar = int.from_bytes(hashlib.sha256(b"ephemeral" + seed + adv_key).digest(), "big")
        ephemeral = ec.derive_private_key(scalar % (_P224_ORDER - 1) + 1, ec.SECP224R1())
        self._eph_public = ephemeral.public_key().public_bytes(
            Encoding.X962, PublicFormat.UncompressedPoint
        )
        shared = ephemeral.exchange(ec.ECDH(), public)
        symmetric = hashlib.sha256(shared + b"\x00\x00\x00\x01" + self._eph_public).digest()
        self._aes = AESGCM(symmetric[:16])
        self._iv = symmetric[16:]
        self.hashed_id = base64.b64encode(hashlib.sha256(adv_key).digest()).decode()

    def encrypt(self, fix: Fix, *, long_format: bool = False) -> bytes:
        plaintext = struct.pack(
            ">iiBB",
            round(fix.latitude * 1e7),
            round(fix.longitude * 1e7),
            max(0, min(255, fix.accuracy)),
            fix.status & 0xFF,
        )
        sealed = self._aes.encrypt(self._iv, plaintext, None)  # ciphertext || 16-byte tag
        seconds = int((fix.timestamp - APPLE_EPOCH).total_seconds())
        head = struct.pack(">I", seconds)
        # The 89-byte format carries one extra byte at [4]; findmy reads confidence at [5].
        extra = bytes([0]) if long_format else b""
        return head + extra + bytes([fix.confidence]) + self._eph_public + sealed


def decrypt_payload(payload: bytes, hashed_id: str, key: KeyPair) -> DecryptedReport:
    """Decrypt one payload through findmy; raise PayloadError instead of crashing."""
    if len(payload) not in (88, 89):
        raise PayloadError("invalid_payload", f"payload is {len(payload)} bytes, expected 88 or 89")
    report = LocationReport(payload, base64.b64decode(hashed_id))
    try:
        report.decrypt(key)
        return DecryptedReport(
            hashed_id=hashed_id,
            payload=payload,
            # findmy returns the machine's local zone; we store UTC.
            timestamp=report.timestamp.astimezone(dt.UTC),
            latitude=report.latitude,
            longitude=report.longitude,
            accuracy=report.horizontal_accuracy,
            confidence=report.confidence,
            status=report.status,
        )
    except InvalidTag:
        raise PayloadError(
            "decrypt", "authentication tag mismatch (tampered or wrong key)"
        ) from None
    except ValueError as exc:
        # Wrong key for this id, or an ephemeral key that is not a point on P-224.
        raise PayloadError("decrypt", str(exc) or "undecryptable payload") from None
