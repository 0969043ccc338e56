"""gunicorn serving the project in a subprocess, for tests that need a real HTTP server.

The server reads the same `.env` as the tests; keyword arguments override its environment
(e.g. DATABASE_URL naming the test database, which a transactional test has committed to).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote

from django.conf import settings

BASE_DIR = Path(__file__).resolve().parents[1]
GUNICORN = Path(sys.executable).with_name("gunicorn")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def database_url(name: str | None = None, port: int | None = None) -> str:
    """A postgis:// URL for the test server's database `name` (default: the test database)."""
    db = settings.DATABASES["default"]
    credentials = f"{quote(db['USER'], safe='')}:{quote(db['PASSWORD'], safe='')}"
    host = db["HOST"] or "127.0.0.1"
    return f"postgis://{credentials}@{host}:{port or db['PORT']}/{name or db['NAME']}"


class GunicornServer:
    """gunicorn on a free port with the given environment overrides; stop() ends it."""

    def __init__(self, workers: int = 1, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop())
        environment = {**os.environ, "LOG_FORMAT": "text", "LOG_LEVEL": "ERROR", **env}
        environment.pop("DJANGO_ENV_FILE", None)  # .env for the rest; env vars win over it
        self.process = subprocess.Popen(
            [
                *(str(GUNICORN), "tracker_project.wsgi:application", "--workers", str(workers)),
                *("--bind", f"127.0.0.1:{self.port}", "--timeout", "30"),
            ],
            cwd=BASE_DIR,
            env=environment,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-3000:]

    def wait_until_live(self, timeout: float = 30) -> GunicornServer:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.output()
            try:
                if self.fetch("GET", "/health/live")[0] == 200:
                    return self
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"gunicorn did not answer in {timeout} s:\n{self.output()}")

    def fetch(
        self, method: str, path: str, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """(status, headers, body) of one request; HTTP errors are answers too."""
        request = urllib.request.Request(  # noqa: S310 (our own http:// URL)
            self.url + path, method=method, headers=headers or {}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()
