"""The three ways an alert goes out: a signed webhook, an email, a Redis pub/sub message.

Each sender takes the alert (the JSON payload built by deliveries.py) and the rule, and either
returns (sent) or raises `SendError`, which says whether another attempt may succeed
(`permanent=False`: timeouts, connection errors, 5xx, 408, 429, Redis or SMTP unreachable) or
not (`permanent=True`: 4xx, a redirect, a URL we refuse, no Redis configured). Nothing here
touches the database: the senders run outside any transaction, in a thread the sender loop
can abandon on shutdown.

Webhook signature: the body is signed with HMAC-SHA256 under the rule's webhook secret, over
`f"{timestamp}.".encode() + body`, where `timestamp` is the X-Tracker-Timestamp header (Unix
seconds, as ASCII digits) and `body` the raw request body bytes. The header is
`X-Tracker-Signature: sha256=<hex digest>`. Binding the timestamp lets a receiver refuse
replays of old requests (compare it with its clock; 5 minutes is a usual tolerance).

Server-side request forgery: a rule's owner chooses the URL, so a webhook could be aimed at a
service inside our network. URLs must be http(s); the host must resolve only to public
addresses unless it is listed in ALERT_WEBHOOK_ALLOWED_HOSTS; redirects are never followed;
last_error records the status line, never the answer's body. The check resolves the name once
before urllib3 resolves it again, so a DNS server that changes its answer in between (DNS
rebinding) is not stopped: put the senders behind an egress proxy or firewall where that
matters.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import smtplib
import socket
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import redis
import urllib3
from django.conf import settings
from django.core.mail import EmailMessage
from django.core.mail.utils import DNS_NAME

USER_AGENT = "tracker-fleet-alerts/1.0"
SIGNATURE_HEADER = "X-Tracker-Signature"
TIMESTAMP_HEADER = "X-Tracker-Timestamp"
NOTIFICATIONS_PREFIX = "notifications:"

# Statuses worth another attempt: the receiver's fault of the moment, or "slow down".
RETRY_STATUSES = frozenset({408, 429})


class SendError(Exception):
    """A send that did not happen; `permanent` when another attempt cannot help."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


# --- webhook ----------------------------------------------------------------------------
def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The X-Tracker-Signature value: sha256=HMAC-SHA256(secret, f"{timestamp}." + body)."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={digest.hexdigest()}"


def webhook_headers(delivery_id: int, secret: str, body: bytes, now: float | None = None) -> dict:
    timestamp = str(int(time.time() if now is None else now))
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        # Stable across retries: the receiver drops a repeat it already handled.
        "Idempotency-Key": f"delivery-{delivery_id}",
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: signature(secret, timestamp, body),
    }


def check_webhook_url(url: str) -> None:
    """Refuse (permanently) a URL that is not http(s) or whose host is not public."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise SendError(f"invalid webhook URL: {exc}", permanent=True) from None
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise SendError("the webhook URL must be http:// or https:// with a host", permanent=True)
    host = parts.hostname.lower()
    if host in settings.ALERT_WEBHOOK_ALLOWED_HOSTS:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise SendError(f"cannot resolve {host}: {exc}", permanent=False) from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%")[0])
        if not address.is_global:
            raise SendError(
                f"{host} resolves to the non-public address {address}; list the host in "
                "ALERT_WEBHOOK_ALLOWED_HOSTS to allow it",
                permanent=True,
            )


_pool_lock = threading.Lock()
_pool: urllib3.PoolManager | None = None


def http() -> urllib3.PoolManager:
    """One connection pool per process, shared by the sending threads (it is thread-safe)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = urllib3.PoolManager(num_pools=50, retries=False)
        return _pool


def send_webhook(delivery_id: int, payload: dict[str, Any], url: str, secret: str) -> None:
    check_webhook_url(url)
    body = encode(payload)
    try:
        response = http().request(
            "POST",
            url,
            body=body,
            headers=webhook_headers(delivery_id, secret, body),
            timeout=urllib3.Timeout(total=settings.ALERT_WEBHOOK_TIMEOUT),
            retries=False,
            redirect=False,
            # The body is never read: an answer cannot make us download gigabytes.
            preload_content=False,
        )
    except urllib3.exceptions.LocationValueError as exc:
        raise SendError(f"invalid webhook URL: {exc}", permanent=True) from None
    except urllib3.exceptions.NewConnectionError as exc:
        # Caught first: urllib3 makes it a subclass of ConnectTimeoutError.
        raise SendError(f"cannot connect: {exc.__context__ or exc}", permanent=False) from None
    except urllib3.exceptions.TimeoutError:
        raise SendError(
            f"timed out after {settings.ALERT_WEBHOOK_TIMEOUT} s", permanent=False
        ) from None
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise SendError(f"{type(exc).__name__}: {exc}", permanent=False) from None
    status, reason = response.status, response.reason or ""
    response.close()
    if 200 <= status < 300:
        return
    line = f"HTTP {status} {reason}".strip()
    if 300 <= status < 400:
        raise SendError(f"{line}: redirects are not followed", permanent=True)
    if 400 <= status < 500 and status not in RETRY_STATUSES:
        raise SendError(line, permanent=True)
    raise SendError(line, permanent=False)


def encode(payload: dict[str, Any]) -> bytes:
    """The JSON body: compact, ASCII only, so what is signed is exactly what is sent."""
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode("ascii")


# --- email ------------------------------------------------------------------------------
SUMMARIES = {
    "enter": "{tracker} entered {fence}",
    "exit": "{tracker} left {fence}",
    "first_seen": "{tracker} was seen for the first time",
    "silent": "{tracker} has gone silent",
    "back_online": "{tracker} is back online",
    "battery_low": "{tracker}: battery low",
}


def summary(payload: dict[str, Any]) -> str:
    event = payload["event"]
    fence = event["geofence"]["name"] if event["geofence"] else "a geofence"
    template = SUMMARIES.get(event["kind"], "{tracker}: " + event["kind"])
    return template.format(tracker=event["tracker"]["name"], fence=fence)


def email_text(payload: dict[str, Any]) -> str:
    event = payload["event"]
    lines = [summary(payload), "", f"When: {event['occurred_at']}"]
    if report := event["report"]:
        lines.append(
            f"Where: {report['latitude']:.6f}, {report['longitude']:.6f} "
            f"(within {report['accuracy']} m, reported {report['timestamp']})"
        )
    if event["address"]:
        lines.append(f"Address: {event['address']}")
    lines += ["", f"Alert rule: {payload['rule']['name']} (delivery {payload['id']})"]
    return "\n".join(lines) + "\n"


def send_email(delivery_id: int, payload: dict[str, Any], to: str) -> None:
    if not to:
        raise SendError("the rule has no email address (email_to)", permanent=True)
    message = EmailMessage(
        subject=f"[{payload['rule']['name']}] {summary(payload)}",
        body=email_text(payload),
        to=[to],
        # Stable across retries, so a mail client shows a repeat as the same message.
        headers={"Message-ID": f"<alert-delivery-{delivery_id}@{DNS_NAME}>"},
    )
    try:
        message.send(fail_silently=False)
    except smtplib.SMTPRecipientsRefused as exc:
        raise SendError(f"recipient refused: {exc}", permanent=True) from None
    except (smtplib.SMTPException, OSError) as exc:
        raise SendError(f"{type(exc).__name__}: {exc}", permanent=False) from None


# --- redis pub/sub ------------------------------------------------------------------------
_redis_lock = threading.Lock()
_redis: dict[str, redis.Redis] = {}


def notifications_redis() -> redis.Redis:
    url = settings.REDIS_NOTIFICATIONS_URL
    if not url:
        raise SendError("REDIS_URL not set: no notifications database", permanent=True)
    with _redis_lock:
        if url not in _redis:
            _redis[url] = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        return _redis[url]


def notifications_channel(owner_id: int) -> str:
    return f"{NOTIFICATIONS_PREFIX}{owner_id}"


def send_redis(payload: dict[str, Any], owner_id: int) -> None:
    """Publish to `notifications:{owner}`. Pub/sub keeps nothing: a message published while
    nobody listens is gone, and still counts as delivered (Redis took it)."""
    client = notifications_redis()
    try:
        client.publish(notifications_channel(owner_id), encode(payload))
    except redis.RedisError as exc:
        raise SendError(f"Redis: {type(exc).__name__}: {exc}", permanent=False) from None
