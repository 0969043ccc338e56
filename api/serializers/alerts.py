"""Alert rules and their deliveries."""

from __future__ import annotations

import copy
from typing import Any

from rest_framework import serializers

from api.serializers.base import OwnedRelatedField, StrictModelSerializer, full_clean
from geofences.models import AlertDelivery, AlertRule, Channel, Geofence
from trackers.models import Tracker


class AlertRuleSerializer(StrictModelSerializer):
    """A rule: which event kinds of which fences and trackers (none chosen: all of the
    owner's), sent through which channels; `schedule` holds its quiet hours in `time_zone`.
    The webhook secret is in the answer once, when a webhook rule gets it, and never again."""

    geofences = OwnedRelatedField(many=True, queryset=Geofence.objects.all(), required=False)
    trackers = OwnedRelatedField(
        many=True, queryset=Tracker.objects.defer("key_material"), required=False
    )

    class Meta:
        model = AlertRule
        fields = [
            "id",
            "name",
            "event_kinds",
            "geofences",
            "trackers",
            "channels",
            "webhook_url",
            "email_to",
            "is_active",
            "schedule",
            "time_zone",
            "owner",
            "created_at",
        ]
        read_only_fields = ["owner", "created_at"]

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        rule = copy.copy(self.instance) if self.instance else AlertRule()
        for name, value in attrs.items():
            if name not in ("geofences", "trackers"):
                setattr(rule, name, value)
        rule.owner_id = self.instance.owner_id if self.instance else self.context["owner"].pk
        full_clean(rule, exclude=["webhook_secret"])
        for name in ("geofences", "trackers"):
            foreign = [o.pk for o in attrs.get(name, []) if o.owner_id != rule.owner_id]
            if foreign:
                raise serializers.ValidationError(
                    {name: [f"{name} {foreign} do not belong to the rule's owner"]}
                )
        attrs["_rule"] = rule
        return attrs

    def create(self, validated: dict[str, Any]) -> AlertRule:
        return self._save(validated)

    def update(self, instance: AlertRule, validated: dict[str, Any]) -> AlertRule:
        return self._save(validated)

    def _save(self, validated: dict[str, Any]) -> AlertRule:
        rule: AlertRule = validated["_rule"]
        had_secret = (
            bool(rule.pk)
            and AlertRule.objects.filter(pk=rule.pk, webhook_secret__isnull=False).exists()
        )
        rule.save()
        for name in ("geofences", "trackers"):
            if name in validated:
                getattr(rule, name).set(validated[name])
        # The secret that signs this rule's webhooks, shown in this answer only.
        self.new_secret = (
            rule.webhook_secret if Channel.WEBHOOK in rule.channels and not had_secret else None
        )
        return rule

    @property
    def data(self) -> Any:
        data = super().data
        if getattr(self, "new_secret", None):
            data["webhook_secret"] = self.new_secret
        return data


class DeliverySerializer(serializers.ModelSerializer):
    class Meta:
        model = AlertDelivery
        fields = [
            "id",
            "event",
            "rule",
            "channel",
            "status",
            "attempts",
            "last_error",
            "next_attempt_at",
            "delivered_at",
            "created_at",
        ]
        read_only_fields = fields
