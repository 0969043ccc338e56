"""Every endpoint answers JSON when the database is down or not migrated.

The real thing: gunicorn in a subprocess whose DATABASE_URL names an empty database (no
tables: "not migrated") or a port where nothing listens ("down"), with DEBUG on and off.
One server per scenario, every endpoint asked in one test.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from django.conf import settings
from django.db import DatabaseError, OperationalError, ProgrammingError
from django.test import RequestFactory
from psycopg import errors, sql

from monitoring.api.exceptions import database_problem
from tracker_project.urls import server_error

from ..servers import GunicornServer, database_url, free_port

# Asked without credentials, with a session cookie and with a token: authentication that
# looks the session or token up in the database must end in JSON too.
SESSION = {"Cookie": "sessionid=" + "x" * 32}
TOKEN = {"Authorization": "Bearer " + "0" * 64}


def admin_connection() -> psycopg.Connection:
    db = settings.DATABASES["default"]
    return psycopg.connect(
        dbname="postgres",
        user=db["USER"],
        password=db["PASSWORD"],
        host=db["HOST"] or "127.0.0.1",
        port=db["PORT"] or 5432,
        autocommit=True,
    )


@pytest.fixture
def empty_database() -> Iterator[str]:
    """A database with no table at all (and no PostGIS): what an unmigrated service sees."""
    name = f"tf_empty_{uuid.uuid4().hex[:10]}"
    with admin_connection() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield database_url(name)
    finally:
        with admin_connection() as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


class Server(GunicornServer):
    """gunicorn whose every answer must be JSON."""

    def request(
        self, method: str, path: str, headers: dict[str, str] | None = None
    ) -> tuple[int, str, Any]:
        """(status, content type, parsed JSON body) of one request."""
        status, answer_headers, body = self.fetch(method, path, headers)
        content_type = answer_headers.get("Content-Type", "")
        assert content_type.startswith("application/json"), (method, path, status, body[:300])
        return status, content_type, json.loads(body)


@pytest.fixture
def serve() -> Iterator[Any]:
    servers: list[Server] = []

    def start(**env: str) -> Server:
        server = Server(**env)
        servers.append(server)
        server.wait_until_live()
        return server

    yield start
    for server in servers:
        server.stop()


def ask_everything(server: Server) -> dict[tuple[str, str, str], tuple[int, Any]]:
    """Every endpoint, as a probe, a script and a browser would ask it."""
    asked = [
        ("GET", "/health/live", "none", {}),
        ("GET", "/health", "none", {}),
        ("GET", "/status/queue", "none", {}),
        ("GET", "/status/worker", "none", {}),
        ("GET", "/metrics", "none", {}),
        ("GET", "/api/schema/", "session", SESSION),
        ("GET", "/api/schema/", "token", TOKEN),
    ]
    for path in ("/fetch/batch", "/fetch/tracker/1", "/queue/initialize"):
        asked += [
            ("POST", path, "none", {}),
            ("POST", path, "session", SESSION),
            ("POST", path, "token", TOKEN),
        ]
    answers = {}
    for method, path, credentials, headers in asked:
        status, _, body = server.request(method, path, headers)
        answers[(method, path, credentials)] = (status, body)
    return answers


def assert_database_named(answers: dict[tuple[str, str, str], tuple[int, Any]], words: str):
    assert answers[("GET", "/health/live", "none")] == (200, {"status": "ok"})
    for (method, path, credentials), (status, body) in answers.items():
        if path in ("/health/live", "/health"):
            continue
        if credentials == "none" and method == "POST":
            # No credentials: refused before anything needs the database.
            assert (status, "credentials" in body["detail"]) == (401, True), (path, body)
            continue
        assert status == 503, (method, path, credentials, body)
        assert body["failing"] == ["database"], (path, body)
        assert words in body["detail"], (path, body)


@pytest.mark.parametrize("debug", ["false", "true"])
def test_every_endpoint_answers_json_when_the_database_is_not_migrated(
    serve: Any, empty_database: str, debug: str
) -> None:
    server = serve(DATABASE_URL=empty_database, DEBUG=debug)
    answers = ask_everything(server)
    assert_database_named(answers, "not migrated")
    status, body = answers[("GET", "/health", "none")]
    assert (status, body["failing"]) == (503, ["database"])
    assert "not migrated" in body["checks"]["database"]["detail"]
    assert body["checks"]["queue"]["status"] == "skipped"


@pytest.mark.parametrize("debug", ["false", "true"])
def test_every_endpoint_answers_json_when_the_database_is_down(serve: Any, debug: str) -> None:
    nowhere = database_url("trackerfleet", port=free_port())  # nothing listens there
    server = serve(DATABASE_URL=nowhere, DEBUG=debug)
    answers = ask_everything(server)
    assert_database_named(answers, "database unavailable (OperationalError)")
    status, body = answers[("GET", "/health", "none")]
    assert (status, body["failing"]) == (503, ["database"])
    assert body["checks"]["queue"]["status"] == "skipped"
    assert "127.0.0.1" not in str(answers)  # no connection details


# --- the pieces, in process -------------------------------------------------------------
def wrapped(error: DatabaseError, cause: BaseException | None) -> DatabaseError:
    error.__cause__ = cause
    return error


def test_a_missing_table_reads_as_not_migrated() -> None:
    missing = wrapped(ProgrammingError("relation x does not exist"), errors.UndefinedTable())
    problem = database_problem(missing)
    assert "not migrated (UndefinedTable)" in problem
    assert "relation x" not in problem


def test_other_database_errors_name_their_class_only() -> None:
    down = wrapped(OperationalError('connection to "db.internal" refused'), None)
    assert database_problem(down) == "database unavailable (OperationalError)"


def test_handler500_answers_a_database_error_with_503_json() -> None:
    request = RequestFactory().get("/somewhere")
    try:
        raise OperationalError("connection refused")
    except OperationalError:
        response = server_error(request)
    assert response.status_code == 503
    assert json.loads(response.content)["failing"] == ["database"]


def test_handler500_answers_other_errors_with_500_json() -> None:
    request = RequestFactory().get("/somewhere")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        response = server_error(request)
    assert response.status_code == 500
    assert json.loads(response.content) == {"detail": "Server error."}
