"""Rolling-key accessories (AirTags): which of their keys to ask Apple for, and how many.

An accessory's primary key rolls over every 15 minutes (its index counts from pairing) and
its secondary key once a day; findmy derives both from the master key. Apple files every
report under the key that was current when it was made, so a fetch asks for the keys of
every index since the previous fetch (plus an overlap for reports uploaded late), newest
first, within the request's key budget. The accessory's alignment (the newest index seen in
a report, and when) is updated from what comes back and saved with its key material.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

from findmy import FindMyAccessory, KeyPair
from findmy.keys import KeyPairType

INTERVAL = dt.timedelta(minutes=15)
# Reports reach Apple minutes to hours after they were made: ask again for the last hour.
OVERLAP = dt.timedelta(hours=1)
RETENTION = dt.timedelta(days=7)  # Apple keeps nothing older
SECONDARY_KEYS = 3  # at most this many distinct secondary keys in a window under a day
# An accessory's clock may run a little slow: the index at a moment is at most the one its
# alignment predicts, and a few below it are asked for too.
DRIFT_MARGIN = 2


def identity(master_key: bytes) -> str:
    """A stable id for an accessory (it has no single lookup id): a hash of its master key."""
    return base64.b64encode(hashlib.sha256(b"accessory" + master_key).digest()).decode()


def primary_key(accessory: FindMyAccessory, index: int) -> KeyPair:
    """The primary key of one 15-minute index."""
    return next(k for k in accessory.keys_at(index) if k.key_type == KeyPairType.PRIMARY)


def index_at(accessory: FindMyAccessory, moment: dt.datetime) -> int:
    """The index the accessory had at `moment` if its clock kept time since its alignment
    (the newest index seen in a report, and when).

    findmy's get_max_index answers the alignment index itself for any moment before the
    alignment date (an upper bound), which would shrink a window that starts before the
    newest report to nothing: late uploads and a catch-up need the indices before it too.
    """
    date = accessory._alignment_date  # findmy keeps the alignment private; to_json() has it
    index = accessory._alignment_index
    return max(index + math.floor((moment - date) / INTERVAL), 0)


def estimated_keys(
    last_processed_at: dt.datetime | None,
    now: dt.datetime,
    cap: int,
    catching_up: bool = False,
) -> int:
    """Keys an accessory needs in its next request, without its key material at hand.

    The claim uses it to pack accessories and static keys into requests of at most `cap`
    keys. A never-fetched accessory, or one catching up on a window larger than a request,
    takes a whole request; it is asked for again, newest first, until its window is done.
    """
    if last_processed_at is None or catching_up:
        return cap
    span = max(now - last_processed_at, dt.timedelta()) + OVERLAP
    return min(cap, math.ceil(span / INTERVAL) + 1 + DRIFT_MARGIN + SECONDARY_KEYS)


@dataclass
class KeyPlan:
    """The lookup ids to send for one accessory, and how to read what comes back."""

    primary: list[str] = field(default_factory=list)
    secondary: list[str] = field(default_factory=list)
    keys: dict[str, tuple[KeyPair, int]] = field(default_factory=dict)  # id -> key, newest index
    oldest_index: int | None = None  # the oldest index whose primary key is asked for
    complete: bool = False  # every index of the window is asked for

    def __len__(self) -> int:
        return len(self.primary) + len(self.secondary)


def load(material: dict[str, Any]) -> FindMyAccessory:
    """The accessory from its saved JSON; ValueError if it is not one."""
    try:
        return FindMyAccessory.from_json(material)  # type: ignore[arg-type]
    except (KeyError, ValueError, TypeError, AssertionError) as exc:
        raise ValueError(f"unusable accessory key material: {exc!r}") from None


def plan_keys(
    accessory: FindMyAccessory,
    since: dt.datetime | None,
    now: dt.datetime,
    budget: int,
    newest_index: int | None = None,
) -> KeyPlan:
    """The keys of the indices from `newest_index` (default: the index at `now`) down to the
    start of the window (`since` less the overlap, or Apple's 7 days for a never-fetched
    accessory), newest first, until `budget` keys are taken. Secondary keys count against
    the budget too. `complete` says whether the window's oldest index was reached; if not,
    the caller asks again from `oldest_index - 1` (a catch-up over several requests).

    Indices come from the saved alignment (index_at): the newest is the one the accessory
    reaches at `now` if its clock kept time since it was last seen, the oldest the one it
    had at the start of the window, less a small margin for drift.
    """
    oldest = now - RETENTION if since is None else max(since - OVERLAP, now - RETENTION)
    if newest_index is None:
        newest_index = index_at(accessory, now)
    window_start = max(index_at(accessory, oldest) - DRIFT_MARGIN, 0)
    plan = KeyPlan()
    for index in range(newest_index, window_start - 1, -1):
        # The primary key first: with a budget of one, the current primary key is asked for.
        # An index counts as asked for once its primary key is: reports are filed under it
        # (secondary keys are shared by many indices and asked for as the budget allows).
        keys = sorted(accessory.keys_at(index), key=lambda k: k.key_type != KeyPairType.PRIMARY)
        for key in keys:
            hashed_id = key.hashed_adv_key_b64
            if hashed_id in plan.keys:
                continue
            if len(plan) >= budget:
                plan.complete = plan.oldest_index == window_start
                return plan
            plan.keys[hashed_id] = (key, index)
            if key.key_type == KeyPairType.PRIMARY:
                plan.primary.append(hashed_id)
                plan.oldest_index = index
            else:
                plan.secondary.append(hashed_id)
    plan.complete = True
    return plan
