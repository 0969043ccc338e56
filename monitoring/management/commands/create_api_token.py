"""Create an API token for a user: what scripts send as `Authorization: Bearer <token>`."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from api.auth import DEFAULT_EXPIRY_HOURS, MAX_EXPIRY_HOURS, check_token_name, create_token


class Command(BaseCommand):
    help = (
        "Create a named API token for USERNAME and print it, once: only its hash is stored. The "
        "token carries the user's permissions (trackers.fetch_now, trackers.reset_queue for "
        "the control endpoints). Revoke it by deleting it in the admin (API tokens), or with "
        "DELETE /api/v1/tokens/{id}."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument(
            "--name",
            default="create_api_token",
            help="what the token is for, shown in the admin and GET /api/v1/tokens",
        )
        parser.add_argument(
            "--expiry-hours",
            type=int,
            default=DEFAULT_EXPIRY_HOURS,
            help=f"hours until the token expires (default {DEFAULT_EXPIRY_HOURS}); 0: never",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        hours = options["expiry_hours"]
        if not 0 <= hours <= MAX_EXPIRY_HOURS:
            raise CommandError(f"--expiry-hours must be 0 (never) to {MAX_EXPIRY_HOURS}")
        try:
            name = check_token_name(options["name"])
        except ValueError as exc:
            raise CommandError(f"--name: {exc}") from None
        user_model = get_user_model()
        try:
            user = user_model.objects.get_by_natural_key(options["username"])
        except user_model.DoesNotExist:
            raise CommandError(f"no user named {options['username']!r}") from None
        if not user.is_active:
            raise CommandError(f"user {options['username']!r} is inactive")
        instance, token = create_token(user, name, hours)
        until = f"{instance.expiry:%Y-%m-%d %H:%M} UTC" if instance.expiry else "never"
        self.stderr.write(
            f"token {name!r} for {user.get_username()}, expires {until}; shown only once:"
        )
        self.stdout.write(token)
