"""The confirmation state machine of one tracker and one fence.

Evidence is `inside`, `outside` or None (a fix whose accuracy circle straddles the boundary:
no evidence). The confirmed side changes only after GEOFENCE_CONFIRMATIONS consecutive
evidence reports for the other side that span at least GEOFENCE_MIN_DWELL_SECONDS; a
report without evidence neither confirms nor resets; evidence for the current side resets a
pending change. Unknown -> inside raises `enter`; unknown -> outside raises nothing.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from .models import EventKind, Side


@dataclass
class FenceState:
    side: str = Side.UNKNOWN
    candidate: str = ""
    candidate_count: int = 0
    candidate_since: dt.datetime | None = None
    changed_at: dt.datetime | None = None


@dataclass(frozen=True)
class Change:
    """A confirmed change of side, and the event it raises (None: unknown -> outside)."""

    old: str
    new: str
    since: dt.datetime  # the first report of the confirming run

    @property
    def event_kind(self) -> str | None:
        if self.new == Side.INSIDE:
            return EventKind.ENTER
        if self.old == Side.INSIDE:
            return EventKind.EXIT
        return None


def step(
    state: FenceState,
    evidence: str | None,
    at: dt.datetime,
    *,
    confirmations: int,
    min_dwell: dt.timedelta,
) -> Change | None:
    """Apply one report's evidence (in timestamp order); return the change it confirms."""
    if evidence is None:
        return None
    if evidence == state.side:
        state.candidate, state.candidate_count, state.candidate_since = "", 0, None
        return None
    if evidence != state.candidate:
        state.candidate, state.candidate_count, state.candidate_since = evidence, 1, at
    else:
        state.candidate_count += 1
    assert state.candidate_since is not None
    if state.candidate_count < confirmations or at - state.candidate_since < min_dwell:
        return None
    change = Change(state.side, evidence, state.candidate_since)
    state.side, state.changed_at = evidence, at
    state.candidate, state.candidate_count, state.candidate_since = "", 0, None
    return change
