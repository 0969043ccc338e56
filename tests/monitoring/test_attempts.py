"""The fetch audit log: totals behind /metrics, and pruning that leaves them alone."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone
from django_q.models import Schedule

from monitoring.attempts import duration_bucket, prune_attempts
from monitoring.models import DURATION_BUCKETS, FetchAttempt, FetchTotal
from monitoring.tasks import prune_fetch_attempts

from ..factories import AppleAccountFactory
from .test_endpoints import attempt, scrape

pytestmark = pytest.mark.django_db


def logged(days_ago: float, seconds: float = 1.0, outcome: str = "ok", new: int = 2) -> None:
    started = timezone.now() - dt.timedelta(days=days_ago)
    attempt(AppleAccountFactory(), outcome, seconds, new=new, started=started)


@pytest.mark.parametrize(
    ("seconds", "bucket"), [(0.0, 0), (0.1, 0), (0.11, 1), (1.0, 3), (60.0, 8), (61.0, 9)]
)
def test_a_duration_falls_in_the_smallest_bucket_that_holds_it(seconds, bucket):
    assert duration_bucket(seconds) == bucket
    assert bucket == len(DURATION_BUCKETS) or seconds <= DURATION_BUCKETS[bucket]


def test_every_attempt_is_added_to_its_totals():
    logged(0, seconds=0.2, new=5)
    logged(0, seconds=0.2, new=1)
    logged(0, seconds=40, outcome="timeout", new=0)

    totals = {(t.outcome, t.bucket): (t.requests, t.new_reports) for t in FetchTotal.objects.all()}
    assert totals == {("ok", 1): (2, 6), ("timeout", 8): (1, 0)}
    assert FetchAttempt.objects.count() == 3


def test_pruning_deletes_old_attempts_and_leaves_the_counters(client: Client, settings):
    settings.FETCH_ATTEMPT_RETENTION_DAYS = 30
    logged(45, new=3)
    logged(31, new=4)
    logged(2, new=5)
    before = scrape(client)

    deleted = prune_fetch_attempts()  # the daily django-q2 task

    assert deleted == 2
    assert list(FetchAttempt.objects.values_list("new_reports", flat=True)) == [5]
    after = scrape(client)
    assert after[("trackerfleet_reports_ingested_total", ())] == 12
    assert after == before


def test_prune_command_reports_and_rejects_bad_days(capsys):
    logged(10)
    logged(1)
    call_command("prune_fetch_attempts", "--days", "5")
    assert "deleted 1 fetch attempts older than 5 days" in capsys.readouterr().out
    with pytest.raises(CommandError, match="at least 1"):
        call_command("prune_fetch_attempts", "--days", "0")
    assert FetchAttempt.objects.count() == 1  # the refused call deleted nothing
    assert prune_attempts(0) == 1


def test_the_prune_runs_daily_from_qcluster():
    schedule = Schedule.objects.get(name="prune-fetch-attempts")
    assert (schedule.func, schedule.schedule_type) == (
        "monitoring.tasks.prune_fetch_attempts",
        Schedule.DAILY,
    )
