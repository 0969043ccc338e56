"""API tokens: listed with their name and last use; the token itself only once, on creation."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from api.auth import DEFAULT_EXPIRY_HOURS, MAX_EXPIRY_HOURS, check_token_name
from api.models import TOKEN_NAME_MAX_LENGTH, TokenDetails
from api.serializers.base import StrictSerializer


class TokenSerializer(serializers.ModelSerializer):
    created = serializers.DateTimeField(source="token.created", read_only=True)
    expiry = serializers.DateTimeField(source="token.expiry", read_only=True, allow_null=True)

    class Meta:
        model = TokenDetails
        fields = ["id", "name", "created", "last_used_at", "expiry"]
        read_only_fields = fields


class TokenCreateSerializer(StrictSerializer):
    name = serializers.CharField(max_length=TOKEN_NAME_MAX_LENGTH)
    expiry_hours = serializers.IntegerField(
        min_value=0,
        max_value=MAX_EXPIRY_HOURS,
        default=DEFAULT_EXPIRY_HOURS,
        help_text=f"hours until it expires (default {DEFAULT_EXPIRY_HOURS}); 0: never",
    )

    def validate_name(self, value: str) -> str:
        try:
            return check_token_name(value)
        except ValueError as exc:
            raise serializers.ValidationError(str(exc)) from None


class NewTokenSerializer(TokenSerializer):
    """A token just created: the only answer that carries it."""

    token = serializers.SerializerMethodField()

    class Meta(TokenSerializer.Meta):
        fields = [*TokenSerializer.Meta.fields, "token"]
        read_only_fields = fields

    def get_token(self, details: Any) -> str:
        return self.context["token"]
