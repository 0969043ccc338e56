"""Is a decrypted report possible? Checked before it is stored or moves anything.

A report decrypts with its tracker's key, so it came from the tracker's key: but a finder
device's clock can be wrong, and a bad encoder can put any int32 in the coordinates. A report
stamped in the future (beyond REPORT_CLOCK_TOLERANCE_SECONDS) or before Find My's offline
finding existed (2019), or with coordinates off the globe, is not a location: it is kept, with
its payload, in an `invalid_report` failure record instead, and never moves `last_seen`.
"""

from __future__ import annotations

import datetime as dt
import math

from django.conf import settings

from trackers.payloads import DecryptedReport

# Offline finding was announced in June 2019; no genuine report is older.
EARLIEST_REPORT = dt.datetime(2019, 1, 1, tzinfo=dt.UTC)


def report_problem(report: DecryptedReport, now: dt.datetime) -> str | None:
    """Why `report` cannot be stored as a location (None: it can). `now`: database clock."""
    latest = now + dt.timedelta(seconds=settings.REPORT_CLOCK_TOLERANCE_SECONDS)
    if report.timestamp > latest:
        return f"timestamp {report.timestamp.isoformat()} is in the future (now {now.isoformat()})"
    if report.timestamp < EARLIEST_REPORT:
        return f"timestamp {report.timestamp.isoformat()} is before 2019"
    if not (math.isfinite(report.latitude) and -90 <= report.latitude <= 90):
        return f"latitude {report.latitude} is out of range"
    if not (math.isfinite(report.longitude) and -180 <= report.longitude <= 180):
        return f"longitude {report.longitude} is out of range"
    return None
