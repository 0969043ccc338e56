"""factory-boy factories. Trackers get real P-224 keys, so the simulator can report for them."""

from __future__ import annotations

import datetime as dt
from typing import Any

import factory
from django.contrib.auth import get_user_model
from findmy import KeyPair
from rest_framework.test import APIClient

from api.auth import create_token
from findmy_sim.simulator import account_state
from trackers.models import AppleAccount, ProductionRun, Tracker, mask_apple_id


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    password = factory.django.Password("correct horse battery staple")


class ProductionRunFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ProductionRun

    name = factory.Sequence(lambda n: f"run-{n}")
    starts_at = factory.LazyFunction(lambda: dt.datetime(2020, 1, 1, tzinfo=dt.UTC))


class TrackerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Tracker
        exclude = ("key",)

    key = factory.LazyFunction(KeyPair.new)
    name = factory.Sequence(lambda n: f"tracker-{n}")
    key_material = factory.LazyAttribute(lambda o: dict(o.key.to_json()))
    hashed_adv_key = factory.LazyAttribute(lambda o: o.key.hashed_adv_key_b64)


class AppleAccountFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = AppleAccount

    name = factory.Sequence(lambda n: f"account-{n}")
    anisette_url = "http://127.0.0.1:9/anisette"
    state = factory.LazyAttribute(lambda o: account_state(o.anisette_url, f"{o.name}@example.com"))
    apple_id_hint = factory.LazyAttribute(lambda o: mask_apple_id(f"{o.name}@example.com"))


def client_for(user: Any) -> APIClient:
    """An APIClient authenticated with a new token of `user` (`client.token` holds it)."""
    _, token = create_token(user, f"{user.username}'s test token", None)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    client.token = token  # type: ignore[attr-defined]
    return client
