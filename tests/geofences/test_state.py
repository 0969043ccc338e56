"""The confirmation state machine on its own: evidence in, confirmed changes out."""

from __future__ import annotations

import datetime as dt

from geofences.models import EventKind, Side
from geofences.state import FenceState, step

T0 = dt.datetime(2026, 11, 1, 12, tzinfo=dt.UTC)
IN, OUT, NONE = Side.INSIDE, Side.OUTSIDE, None


def run(
    evidence: list[str | None],
    *,
    side: str = Side.UNKNOWN,
    confirmations: int = 2,
    dwell: int = 0,
    gap: int = 600,
) -> list[tuple[str | None, dt.datetime]]:
    state = FenceState(side=side)
    out = []
    for i, e in enumerate(evidence):
        change = step(
            state,
            e,
            T0 + dt.timedelta(seconds=gap * i),
            confirmations=confirmations,
            min_dwell=dt.timedelta(seconds=dwell),
        )
        if change is not None:
            out.append((change.event_kind, change.since))
    return out


def test_a_clean_crossing_raises_exactly_one_enter_dated_by_the_first_fix():
    changes = run([OUT, OUT, IN, IN, IN])
    assert changes == [(None, T0), (EventKind.ENTER, T0 + dt.timedelta(seconds=1200))]


def test_unknown_to_outside_raises_nothing_then_exit_after_enter():
    changes = run([OUT, OUT, IN, IN, OUT, OUT])
    assert [k for k, _ in changes] == [None, EventKind.ENTER, EventKind.EXIT]


def test_a_single_outlier_raises_nothing():
    assert run([IN, IN, OUT, IN, IN], side=Side.INSIDE) == []


def test_no_evidence_neither_confirms_nor_resets():
    assert run([IN, NONE, NONE, IN], side=Side.OUTSIDE) == [(EventKind.ENTER, T0)]
    assert run([IN, NONE, OUT, IN], side=Side.OUTSIDE) == []


def test_straddling_fixes_raise_nothing():
    assert run([NONE] * 10, side=Side.OUTSIDE) == []


def test_jitter_at_the_edge_raises_nothing():
    assert run([IN, OUT, IN, OUT, IN, OUT], side=Side.OUTSIDE) == []


def test_dwell_holds_the_change_until_the_run_spans_it():
    changes = run([IN, IN, IN, IN], side=Side.OUTSIDE, dwell=1500, gap=600)
    assert changes == [(EventKind.ENTER, T0)]  # confirmed by the 4th fix (1800 s >= 1500 s)


def test_more_confirmations():
    assert run([IN, IN], side=Side.OUTSIDE, confirmations=3) == []
    assert len(run([IN, IN, IN], side=Side.OUTSIDE, confirmations=3)) == 1
