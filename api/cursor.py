"""The keyset cursor of location lists: the (timestamp, id) of the last row a page showed.

Location lists are ordered by (timestamp, id), and the next page starts strictly after the
cursor's pair, so it stays right while reports arrive (a new row lands before or after the
position, never shifts it the way an offset does). The token is opaque to clients: 16 bytes
(microseconds since the epoch, report id) and a 12-byte HMAC keyed with SECRET_KEY, in URL-safe
base64 (38 characters, nothing to escape in a query string). A token that was not made here,
or was changed, is a 400 naming `cursor`.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hmac
import struct

from django.utils.crypto import salted_hmac
from rest_framework.exceptions import ValidationError

_SALT = "api.cursor.locations"
_PAIR = struct.Struct(">qq")  # microseconds since the epoch (UTC), report id
_TAG_BYTES = 12
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
INVALID = "not a cursor this API gave out"

Position = tuple[dt.datetime, int]


def _tag(body: bytes) -> bytes:
    return salted_hmac(_SALT, body, algorithm="sha256").digest()[:_TAG_BYTES]


def encode(timestamp: dt.datetime, report_id: int) -> str:
    """The token naming the position just after (timestamp, report_id)."""
    micros = (timestamp - _EPOCH) // dt.timedelta(microseconds=1)
    body = _PAIR.pack(micros, report_id)
    return base64.urlsafe_b64encode(body + _tag(body)).decode().rstrip("=")


def decode(token: str) -> Position:
    """(timestamp, report id) of a token this module made; ValidationError on `cursor` else."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raw = b""
    body, tag = raw[: _PAIR.size], raw[_PAIR.size :]
    if len(raw) != _PAIR.size + _TAG_BYTES or not hmac.compare_digest(tag, _tag(body)):
        raise ValidationError({"cursor": [INVALID]})
    micros, report_id = _PAIR.unpack(body)
    try:
        timestamp = _EPOCH + dt.timedelta(microseconds=micros)
    except OverflowError:  # signed by us, so never; but never a 500 either
        raise ValidationError({"cursor": [INVALID]}) from None
    return timestamp, report_id
