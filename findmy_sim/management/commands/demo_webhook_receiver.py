"""A demo webhook receiver: prints each alert it gets, after checking its signature.

What a customer's endpoint does with our webhooks, in a few lines: check X-Tracker-Signature
(HMAC-SHA256 of "<X-Tracker-Timestamp>." + body under the rule's secret), refuse a timestamp
more than five minutes off, drop a repeat of an Idempotency-Key already handled, answer 2xx.
The secret comes from --secret, or from the alert rule named by --rule (read again when a
signature does not verify, so a secret renewed in the admin is picked up).
"""

from __future__ import annotations

import hmac
import json
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import close_old_connections

from geofences.channels import SIGNATURE_HEADER, TIMESTAMP_HEADER, signature, summary
from geofences.models import AlertRule

TOLERANCE_SECONDS = 300  # how far X-Tracker-Timestamp may be from our clock
MAX_BODY = 1 << 20
REMEMBERED_KEYS = 10_000  # Idempotency-Keys kept to recognise repeats


def check_signature(secret: str, headers: Any, body: bytes, now: float | None = None) -> str:
    """Why the request does not verify ("" when it does)."""
    timestamp, given = headers.get(TIMESTAMP_HEADER, ""), headers.get(SIGNATURE_HEADER, "")
    if not timestamp or not given:
        return "unsigned"
    if not timestamp.isdigit():
        return "malformed timestamp"
    if abs((time.time() if now is None else now) - int(timestamp)) > TOLERANCE_SECONDS:
        return "timestamp too far from our clock (a replay?)"
    if not hmac.compare_digest(signature(secret, timestamp, body), given):
        return "bad signature"
    return ""


class Receiver:
    """The receiver's state: where the secret comes from, the keys seen, where lines go."""

    def __init__(
        self, secret: Callable[[], str | None], path: str, write: Callable[[str], None]
    ) -> None:
        self.load_secret = secret
        self.secret = secret()
        self.path = path
        self.write = write
        self.seen: deque[str] = deque(maxlen=REMEMBERED_KEYS)

    def verify(self, headers: Any, body: bytes) -> str:
        if self.secret is None:
            return ""
        problem = check_signature(self.secret, headers, body)
        if problem == "bad signature":  # renewed in the admin since we started?
            self.secret = self.load_secret() or self.secret
            problem = check_signature(self.secret, headers, body)
        return problem

    def handle(self, path: str, headers: Any, body: bytes) -> tuple[int, str]:
        """(HTTP status, the line printed)."""
        if path != self.path:
            return 404, f"POST to {path}: not {self.path}"
        if problem := self.verify(headers, body):
            return 401, f"refused: {problem}"
        try:
            alert = json.loads(body)
            line = f"alert {alert['id']}: {summary(alert)} at {alert['event']['occurred_at']}"
        except (ValueError, KeyError, TypeError):
            return 400, f"not an alert: {body[:200]!r}"
        key = headers.get("Idempotency-Key", "")
        if key and key in self.seen:
            return 200, f"{line} (a repeat of {key}: ignored)"
        self.seen.append(key)
        verified = "signature ok" if self.secret is not None else "not verified"
        return 200, f"{line} [{verified}]"


def handler_for(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                status, line = 413, f"refused: a body of {length} bytes"
            else:
                status, line = receiver.handle(self.path, self.headers, self.rfile.read(length))
            receiver.write(line)
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"ok\n" if status == 200 else f"{line}\n".encode())

        def log_message(self, format: str, *args: Any) -> None:
            pass  # one line per alert (above) is enough

    return Handler


def serve(server: HTTPServer, stop: threading.Event) -> None:
    """Answer requests until `stop` is set (checked at least twice a second)."""
    server.timeout = 0.5
    while not stop.is_set():
        server.handle_request()
    server.server_close()


def rule_secret(name: str) -> Callable[[], str | None]:
    def load() -> str | None:
        close_old_connections()
        rule = AlertRule.objects.filter(name=name).order_by("pk").first()
        return rule.webhook_secret if rule else None

    return load


class Command(BaseCommand):
    help = (
        "Run a local webhook receiver for the demo: print each alert it is sent, after "
        "checking its signature with the secret of the alert rule named by --rule (or "
        "--secret). SIGTERM stops it."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8766)
        parser.add_argument("--path", default="/alerts")
        parser.add_argument("--rule", default="demo: enter/exit", help="whose secret verifies")
        parser.add_argument("--secret", help="the webhook secret (instead of --rule)")
        parser.add_argument("--no-verify", action="store_true", help="accept unsigned alerts")

    def handle(self, *args: Any, **options: Any) -> None:
        if not 0 < options["port"] < 65536:
            raise CommandError("--port must be between 1 and 65535")
        if options["no_verify"]:
            secret: Callable[[], str | None] = lambda: None  # noqa: E731
        elif options["secret"]:
            secret = lambda: options["secret"]  # noqa: E731
        else:
            secret = rule_secret(options["rule"])
        receiver = Receiver(secret, options["path"], self.say)
        if receiver.secret is None and not options["no_verify"]:
            raise CommandError(f"no alert rule named {options['rule']!r} (run demo_setup)")
        server = HTTPServer((options["host"], options["port"]), handler_for(receiver))
        stop = threading.Event()

        def on_signal(signum: int, frame: Any) -> None:
            stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        checking = "not checking signatures" if receiver.secret is None else "checking signatures"
        self.say(
            f"webhook receiver on http://{options['host']}:{options['port']}{options['path']} "
            f"({checking})"
        )
        serve(server, stop)

    def say(self, line: str) -> None:
        self.stdout.write(line)
        self.stdout.flush()
