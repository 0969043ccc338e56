"""Where an Apple account's requests may go.

findmy sends an account's dsid and search-party token as HTTP Basic credentials to the fetch
endpoint, and its anisette data to the anisette server: an endpoint is a place the account's
secrets are sent. Both are set only by `add_apple_account`, and both are checked by
`check_endpoint()` there and again before every request (a row edited in the database is
refused too): `https://`, unless the host is loopback or listed in
FINDMY_ALLOWED_ENDPOINT_HOSTS (an operator's own anisette server on the LAN, say).
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from django.conf import settings


class EndpointNotAllowed(ValueError):
    """The URL may not receive an account's credentials."""


def is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_endpoint(url: str, *, what: str = "endpoint") -> str:
    """Return `url` if an account's credentials may be sent there; EndpointNotAllowed if not.

    Allowed: any https:// URL with a host; http:// only to a loopback host (the local
    simulator) or to a host listed in FINDMY_ALLOWED_ENDPOINT_HOSTS.
    """
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError as exc:
        raise EndpointNotAllowed(f"{what} {url!r} is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not host:
        raise EndpointNotAllowed(f"{what} {url!r} must be an http(s) URL with a host")
    if parts.username or parts.password:
        raise EndpointNotAllowed(f"{what} {url!r} must not carry credentials")
    allowed = host in settings.FINDMY_ALLOWED_ENDPOINT_HOSTS
    if parts.scheme == "http" and not (is_loopback(host) or allowed):
        raise EndpointNotAllowed(
            f"{what} {url!r} is plain http to a host that is not loopback: use https://, or "
            "list the host in FINDMY_ALLOWED_ENDPOINT_HOSTS"
        )
    return url
