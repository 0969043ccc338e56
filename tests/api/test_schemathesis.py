"""Property-based fuzzing of the live API against its own OpenAPI schema (schemathesis).

gunicorn serves the project on the test database; schemathesis reads /api/v1/schema and sends
generated requests (schema examples, boundary values, then random ones) to every operation, as
an owner with some data. It fails on any 5xx answer and on any answer the schema does not
describe (status, body). SCHEMATHESIS_MAX_EXAMPLES (default 25) sets the effort per operation.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.gis.geos import Point
from django.utils import timezone

from api.auth import create_token
from geofences.models import FenceKind, Geofence
from locations.models import LocationReport
from tests.factories import TrackerFactory, UserFactory

from ..servers import GunicornServer, database_url

pytestmark = pytest.mark.django_db(transaction=True)

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


def some_data(owner: object) -> None:
    """A tracker with a day of reports and a fence: real objects behind some generated ids."""
    tracker = TrackerFactory(owner=owner)
    now = timezone.now()
    for i in range(24):
        LocationReport.objects.create(
            tracker=tracker,
            timestamp=now - dt.timedelta(hours=i),
            point=Point(13.4 + i / 1000, 52.5, srid=4326),
            horizontal_accuracy=10 + i,
            confidence=2,
            status=0,
            payload=f"fuzz-{i}".encode(),
            fetched_at=now,
        )
    fence = Geofence.objects.create(
        owner=owner, name="depot", kind=FenceKind.CIRCLE, center=Point(13.4, 52.5), radius_m=300
    )
    fence.trackers.add(tracker)


def test_no_generated_request_gets_a_5xx_or_an_answer_outside_the_schema(tmp_path: Path):
    owner = UserFactory(username="fuzzer")
    some_data(owner)
    _, token = create_token(owner, "schemathesis", None)
    server = GunicornServer(
        workers=2,
        DATABASE_URL=database_url(),
        API_THROTTLE_USER_RATE="1000000/min",
        API_THROTTLE_ANON_RATE="1000000/min",
    ).wait_until_live()
    try:
        run = subprocess.run(
            [
                str(SCHEMATHESIS),
                "run",
                f"{server.url}/api/v1/schema",
                *("--header", f"Authorization: Bearer {token}"),
                *("--checks", "not_a_server_error,response_schema_conformance"),
                *("--max-examples", os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "25")),
                *("--phases", "examples,coverage,fuzzing"),
                # Revoking its own token would leave the rest of the run unauthenticated.
                *("--exclude-path-regex", r"^/api/v1/tokens/"),
                *("--request-timeout", "20"),
                *("--seed", "20261125"),
                "--no-color",
            ],
            cwd=tmp_path,  # its own files (.schemathesis/) stay out of the repository
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
    finally:
        server.stop()
    report = run.stdout[-12000:] + run.stderr[-3000:]
    assert run.returncode == 0, report
    # It really ran: operations were tested (not a schema it could not load).
    assert "operations" in run.stdout.lower() or "passed" in run.stdout.lower(), report
