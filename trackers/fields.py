"""Model fields whose values are encrypted at rest (Fernet, keys from FIELD_ENCRYPTION_KEY).

FIELD_ENCRYPTION_KEY holds one or more keys: the first encrypts, every one decrypts. A key is
rotated by prepending a new one and running `manage.py rotate_encryption_key`, which uses
`encrypted_fields()`, `is_current()` and `rotate_token()` below.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.apps import apps
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models


@lru_cache(maxsize=4)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    # The first key encrypts; every key decrypts, so keys can be rotated by prepending a new one.
    return MultiFernet([Fernet(k) for k in keys])


def fernet() -> MultiFernet:
    return _fernet(tuple(settings.FIELD_ENCRYPTION_KEYS))


@lru_cache(maxsize=4)
def _first(key: str) -> Fernet:
    return Fernet(key)


def is_current(token: str) -> bool:
    """Whether `token` was written with the first (current) key of FIELD_ENCRYPTION_KEY."""
    try:
        _first(settings.FIELD_ENCRYPTION_KEYS[0]).decrypt(token.encode())
    except InvalidToken:
        return False
    return True


def rotate_token(token: str) -> str:
    """`token` re-encrypted with the first key: same plaintext, same timestamp.

    Works on the ciphertext alone (no JSON round trip). InvalidToken if no key decrypts it.
    """
    return fernet().rotate(token.encode()).decode()


def encrypt_text(value: str) -> str:
    return fernet().encrypt(value.encode()).decode()


def decrypt_text(token: str) -> str:
    try:
        return fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        raise ImproperlyConfigured(
            "An encrypted field could not be decrypted: FIELD_ENCRYPTION_KEY does not hold "
            "the key it was written with"
        ) from None


class EncryptedJSONField(models.TextField):
    """A JSON value stored as a Fernet token. Not searchable, never shown by the admin or API."""

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> Any:
        if value is None:
            return None
        return json.loads(decrypt_text(value))

    def to_python(self, value: Any) -> Any:
        return value

    def get_prep_value(self, value: Any) -> str | None:
        if value is None:
            return None
        return encrypt_text(json.dumps(value, sort_keys=True))

    def value_to_string(self, obj: models.Model) -> str:
        # dumpdata/serializers get the ciphertext, never the plain value.
        return self.get_prep_value(self.value_from_object(obj)) or ""


def encrypted_fields() -> list[tuple[type[models.Model], EncryptedJSONField]]:
    """Every EncryptedJSONField of the installed models, each once (where its column is)."""
    found = []
    for model in apps.get_models():
        if model._meta.proxy or not model._meta.managed:
            continue
        # local_concrete_fields: a multi-table child does not list its parent's columns again.
        for field in model._meta.local_concrete_fields:
            if isinstance(field, EncryptedJSONField):
                found.append((model, field))
    return sorted(found, key=lambda mf: (mf[0]._meta.label, mf[1].name))
