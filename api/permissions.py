"""Tenancy: every queryset of the API goes through `owned()`."""

from __future__ import annotations

from typing import Any, TypeVar

from django.db.models import QuerySet

Q = TypeVar("Q", bound=QuerySet)


def owned(queryset: Q, user: Any, owner_path: str) -> Q:
    """The rows of `queryset` that `user` may see: all of them for staff, otherwise those whose
    `owner_path` ("owner", "tracker__owner", "rule__owner") is the user; none for anonymous.

    Another user's object is therefore simply absent (404), never a 403 that confirms it exists.
    """
    if user is None or not user.is_authenticated:
        return queryset.none()
    if user.is_staff:
        return queryset
    return queryset.filter(**{owner_path: user})
