"""Add (or log in again) an Apple account used to fetch reports; its state is stored encrypted."""

from __future__ import annotations

import getpass
import json
from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.core.validators import URLValidator
from findmy import AppleAccount, LoginState, RemoteAnisetteProvider
from findmy.reports import AsyncAppleAccount

from trackers.models import AccountStatus
from trackers.models import AppleAccount as Account

_url = URLValidator(schemes=["http", "https"])


def validate_state(state: Any) -> dict[str, Any]:
    """A saved findmy account state that can fetch reports, or a ValueError saying why not."""
    if not isinstance(state, dict) or state.get("type") != "account":
        raise ValueError("not a findmy account state (expected an object with type 'account')")
    if "anisette" not in state:
        raise ValueError("the state names no anisette server: pass --anisette-url")
    try:
        AsyncAppleAccount.from_json(state)
        login = state["login"]
        tokens = login["data"]["mobileme_data"]["tokens"]
        if LoginState(login["state"]) != LoginState.LOGGED_IN or not tokens["searchPartyToken"]:
            raise ValueError
        if not login["data"]["dsid"]:
            raise ValueError
    except (KeyError, TypeError, ValueError, AssertionError):
        raise ValueError(
            "the account state is not logged in (needs login.state 3 with a dsid and a "
            "searchPartyToken); log in interactively instead"
        ) from None
    return state


class Command(BaseCommand):
    help = (
        "Log in to an Apple account through findmy (password prompt, 2FA) and store its "
        "encrypted state, or import a saved findmy account state with --from-json."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--from-json", metavar="FILE", help="a saved findmy account state")
        parser.add_argument("--anisette-url", metavar="URL")
        parser.add_argument(
            "--fetch-endpoint", metavar="URL", help="override Apple's fetch endpoint"
        )
        parser.add_argument("--username", help="Apple ID (prompted when omitted)")
        parser.add_argument(
            "--update",
            action="store_true",
            help="replace the state of an existing account (log in again) and reactivate it",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        name = options["name"].strip()
        if not name or len(name) > 100:
            raise CommandError("NAME must be 1 to 100 characters")
        for flag in ("anisette_url", "fetch_endpoint"):
            if options[flag]:
                try:
                    _url(options[flag])
                except ValidationError:
                    raise CommandError(f"--{flag.replace('_', '-')} is not a valid URL") from None
        existing = Account.objects.filter(name=name).first()
        if existing and not options["update"]:
            raise CommandError(f"an account named {name!r} exists; use --update to log in again")
        if options["from_json"]:
            state = self._from_file(options["from_json"], options["anisette_url"])
        else:
            state = self._login(options["anisette_url"], options["username"])
        anisette_url = state["anisette"].get("url") or options["anisette_url"] or ""
        fields = {
            "state": state,
            "anisette_url": anisette_url,
            "status": AccountStatus.ACTIVE,
            "consecutive_failures": 0,
            "backoff_until": None,
            "last_error": "",
        }
        if options["fetch_endpoint"] is not None:
            fields["fetch_endpoint"] = options["fetch_endpoint"]
        account, created = Account.objects.update_or_create(name=name, defaults=fields)
        self.stdout.write(
            f"{'added' if created else 'updated'} Apple account {account.name!r} "
            f"(fetch endpoint: {account.fetch_endpoint or 'Apple'})"
        )

    def _from_file(self, path: str, anisette_url: str | None) -> dict[str, Any]:
        try:
            state = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise CommandError(f"cannot read {path}: {exc}") from None
        except json.JSONDecodeError as exc:
            raise CommandError(f"{path} is not valid JSON: {exc}") from None
        if anisette_url and isinstance(state, dict):
            state["anisette"] = {"type": "aniRemote", "url": anisette_url}
        try:
            return validate_state(state)
        except ValueError as exc:
            raise CommandError(f"{path}: {exc}") from None

    def _login(self, anisette_url: str | None, username: str | None) -> dict[str, Any]:
        if not anisette_url:
            raise CommandError("--anisette-url is required to log in (or use --from-json)")
        username = username or input("Apple ID: ").strip()
        password = getpass.getpass("Password: ")
        account = AppleAccount(RemoteAnisetteProvider(anisette_url))
        try:
            state = account.login(username, password)
            if state == LoginState.REQUIRE_2FA:
                state = self._second_factor(account)
            if state != LoginState.LOGGED_IN:
                raise CommandError(f"login ended in state {state}, not logged in")
            return dict(account.to_json())
        except CommandError:
            raise
        except Exception as exc:  # noqa: BLE001 - findmy/aiohttp raise many kinds
            raise CommandError(f"login failed: {type(exc).__name__}: {exc}") from None
        finally:
            account._evt_loop.run_until_complete(account.close())

    def _second_factor(self, account: AppleAccount) -> LoginState:
        methods = list(account.get_2fa_methods())
        if not methods:
            raise CommandError("Apple offered no supported second factor (passkeys are not)")
        for i, method in enumerate(methods, start=1):
            label = getattr(method, "phone_number", None) or "trusted device"
            self.stdout.write(f"  {i}. {label}")
        choice = input(f"Second factor [1-{len(methods)}]: ").strip() or "1"
        if not choice.isdigit() or not 1 <= int(choice) <= len(methods):
            raise CommandError(f"choose a number between 1 and {len(methods)}")
        method = methods[int(choice) - 1]
        method.request()
        code = input("Code: ").strip()
        return method.submit(code)
