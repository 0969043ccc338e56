"""The django-q2 task of the latest-location view (locations/latest.py)."""

from __future__ import annotations

from typing import Any

from .latest import maintain


def refresh_latest() -> dict[str, Any]:
    """Every minute: refresh the view concurrently, or recreate it if it is missing or broken."""
    return maintain(force_refresh=True).as_dict()
