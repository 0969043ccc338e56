"""Create an API token for a user: what scripts send as `Authorization: Bearer <token>`."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from knox.models import AuthToken

DEFAULT_EXPIRY_HOURS = 30 * 24


class Command(BaseCommand):
    help = (
        "Create an API token for USERNAME and print it, once: only its hash is stored. The "
        "token carries the user's permissions (trackers.fetch_now, trackers.reset_queue for "
        "the control endpoints). Revoke it by deleting it in the admin (Knox: Auth tokens)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument(
            "--expiry-hours",
            type=int,
            default=DEFAULT_EXPIRY_HOURS,
            help=f"hours until the token expires (default {DEFAULT_EXPIRY_HOURS}); 0: never",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        hours = options["expiry_hours"]
        if hours < 0:
            raise CommandError("--expiry-hours must be 0 (never) or more")
        user_model = get_user_model()
        try:
            user = user_model.objects.get_by_natural_key(options["username"])
        except user_model.DoesNotExist:
            raise CommandError(f"no user named {options['username']!r}") from None
        if not user.is_active:
            raise CommandError(f"user {options['username']!r} is inactive")
        expiry = dt.timedelta(hours=hours) if hours else None
        instance, token = AuthToken.objects.create(user=user, expiry=expiry)
        until = f"{instance.expiry:%Y-%m-%d %H:%M} UTC" if instance.expiry else "never"
        self.stderr.write(f"token for {user.get_username()}, expires {until}; shown only once:")
        self.stdout.write(token)
