"""What every input serializer of the API shares: unknown or read-only body fields are a
400 naming them, and the model's own validation speaks through the serializer's fields."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Model, QuerySet
from rest_framework import serializers

from api.permissions import owned


class OwnedRelatedField(serializers.PrimaryKeyRelatedField):
    """The id of one of the requester's objects: `queryset` through `owned()` for the
    request's user, so another user's id is "does not exist"; without a request, no id."""

    def get_queryset(self) -> QuerySet:
        request = self.context.get("request")
        queryset = self.queryset.all()
        return queryset.none() if request is None else owned(queryset, request.user, "owner")


class StrictMixin:
    """Refuse body fields the serializer does not know, or cannot write."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, Mapping):
            errors = {}
            for name in data:
                field = self.fields.get(name)  # type: ignore[attr-defined]
                if field is None:
                    errors[name] = ["unknown field"]
                elif field.read_only:
                    errors[name] = ["read-only field"]
            if errors:
                raise serializers.ValidationError(errors)
        return super().to_internal_value(data)  # type: ignore[misc]


class StrictModelSerializer(StrictMixin, serializers.ModelSerializer):
    pass


class StrictSerializer(StrictMixin, serializers.Serializer):
    pass


def model_errors(
    exc: DjangoValidationError, renames: Mapping[str, str] | None = None
) -> serializers.ValidationError:
    """A model's ValidationError as a DRF one, its fields renamed to the API's names."""
    renames = renames or {}
    if hasattr(exc, "error_dict"):
        return serializers.ValidationError(
            {
                renames.get(name, name): [str(m) for e in errors for m in e.messages]
                for name, errors in exc.error_dict.items()
            }
        )
    return serializers.ValidationError({"non_field_errors": exc.messages})


def full_clean(instance: Model, renames: Mapping[str, str] | None = None, **kwargs: Any) -> None:
    """`instance.full_clean()`, raising the API's ValidationError."""
    try:
        instance.full_clean(**kwargs)
    except DjangoValidationError as exc:
        raise model_errors(exc, renames) from None
