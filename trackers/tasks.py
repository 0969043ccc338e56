"""django-q2 tasks: dotted paths to small functions that call the domain code."""

from __future__ import annotations

from typing import Any

from .worker import run_for

# A schedule fires every minute; a run stops claiming after 50 s so runs rarely overlap
# (overlap is safe anyway: claims never hand out a tracker twice).
TASK_SECONDS = 50


def fetch_due_trackers() -> dict[str, Any]:
    return run_for(TASK_SECONDS)
