"""Add (or log in again) an Apple account used to fetch reports; its state is stored encrypted."""

from __future__ import annotations

import getpass
import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from findmy import AppleAccount, LoginState, RemoteAnisetteProvider
from findmy.reports import AsyncAppleAccount

from trackers.endpoints import EndpointNotAllowed, check_endpoint
from trackers.models import AccountStatus, mask_apple_id
from trackers.models import AppleAccount as Account

NAME_MAX = Account._meta.get_field("name").max_length
URL_MAX = Account._meta.get_field("anisette_url").max_length
HINT_MAX = Account._meta.get_field("apple_id_hint").max_length


def validate_state(state: Any) -> dict[str, Any]:
    """A saved findmy account state that can fetch reports, or a ValueError saying why not."""
    if not isinstance(state, dict) or state.get("type") != "account":
        raise ValueError("not a findmy account state (expected an object with type 'account')")
    anisette = state.get("anisette")
    # The row's anisette_url is the one anisette server the account uses: a state that
    # names no remote server (none at all, or findmy's local one) needs the flag.
    if not (
        isinstance(anisette, dict)
        and anisette.get("type") == "aniRemote"
        and isinstance(anisette.get("url"), str)
    ):
        raise ValueError("the state names no anisette server URL: pass --anisette-url")
    try:
        AsyncAppleAccount.from_json(state)
        login = state["login"]
        tokens = login["data"]["mobileme_data"]["tokens"]
        if LoginState(login["state"]) != LoginState.LOGGED_IN or not tokens["searchPartyToken"]:
            raise ValueError
        if not login["data"]["dsid"]:
            raise ValueError
    except (KeyError, TypeError, ValueError, AttributeError, AssertionError):
        raise ValueError(
            "the account state is not logged in (needs login.state 3 with a dsid and a "
            "searchPartyToken); log in interactively instead"
        ) from None
    return state


def check_name(raw: str) -> str:
    name = raw.strip()
    if not name or len(name) > NAME_MAX or not name.isprintable():
        raise CommandError(
            f"NAME must be 1 to {NAME_MAX} printable characters (no NUL or other control "
            "characters)"
        )
    return name


def check_url(url: str, what: str) -> str:
    """`url` if the column can hold it and the account's secrets may go there; else CommandError."""
    if "://" not in url or " " in url or not url.isprintable():
        raise CommandError(f"{what} is not a valid URL")
    if len(url) > URL_MAX:
        raise CommandError(f"{what} is longer than {URL_MAX} characters")
    try:
        return check_endpoint(url, what=what)
    except EndpointNotAllowed as exc:
        raise CommandError(str(exc)) from None


def state_username(state: dict[str, Any]) -> str:
    account = state.get("account")
    username = account.get("username") if isinstance(account, dict) else None
    return username if isinstance(username, str) else ""


def apple_id_hint(username: str) -> str:
    """The masked Apple ID, fit for its column (a username from a file may hold anything)."""
    return "".join(c for c in mask_apple_id(username) if c.isprintable())[:HINT_MAX]


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
        name = check_name(options["name"])
        for flag in ("anisette_url", "fetch_endpoint"):
            if options[flag]:  # an empty --fetch-endpoint means Apple's own
                check_url(options[flag], f"--{flag.replace('_', '-')}")
        if options["from_json"] is None and not options["anisette_url"]:
            raise CommandError("--anisette-url is required to log in (or use --from-json)")
        if Account.objects.filter(name=name).exists() and not options["update"]:
            raise CommandError(f"an account named {name!r} exists; use --update to log in again")
        if options["from_json"] is not None:
            state = self._from_file(options["from_json"], options["anisette_url"])
            username = options["username"] or ""
        else:
            username = options["username"] or self._ask("Apple ID: ")
            if not username:
                raise CommandError("an Apple ID is required")
            state = self._login(options["anisette_url"], username)
        fields = {
            "state": state,
            "apple_id_hint": apple_id_hint(state_username(state) or username),
            "anisette_url": options["anisette_url"] or state["anisette"]["url"],
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
            state = json.loads(Path(path).read_bytes().decode("utf-8-sig"))
        except OSError as exc:  # missing, a directory, unreadable
            raise CommandError(f"cannot read {path}: {exc}") from None
        except UnicodeDecodeError:
            raise CommandError(
                f"{path} is not UTF-8 text (a binary file?): expected a findmy account state (JSON)"
            ) from None
        except (json.JSONDecodeError, RecursionError) as exc:
            raise CommandError(f"{path} is not valid JSON: {exc}") from None
        if anisette_url and isinstance(state, dict):
            state["anisette"] = {"type": "aniRemote", "url": anisette_url}
        try:
            state = validate_state(state)
        except ValueError as exc:
            raise CommandError(f"{path}: {exc}") from None
        if not anisette_url:
            check_url(state["anisette"]["url"], f"the anisette URL in {path}")
        return state

    def _ask(self, prompt: str, *, secret: bool = False) -> str:
        """The operator's answer (stripped unless secret); CommandError at end of input or ^C."""
        label = prompt.rstrip(": ")
        try:
            answer = getpass.getpass(prompt) if secret else input(prompt)
        except EOFError:
            raise CommandError(f"no answer to {label!r} (end of input); nothing saved") from None
        except KeyboardInterrupt:
            raise CommandError(f"interrupted at {label!r}; nothing saved") from None
        return answer if secret else answer.strip()

    def _login(self, anisette_url: str, username: str) -> dict[str, Any]:
        password = self._ask("Password: ", secret=True)
        if not password:
            raise CommandError("a password is required")
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
        except KeyboardInterrupt:
            raise CommandError("interrupted while logging in; nothing saved") from None
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
        choice = self._ask(f"Second factor [1-{len(methods)}]: ") or "1"
        if not choice.isdigit() or not 1 <= int(choice) <= len(methods):
            raise CommandError(f"choose a number between 1 and {len(methods)}")
        method = methods[int(choice) - 1]
        method.request()
        code = self._ask("Code: ")
        if not code:
            raise CommandError("no code entered; nothing saved")
        return method.submit(code)
